"""tap-datatree: replay one day's partitions of the data tree as Singer SCHEMA + BATCH messages."""

"""tap-pgcopy: every table of a PostgreSQL schema as Parquet files, handed over as Singer BATCH."""

"""target-datatree: publish Singer streams (RECORD or Parquet BATCH) as dated Parquet partitions."""

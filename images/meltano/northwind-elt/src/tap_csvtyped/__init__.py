"""tap-csvtyped: CSV files typed and validated by a declared schema, handed over as Parquet BATCH."""

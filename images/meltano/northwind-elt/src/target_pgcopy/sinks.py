"""The sink of target-pgcopy: COPY one stream's rows into its snapshot table."""

import typing as t

import pyarrow.parquet as pq
from northwind_elt.arrow_io import records_to_batch
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import columns_of
from northwind_elt.step_target import StepSink
from singer_sdk.helpers._batch import BaseBatchFileEncoding


class SnapshotSink(StepSink):
    """Replace one day's snapshot of one table."""

    def setup(self) -> None:
        """Create or evolve the snapshot table and start the day's fresh table (same transaction)."""
        super().setup()
        self.columns = self.schema_columns()
        self.owner.prepare_stream(self.stream_name, self.columns, list(self.key_properties or []))

    def process_batch(self, context: dict) -> None:
        """COPY buffered RECORD messages (stock taps)."""
        records = context.get("records", [])
        if records:
            self.owner.copy_batch(self.stream_name, records_to_batch(records, self.columns))

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> None:
        """COPY Parquet partitions, checking their columns match the SCHEMA message."""
        expected = [(c.name, c.sql_type) for c in self.columns]
        for path in self.batch_file_paths(encoding, files):
            found = [(c.name, c.sql_type) for c in columns_of(pq.read_schema(path))]
            if found != expected:
                raise InputError(f"stream {self.stream_name}: {path} has columns {found}, its "
                                 f"SCHEMA says {expected}")
            self.owner.copy_file(self.stream_name, path)

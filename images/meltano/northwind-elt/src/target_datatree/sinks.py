"""The sink of target-datatree: feeds one stream into its staged partition."""

import typing as t

from northwind_elt.arrow_io import records_to_batch
from northwind_elt.step_target import StepSink
from singer_sdk.helpers._batch import BaseBatchFileEncoding


class PartitionSink(StepSink):
    """Collect a stream's rows into a Parquet file in the run's staging folder."""

    def setup(self) -> None:
        """Stage a partition for the stream, typed from its SCHEMA message."""
        super().setup()
        self.staged = self.owner.stage(self.stream_name, self.schema_columns(),
                                       list(self.key_properties or []), self.schema)

    def process_batch(self, context: dict) -> None:
        """Write the buffered RECORD messages."""
        records = context.get("records", [])
        if records:
            self.staged.append(records_to_batch(records, self.staged.columns))

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> None:
        """Take the tap's Parquet files (our taps write exactly the partition we publish)."""
        for path in self.batch_file_paths(encoding, files):
            self.staged.take_file(path)

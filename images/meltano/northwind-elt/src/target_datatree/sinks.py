"""The sink of target-datatree: feeds one stream into its staged partition."""

import typing as t
from pathlib import Path
from urllib.parse import unquote, urlparse

from northwind_elt.arrow_io import records_to_batch
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column
from singer_sdk.helpers._batch import BaseBatchFileEncoding
from singer_sdk.sinks import BatchSink

if t.TYPE_CHECKING:
    from target_datatree.target import TargetDataTree


class PartitionSink(BatchSink):
    """Collect a stream's rows into a Parquet file in the run's staging folder."""

    #: RECORD messages are converted to Arrow in batches of this many rows.
    MAX_SIZE_DEFAULT = 50_000

    def __init__(self, target: "TargetDataTree", *args, **kwargs):
        self.owner = target
        super().__init__(target, *args, **kwargs)

    def setup(self) -> None:
        """Stage a partition for the stream, typed from its SCHEMA message."""
        super().setup()
        columns = [Column.from_json_schema(name, prop)
                   for name, prop in self.schema.get("properties", {}).items()]
        self.staged = self.owner.stage(self.stream_name, columns, list(self.key_properties or []),
                                   self.schema)

    def process_batch(self, context: dict) -> None:
        """Write the buffered RECORD messages."""
        records = context.get("records", [])
        if records:
            self.staged.append(records_to_batch(records, self.staged.columns))

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> None:
        """Take the tap's Parquet files (our taps write exactly the partition we publish)."""
        if encoding.format != "parquet":
            raise InputError(f"stream {self.stream_name}: BATCH format {encoding.format!r} is not "
                             "supported (use parquet)")
        for url in files:
            parsed = urlparse(url)
            if parsed.scheme != "file":
                raise InputError(f"stream {self.stream_name}: batch file {url} is not a file:// URL")
            path = Path(unquote(parsed.path))  # as_uri() quoted the %-encoded segments
            self.owner.batch_folders.add(path.parent)
            self.staged.take_file(path)

"""The sink of target-pgcopy: COPY one stream's rows into its snapshot table."""

import typing as t
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
from northwind_elt.arrow_io import records_to_batch
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, columns_of
from singer_sdk.helpers._batch import BaseBatchFileEncoding
from singer_sdk.sinks import BatchSink

if t.TYPE_CHECKING:
    from target_pgcopy.target import TargetPgCopy


class SnapshotSink(BatchSink):
    """Replace one day's snapshot of one table."""

    MAX_SIZE_DEFAULT = 50_000

    def __init__(self, target: "TargetPgCopy", *args, **kwargs):
        self.owner = target
        super().__init__(target, *args, **kwargs)

    def setup(self) -> None:
        """Create or evolve the snapshot table and clear the day's rows (same transaction)."""
        super().setup()
        self.columns = [Column.from_json_schema(name, prop)
                        for name, prop in self.schema.get("properties", {}).items()]
        self.owner.prepare_stream(self.stream_name, self.columns, list(self.key_properties or []))

    def process_batch(self, context: dict) -> None:
        """COPY buffered RECORD messages (stock taps)."""
        records = context.get("records", [])
        if records:
            self.owner.copy_batch(self.stream_name, self.columns,
                                  records_to_batch(records, self.columns))

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> None:
        """COPY Parquet partitions, checking their columns match the SCHEMA message."""
        if encoding.format != "parquet":
            raise InputError(f"stream {self.stream_name}: BATCH format {encoding.format!r} is not "
                             "supported (use parquet)")
        for url in files:
            parsed = urlparse(url)
            if parsed.scheme != "file":
                raise InputError(f"stream {self.stream_name}: {url} is not a file:// URL")
            path = Path(unquote(parsed.path))  # as_uri() quoted the %-encoded segments
            found = columns_of(pq.read_schema(path))
            if [(c.name, c.sql_type) for c in found] != [(c.name, c.sql_type) for c in self.columns]:
                raise InputError(f"stream {self.stream_name}: {path} has columns "
                                 f"{[(c.name, c.sql_type) for c in found]}, its SCHEMA says "
                                 f"{[(c.name, c.sql_type) for c in self.columns]}")
            self.owner.copy_file(self.stream_name, self.columns, path)

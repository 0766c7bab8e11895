"""A partition being built in the staging folder: adopted from a tap's file, or written here."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from northwind_elt.arrow_io import PARQUET_COMPRESSION
from northwind_elt.errors import InputError
from northwind_elt.layout import path_segment
from northwind_elt.pgtypes import Column, arrow_schema, columns_of


class StagedPartition:
    """One stream's Parquet file under construction in ``folder``."""

    def __init__(self, folder: Path, stream: str, columns: list[Column], key_properties: list[str]):
        self.stream = stream
        self.columns = columns
        self.key_properties = key_properties
        self.path = folder / f"{path_segment(stream)}.parquet"
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._adopted = False

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the partition."""
        return arrow_schema(self.columns)

    def append(self, batch: pa.RecordBatch) -> None:
        """Add rows written by this process (e.g. from RECORD messages)."""
        self._open_writer().write_batch(batch)
        self.rows += batch.num_rows

    def take_file(self, path: Path) -> None:
        """Add the rows of a tap's Parquet file; the first file of a stream is moved, not copied."""
        schema = pq.read_schema(path)
        if schema.names != [c.name for c in self.columns]:
            raise InputError(f"stream {self.stream}: batch file {path} has columns {schema.names}, "
                             f"its SCHEMA message says {[c.name for c in self.columns]}")
        rows = pq.read_metadata(path).num_rows
        if self._writer is None and not self._adopted and self.rows == 0:
            # Fast path: the tap already wrote the exact file we want; a rename publishes it.
            self.columns = columns_of(schema)
            os.replace(path, self.path)
            self._adopted = True
            self.rows = rows
            return
        for batch in pq.ParquetFile(path).iter_batches():
            self.append(batch.cast(self.schema))
        path.unlink()

    def _open_writer(self) -> pq.ParquetWriter:
        if self._writer is None:
            if self._adopted:
                # A second file arrived after an adopted one: rewrite both into one file.
                first = self.path.with_suffix(".first.parquet")
                os.replace(self.path, first)
                self._writer = pq.ParquetWriter(self.path, self.schema,
                                                compression=PARQUET_COMPRESSION)
                for batch in pq.ParquetFile(first).iter_batches():
                    self._writer.write_batch(batch)
                first.unlink()
                self._adopted = False
            else:
                self._writer = pq.ParquetWriter(self.path, self.schema,
                                                compression=PARQUET_COMPRESSION)
        return self._writer

    def close(self) -> None:
        """Finish the file; a stream without rows still gets a file with its schema."""
        if self._adopted:
            return
        self._open_writer().close()


"""One stream per source table, read with COPY into a Parquet batch file."""

import typing as t
from pathlib import Path
from urllib.parse import urlparse

from psycopg import sql
from singer_sdk import Stream
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig

from northwind_elt.arrow_io import copy_query_to_parquet
from northwind_elt.errors import SettingError
from northwind_elt.layout import path_segment
from tap_pgcopy.catalog import Table

if t.TYPE_CHECKING:
    from tap_pgcopy.tap import TapPgCopy


def staging_folder(batch_config: BatchConfig) -> Path:
    """The local folder of ``batch_config.storage.root`` (only ``file://`` is supported)."""
    parsed = urlparse(batch_config.storage.root)
    if parsed.scheme != "file" or not parsed.path:
        raise SettingError(
            f"batch_config.storage.root must be a file:// URL, got {batch_config.storage.root!r}"
        )
    return Path(parsed.path)


class TableStream(Stream):
    """A whole table, copied out as one Parquet file per run (full-table snapshot)."""

    def __init__(self, tap: "TapPgCopy", table: Table):
        self.table = table
        schema = {
            "type": "object",
            "properties": {c.name: c.json_schema() for c in table.columns},
        }
        super().__init__(tap, schema=schema, name=table.name)
        self.primary_keys = list(table.primary_key)
        self.rows_written = 0

    def copy_statement(self) -> sql.Composed:
        """``COPY (SELECT <columns> FROM <schema>.<table>) TO STDOUT (FORMAT csv)``, quoted."""
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in self.table.columns)
        return sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT (FORMAT csv)").format(
            columns, sql.Identifier(self.table.schema), sql.Identifier(self.table.name)
        )

    def get_records(self, context: dict | None) -> t.Iterable[dict]:
        """Refuse record mode: this tap only hands over Parquet batches."""
        raise SettingError("tap-pgcopy needs batch_config (it hands over Parquet batch files)")

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Copy the table into one Parquet file in the staging folder and yield its URL."""
        tap = t.cast("TapPgCopy", self._tap)
        folder = staging_folder(batch_config) / f"tap-pgcopy-{tap.run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        destination = folder / f"{path_segment(self.name)}.parquet"
        with tap.snapshot.cursor() as cursor:
            self.rows_written = copy_query_to_parquet(
                cursor, self.copy_statement(), list(self.table.columns), destination,
                where=f"table {self.table.schema}.{self.table.name}",
            )
        tap.report_progress(self.name, self.rows_written)
        yield batch_config.encoding, [destination.as_uri()]

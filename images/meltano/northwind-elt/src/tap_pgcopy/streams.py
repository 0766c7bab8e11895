"""One stream per source table, read with COPY into a Parquet batch file."""

import typing as t

from northwind_elt.arrow_io import copy_query_to_parquet, throttled_progress
from northwind_elt.step_tap import BatchStream
from psycopg import sql
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig

from tap_pgcopy.catalog import Table

if t.TYPE_CHECKING:
    from tap_pgcopy.tap import TapPgCopy


class TableStream(BatchStream):
    """A whole table, copied out as one Parquet file per run (full-table snapshot)."""

    def __init__(self, tap: "TapPgCopy", table: Table):
        self.table = table
        schema = {
            "type": "object",
            "properties": {c.name: c.json_schema() for c in table.columns},
        }
        super().__init__(tap, schema=schema, name=table.name)
        self.primary_keys = list(table.primary_key)

    def copy_statement(self) -> sql.Composed:
        """``COPY (SELECT <columns> FROM <schema>.<table>) TO STDOUT (FORMAT csv)``, quoted."""
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in self.table.columns)
        return sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT (FORMAT csv)").format(
            columns, sql.Identifier(self.table.schema), sql.Identifier(self.table.name)
        )

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Copy the table into one Parquet file in the staging folder and yield its URL."""
        tap = t.cast("TapPgCopy", self._tap)
        destination = self.batch_file(batch_config)
        with tap.snapshot.cursor() as cursor:
            self.rows_written = copy_query_to_parquet(
                cursor, self.copy_statement(), list(self.table.columns), destination,
                where=f"table {self.table.schema}.{self.table.name}",
                progress=throttled_progress(self.logger.info, f"extracting {self.name}"),
            )
        tap.report_progress(self.name, self.rows_written)
        yield batch_config.encoding, [destination.as_uri()]

"""One stream per source table, read with ``COPY (FORMAT binary)`` into a Parquet batch file.

Values travel in PostgreSQL's binary format and are decoded into Arrow by ADBC's C++ driver, in
batches of bounded size. Columns without an exact Arrow twin (``numeric``, ``uuid``, ``jsonb``,
arrays, enums, ``interval``, ...) are selected as ``::text``, the form the loader hands back to
PostgreSQL; constrained ``numeric`` is then cast to ``decimal128`` exactly.

Special values: ``NaN`` of a ``numeric(p,s)``, ``±infinity``, BC dates and timestamps (and
timestamps past Arrow's year 294247) have no value in the column's native Arrow type. They are
found while reading (a failing decimal cast; one range flag selected beside the row, true where a
date or timestamp column is out of range), and then the table is read again with every column that
holds one as text, this day only. Tables without such values are read once, as before.

A table is read in page ranges on several connections (:mod:`tap_pgcopy.parallel`); this module
says what a range's query and batches are.
"""

import typing as t

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
from northwind_elt import pgconn
from northwind_elt.arrow_io import throttled_progress
from northwind_elt.pgtypes import Column, arrow_schema
from northwind_elt.step_tap import BatchStream
from psycopg import sql
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
from singer_sdk.singerlib import SchemaMessage

from tap_pgcopy.catalog import Table
from tap_pgcopy.parallel import NeedsText, TableJob, range_query
from tap_pgcopy.ranges import PageRange, Size

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
        super().__init__(tap, schema=schema, name=table.stream_name)
        self.primary_keys = list(table.primary_key)

    @property
    def selected_columns(self) -> list[Column]:
        """The columns selected in the catalog (``meltano select``); all of them by default.

        A column the catalog does not know (added at the source since discovery) is selected.
        """
        return [c for c in self.table.columns if self.mask.get(("properties", c.name), True)]

    def _generate_schema_messages(self) -> t.Iterator[SchemaMessage]:
        """The SCHEMA of the selected columns: the Parquet file holds exactly those."""
        properties = self.schema["properties"]
        schema = {**self.schema, "properties": {c.name: properties[c.name]
                                                for c in self.selected_columns}}
        yield SchemaMessage(self.name, schema, self.primary_keys, None)

    @property
    def source_table(self) -> sql.Composed:
        """``"<schema>"."<table>"``."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.table.schema),
                                       sql.Identifier(self.table.name))

    def job(self, columns: list[Column], ranges: list[PageRange], size: Size,
            batch_config: BatchConfig) -> TableJob:
        """The work of extracting ``columns`` of the table, range by range, into its batch file."""
        flagged = [c for c in columns if _flag(c) is not None]
        select = select_statement(self.source_table, columns, flagged)
        schema = arrow_schema(columns)
        return TableJob(
            stream=self.name, where=f"table {self.table.schema}.{self.table.name}",
            query=lambda page_range: range_query(select, page_range.condition()),
            columns=columns, convert=lambda batch: convert_batch(batch, schema),
            ranges=ranges, destination=self.batch_file(batch_config),
            progress=throttled_progress(self.logger.info, f"extracting {self.name}"), size=size,
            lock=sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT").format(
                self.source_table).as_string() if size.lockable else None)

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Wait for the table's Parquet file (the tap reads every table in parallel), yield its URL.

        A table holding a value without a native Parquet form is read again (in parallel too),
        each column holding one as text.
        """
        tap = t.cast("TapPgCopy", self._tap)
        job = tap.extraction.jobs[self.name]
        try:
            self.rows_written = tap.extraction.wait(job)
        except NeedsText:
            columns = tap.extraction.call(
                lambda conn: self._with_special_values_as_text(conn, job.columns))
            self.logger.info("%s: columns %s hold values without a native Parquet form (NaN, "
                             "infinity, BC): stored as PostgreSQL text", self.name,
                             ", ".join(c.name for c in columns if c.text_form))
            again = self.job(columns, job.ranges, job.size, batch_config)
            tap.extraction.submit([again])
            self.rows_written = tap.extraction.wait(again)
        tap.report_progress(self.name, self.rows_written)
        yield batch_config.encoding, [job.destination.as_uri()]

    def _with_special_values_as_text(self, conn, columns: list[Column]) -> list[Column]:
        """The columns, those holding a special value anywhere in the table as text."""
        candidates = [c for c in columns if _special(c) is not None]
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("coalesce(bool_or({}), false)").format(_special(c))
                               for c in candidates), self.source_table)
        cursor = conn.cursor()
        try:
            cursor.execute(query.as_string())
            found = cursor.fetchone()
        except adbc_driver_manager.Error as error:
            raise pgconn.read_failure(error, f"table {self.table.qualified}") from None
        finally:
            cursor.close()
        special = {c.name for c, holds in zip(candidates, found, strict=True) if holds}
        return [c.as_text() if c.name in special else c for c in columns]


#: Types ADBC already decodes into the Arrow type :mod:`northwind_elt.pgtypes` stores.
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
#: The values each native date and time type holds (Arrow's timestamp[us] ends in year 294247;
#: BC years have no ISO form COPY reads back, nor a value in most readers' date types).
_NATIVE_RANGE = {
    "date": ("0001-01-01", "infinity"),
    "timestamp": ("0001-01-01", "294247-01-01"),
    "timestamptz": ("0001-01-01 00:00:00+00", "294247-01-01 00:00:00+00"),
}
#: PostgreSQL's text of the numeric values a decimal128 cannot hold.
_NUMERIC_SPECIALS = ("NaN", "Infinity", "-Infinity")


def _in_range(column: Column) -> sql.Composable | None:
    """True where a native date or time column's value is in its Arrow type's range (NULL: NULL)."""
    if column.text_form or column.type_name not in _NATIVE_RANGE:
        return None
    low, high = _NATIVE_RANGE[column.type_name]
    name, kind = sql.Identifier(column.name), sql.SQL(column.type_name)
    return sql.SQL("{} >= {}::{} AND {} < {}::{}").format(
        name, sql.Literal(low), kind, name, sql.Literal(high), kind)


def _flag(column: Column) -> sql.Composable | None:
    """True where a native date or time column's value is out of its Arrow type's range."""
    in_range = _in_range(column)
    return None if in_range is None else sql.SQL("NOT ({})").format(in_range)


def _special(column: Column) -> sql.Composable | None:
    """True where a natively stored column holds a value its Arrow type cannot."""
    if not column.text_form and pa.types.is_decimal(column.arrow_type):
        return sql.SQL("{}::text IN ({})").format(
            sql.Identifier(column.name),
            sql.SQL(", ").join(sql.Literal(v) for v in _NUMERIC_SPECIALS))
    return _flag(column)


def _select_item(column: Column) -> sql.Composable:
    name = sql.Identifier(column.name)
    if column.type_name in ("money", "_money"):
        # money's text depends on lc_monetary; numeric's is the same everywhere and money reads it.
        cast = "numeric[]" if column.type_name == "_money" else "numeric"
        return sql.SQL("{}::{}::text AS {}").format(name, sql.SQL(cast), name)
    native = not pa.types.is_string(column.arrow_type) or column.type_name in _TEXT_TYPES
    if native and not pa.types.is_decimal(column.arrow_type):
        return name
    return sql.SQL("{}::text AS {}").format(name, name)


def select_statement(table: sql.Composable, columns: list[Column], flagged: list[Column]
                     ) -> sql.Composed:
    """``SELECT <columns>[, <flag>] FROM <table>``, quoted, non-native columns as text.

    With native date or timestamp columns (``flagged``), one range flag follows: true where any
    of them is out of range (``infinity`` or a BC value has no native Arrow value, and without
    the flag it would arrive as a wrong one). One flag for all costs the server half of what a
    flag per column does (fewer values to send); which columns hold one is found afterwards.
    """
    items = [_select_item(c) for c in columns]
    if flagged:  # NULL AND true is NULL (no flag); NULL AND false is false (a flag)
        items.append(sql.SQL("NOT ({})").format(
            sql.SQL(" AND ").join(sql.SQL("({})").format(_in_range(c)) for c in flagged)))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), table)


def convert_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch of a range's query as a batch of the Parquet ``schema`` (its columns first).

    The query selects the schema's columns, then the row's range flag if it has flagged columns.

    Raises:
        NeedsText: If a natively stored column holds a value its Arrow type cannot.
    """
    width = len(schema)
    if any(pc.any(flag).as_py() for flag in batch.columns[width:]):
        raise NeedsText()
    arrays = [array if array.type == target.type else _cast(array, target.type)
              for array, target in zip(batch.columns[:width], schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _cast(array: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """Cast text to a decimal; NaN (the one value of numeric(p,s) decimal128 lacks) fails it."""
    try:
        return array.cast(arrow_type)
    except pa.ArrowInvalid:
        if pa.types.is_decimal(arrow_type) and pc.any(pc.is_in(array, pa.array(
                _NUMERIC_SPECIALS))).as_py():
            raise NeedsText() from None
        raise

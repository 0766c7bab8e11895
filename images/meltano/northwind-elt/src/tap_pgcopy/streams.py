"""One stream per source table, read with ``COPY (FORMAT binary)`` into a Parquet batch file.

Values travel in PostgreSQL's binary format and are decoded into Arrow by ADBC's C++ driver, in
batches of bounded size. Columns without an exact Arrow twin (``numeric``, ``uuid``, ``jsonb``,
arrays, enums, ``interval``, ...) are selected as ``::text``, the form the loader hands back to
PostgreSQL; constrained ``numeric`` is then cast to ``decimal128`` exactly.
"""

import typing as t
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from northwind_elt.arrow_io import PARQUET_COMPRESSION, throttled_progress
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, arrow_schema
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

    def select_statement(self) -> sql.Composed:
        """``SELECT <columns> FROM <schema>.<table>``, quoted, non-native columns as text.

        Each date or timestamp column also gets a ``NOT isfinite()`` flag: ``infinity`` has no
        Arrow date or timestamp, and without the flag it would arrive as a wrong value.
        """
        items = [_select_item(c) for c in self.table.columns]
        items += [sql.SQL("NOT isfinite({})").format(sql.Identifier(c.name))
                  for c in self.infinity_checked]
        return sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(items), sql.Identifier(self.table.schema),
            sql.Identifier(self.table.name)
        )

    @property
    def infinity_checked(self) -> list[Column]:
        """The columns that can hold ``infinity`` and are stored as native Arrow dates or times."""
        return [c for c in self.table.columns if c.type_name in _INFINITY_TYPES]

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Copy the table into one Parquet file in the staging folder and yield its URL."""
        tap = t.cast("TapPgCopy", self._tap)
        destination = self.batch_file(batch_config)
        where = f"table {self.table.schema}.{self.table.name}"
        self.rows_written = write_parquet(
            tap.data.cursor(), self.select_statement().as_string(), list(self.table.columns),
            self.infinity_checked, destination, where,
            throttled_progress(self.logger.info, f"extracting {self.name}"),
        )
        tap.report_progress(self.name, self.rows_written)
        yield batch_config.encoding, [destination.as_uri()]


#: Types ADBC already decodes into the Arrow type :mod:`northwind_elt.pgtypes` stores.
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
#: Native types whose PostgreSQL values include ``infinity``.
_INFINITY_TYPES = frozenset({"date", "timestamp", "timestamptz"})


def _select_item(column: Column) -> sql.Composable:
    name = sql.Identifier(column.name)
    native = not pa.types.is_string(column.arrow_type) or column.type_name in _TEXT_TYPES
    if native and not pa.types.is_decimal(column.arrow_type):
        return name
    return sql.SQL("{}::text AS {}").format(name, name)


def write_parquet(cursor, query: str, columns: list[Column], flagged: list[Column], destination,
                  where: str, progress) -> int:
    """Stream ``query``'s rows into a Parquet file of the columns' schema; return the row count.

    The query selects ``columns`` then one ``NOT isfinite()`` flag per column of ``flagged``.
    """
    schema = arrow_schema(columns)
    rows = 0
    try:
        cursor.execute(query)
        reader = cursor.fetch_record_batch()
        with pq.ParquetWriter(destination, schema, compression=PARQUET_COMPRESSION) as writer, \
                ThreadPoolExecutor(max_workers=1) as background:
            # Encode and compress batch N in the background while batch N+1 is read.
            pending = None
            for batch in reader:
                for column, flag in zip(flagged, batch.columns[len(columns):], strict=True):
                    if pc.any(flag).as_py():
                        line = rows + pc.index(flag, True).as_py() + 1
                        raise InputError(f"{where}, column {column.name}: row {line} holds "
                                         f"infinity, which a Parquet {column.sql_type} cannot "
                                         "represent; nothing was published")
                arrays = [array if array.type == field.type else array.cast(field.type)
                          for array, field in zip(batch.columns[:len(columns)], schema, strict=True)]
                if pending is not None:
                    pending.result()
                pending = background.submit(writer.write_batch,
                                            pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
                progress(rows)
            if pending is not None:
                pending.result()
    except (adbc_driver_manager.Error, pa.ArrowInvalid) as error:
        raise InputError(f"{where}: {str(error).splitlines()[0]}") from None
    finally:
        cursor.close()
    return rows

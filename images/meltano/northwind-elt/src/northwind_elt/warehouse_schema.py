"""Type changes between a day's partition and its snapshot table, and older days widened on load.

A snapshot table's column only ever widens (every value of the old type fits the new one unchanged):

- the day's type is wider than the warehouse's: the table is altered (``ALTER TABLE``);
- the day is older than the newest loaded day and its type is narrower: the day's values are
  widened on their way in (cast by Arrow to the stored type, then copied as that type: binary COPY
  of an ``int4`` into an ``int8`` column would misread the bytes);
- anything else (a narrowing for the newest day, an unrelated type) is refused, naming the table
  and every such column with both types.
"""

import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from northwind_elt.arrow_io import LOAD_BATCH_ROWS, ProgressCallback, copy_chunks, prefetched
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column

_INTEGER_WIDTH = {"smallint": 1, "integer": 2, "bigint": 3}
_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(\d+)\))?")


def is_widening(old: str, new: str) -> bool:
    """Whether every value of type ``old`` fits type ``new`` unchanged (both as ``format_type()``).

    Example:
        >>> is_widening("integer", "bigint"), is_widening("numeric(10,2)", "numeric(12,2)")
        (True, True)
        >>> is_widening("character varying(80)", "character varying(40)")
        False
    """
    if old in _INTEGER_WIDTH and new in _INTEGER_WIDTH:
        return _INTEGER_WIDTH[new] > _INTEGER_WIDTH[old]
    if (was := _VARCHAR.fullmatch(old)) and (new == "text" or (now := _VARCHAR.fullmatch(new))):
        return new == "text" or not now.group(1) or bool(
            was.group(1) and int(now.group(1)) > int(was.group(1)))
    if (was := _NUMERIC.fullmatch(old)) and (now := _NUMERIC.fullmatch(new)):
        if not now.group(1):
            return was.group(1) is not None
        if not was.group(1):
            return False
        (p1, s1), (p2, s2) = map(int, was.groups()), map(int, now.groups())
        return s2 >= s1 and p2 - s2 >= p1 - s1 and (p2, s2) != (p1, s1)
    return old == "real" and new == "double precision"


@dataclasses.dataclass
class TypePlan:
    """What a day's columns need: columns of the table to widen, columns of the day to widen."""

    #: The day's columns whose (wider) type the snapshot table takes.
    widen_table: list[Column]
    #: Column name -> the stored type an older, narrower day's values are widened to.
    widen_day: dict[str, str]


def plan_types(existing: dict[str, str], table: str, columns: list[Column], older: bool
               ) -> TypePlan:
    """Compare the day's columns with the table's (``existing``: name -> ``format_type()``).

    Args:
        existing: The snapshot table's columns, empty when it does not exist yet.
        table: The table (for the message).
        columns: The day's columns.
        older: Whether the day is older than the newest loaded day.

    Raises:
        InputError: naming the table and every column whose change is neither kind of widening.
    """
    plan = TypePlan([], {})
    refused = []
    for column in columns:
        found = existing.get(column.name)
        if found is None or found == column.sql_type:
            continue
        if is_widening(found, column.sql_type):
            plan.widen_table.append(column)
        elif older and is_widening(column.sql_type, found):
            plan.widen_day[column.name] = found
        else:
            refused.append(f"column {column.name}: the warehouse has type {found}, the partition "
                           f"has {column.sql_type}")
    if refused:
        raise InputError(f"table {table}, " + "; ".join(refused) + ": only widening type "
                         "changes are applied (a narrower type only for a day older than the "
                         f"newest loaded one), this needs a migration of snapshots.{table}")
    return plan


def stored_columns(columns: list[Column], widen_day: dict[str, str],
                   stored: dict[str, tuple[str, str, int]]) -> list[Column]:
    """The day's columns as the snapshot table stores them (``stored``: name -> type, typname, mod)."""
    return [dataclasses.replace(c, sql_type=stored[c.name][0], type_name=stored[c.name][1],
                                typmod=stored[c.name][2]) if c.name in widen_day else c
            for c in columns]


def widened(batches: Iterable[pa.RecordBatch], columns: list[Column]) -> Iterator[pa.RecordBatch]:
    """Each batch with its columns cast to ``columns``' Arrow types (exact: only widenings)."""
    for batch in batches:
        arrays = [batch.column(c.name).cast(c.arrow_type) for c in columns]
        yield pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


def copy_widened(cursor: psycopg.Cursor, statement: psycopg.sql.Composable, path: Path,
                 columns: list[Column], progress: ProgressCallback | None = None) -> int:
    """Like :func:`northwind_elt.arrow_io.copy_parquet_into`, each batch widened to ``columns``.

    Returns:
        The number of rows copied.
    """
    rows = 0
    batches = pq.ParquetFile(path).iter_batches(batch_size=LOAD_BATCH_ROWS)
    with cursor.copy(statement) as copy:
        for data, count in prefetched(copy_chunks(widened(batches, columns), columns)):
            copy.write(data)
            rows += count
            if count and progress:
                progress(rows)
    return rows

"""Stamps of the content the history holds for each table and day, so an unchanged day needs no splice.

``northwind.history_stamps`` holds, per table and history day, the stamp of the content the history
holds as that day's state: the SHA-256 of the Parquet file the day's partition was loaded from (the
manifest's, which tap-datatree checks against the file before the load sees it) and the snapshot
table's stored column types (the load converts the file's values to them). Equal stamps: equal
partitions, row for row.

**Invariant.** A stamp S of (t, X) exists only while ``history."t"(X)`` equals the content
stamped S. Only a splice of (t, X) changes the history as of X (a splice of another day moves bounds
at that day only), so every splice of (t, X) records X's new stamp or deletes the old one; a
history that is new or empty (created again, or reset) first loses every stamp of its table; a
widened or added column changes the types, so no later stamp equals one recorded before it.
Retention drops partitions, never history days, so it leaves the stamps right.

**When no splice is needed** (:func:`unchanged`), D being the day loaded with stamp S:

(a) D is a history day already and its recorded stamp is S: the history holds S as of D.
(b) D is new to the history, P is the greatest history day before D and P's stamp is S. A version's
    bounds are history days, none in (P, D]: a version covering P ends after D (or never), so it
    covers D; one covering D starts on a history day <= D, so <= P, and covers P. The history as of
    D is the history as of P, which is S's content, which is D's. Only D's day row and stamp are
    recorded. (A new day equal to the *next* day N would move N's bounds to D: the normal path.)
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg
from psycopg import sql

from northwind_elt.warehouse_layout import LOG_SCHEMA, SNAPSHOT_DATE, stored_types

#: ``northwind.history_stamps``: the stamp of each (table, history day) spliced with a file.
STAMPS_TABLE = "history_stamps"


def stamps_table() -> sql.Composed:
    """``northwind.history_stamps``."""
    return sql.SQL("{}.{}").format(sql.Identifier(LOG_SCHEMA), sql.Identifier(STAMPS_TABLE))


def ensure_stamps(cur: psycopg.Cursor) -> None:
    """Create the stamps' table (the load's role owns it; readers get SELECT by default)."""
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (table_name text NOT NULL, snapshot_date date NOT NULL, "
        "file_sha256 text NOT NULL, column_types text NOT NULL, "
        "PRIMARY KEY (table_name, snapshot_date))").format(stamps_table()))


def day_stamp(cur: psycopg.Cursor, table: str, sha256: str | None) -> tuple[str, str] | None:
    """The stamp of ``table``'s partition loaded from a file of checksum ``sha256`` (None: none)."""
    if not sha256:
        return None
    types = [[n, t[0]] for n, t in stored_types(cur, table).items() if n != SNAPSHOT_DATE]
    return sha256, json.dumps(types, separators=(",", ":"))


def recorded(cur: psycopg.Cursor, table: str, day: dt.date) -> tuple[str, str] | None:
    """The stamp recorded for ``table`` on ``day``, if any."""
    cur.execute(sql.SQL("SELECT file_sha256, column_types FROM {} WHERE table_name = %s "
                        "AND snapshot_date = %s").format(stamps_table()), (table, day))
    row = cur.fetchone()
    return tuple(row) if row else None


def unchanged(cur: psycopg.Cursor, table: str, day: dt.date, stamp: tuple[str, str] | None,
              previous: dt.date | None, new_day: bool) -> bool:
    """Whether the history of ``table`` already holds ``day``'s content (cases (a) and (b)).

    ``previous``: the greatest history day before ``day`` (None: none); ``new_day``: ``day`` was
    not a history day before this load.
    """
    if stamp is None:
        return False
    if not new_day:
        return recorded(cur, table, day) == stamp
    return previous is not None and recorded(cur, table, previous) == stamp


def record(cur: psycopg.Cursor, table: str, day: dt.date, stamp: tuple[str, str] | None) -> None:
    """After a splice of ``table`` on ``day``: record its stamp, or forget the old one (None)."""
    if stamp is None:
        cur.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s AND snapshot_date = %s").format(
            stamps_table()), (table, day))
        return
    cur.execute(sql.SQL(
        "INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT (table_name, snapshot_date) DO UPDATE "
        "SET file_sha256 = excluded.file_sha256, column_types = excluded.column_types").format(
        stamps_table()), (table, day, *stamp))


def forget_table(cur: psycopg.Cursor, table: str) -> None:
    """A history started anew (new or empty): none of its table's stamps holds any more."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(stamps_table()), (table,))

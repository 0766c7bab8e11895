"""The warehouse: one snapshot per day per table, and views of the newest day under the plain names.

Layout in the warehouse database::

    snapshots.<table>   the source columns (exact source types) + snapshot_date, key (snapshot_date, pk)
    snapshots._loads    one row per loaded day: when, and the rows per table
    public.<table>      a view of <table> at the newest loaded day

Loading day D replaces D's rows of every table and records D in ``_loads``, in the caller's single
transaction: readers see the whole day or none of it. Views read ``max(snapshot_date)`` of
``_loads``, so loading an older day never changes what users see as current, and a row deleted at
the source is absent from the newest snapshot, so it disappears from the views.
"""

import datetime as dt
import json

import psycopg
from psycopg import sql

from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, check_sql_type
from northwind_elt.warehouse_types import ensure_types

SNAPSHOT_SCHEMA = "snapshots"
CURRENT_SCHEMA = "public"
LOADS_TABLE = "_loads"
SNAPSHOT_DATE = "snapshot_date"
#: Serialises loads: a second load of any day waits for the first to commit.
LOAD_LOCK_KEY = 0x6E6F7274  # "nort"


def begin_load(cur: psycopg.Cursor) -> None:
    """Take the load lock (held until commit or rollback) and create the fixed objects."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOAD_LOCK_KEY,))
    # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
    # schema exists, and the cluster's login role owns the schema made at init, nothing more.
    cur.execute("SELECT to_regnamespace(%s) IS NULL", (SNAPSHOT_SCHEMA,))
    if cur.fetchone()[0]:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SNAPSHOT_SCHEMA)))
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (snapshot_date date PRIMARY KEY, "
        "loaded_at timestamptz NOT NULL DEFAULT now(), rows jsonb NOT NULL)"
    ).format(sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(LOADS_TABLE)))


def snapshot_table(name: str) -> sql.Composed:
    """``snapshots."<name>"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(name))


def existing_columns(cur: psycopg.Cursor, table: str) -> dict[str, str]:
    """The columns of ``snapshots.<table>`` and their ``format_type()``; empty if it does not exist."""
    cur.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (SNAPSHOT_SCHEMA, table),
    )
    return dict(cur.fetchall())


def prepare_table(cur: psycopg.Cursor, table: str, columns: list[Column], keys: list[str]) -> None:
    """Create ``snapshots.<table>`` with the source's exact types, or evolve it to the new columns.

    New columns are added (older snapshots hold NULL there); a column whose type changed is refused,
    naming the table, the column and both types.
    """
    if any(c.name == SNAPSHOT_DATE for c in columns):
        raise InputError(f"table {table}: a source column is named {SNAPSHOT_DATE}, which the "
                         "warehouse reserves for the day of the snapshot")
    ensure_types(cur, table, columns)
    existing = existing_columns(cur, table)
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(c.name),
                                sql.SQL(check_sql_type(c.sql_type, f"{table}.{c.name}")))
        for c in columns
    ]
    if not existing:
        key = sql.SQL(", ").join(sql.Identifier(k) for k in [SNAPSHOT_DATE, *keys])
        cur.execute(sql.SQL("CREATE TABLE {} ({}, {} date NOT NULL, PRIMARY KEY ({}))").format(
            snapshot_table(table), sql.SQL(", ").join(definitions),
            sql.Identifier(SNAPSHOT_DATE), key))
        return
    for column, definition in zip(columns, definitions, strict=True):
        found = existing.get(column.name)
        if found is None:
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(snapshot_table(table),
                                                                       definition))
        elif found != column.sql_type:
            raise InputError(f"table {table}, column {column.name}: the warehouse has type "
                             f"{found}, the partition has {column.sql_type}; a type change needs "
                             "a migration of snapshots." + table)


def delete_day(cur: psycopg.Cursor, table: str, day: dt.date) -> None:
    """Remove ``day``'s rows of ``snapshots.<table>`` (before they are loaded again)."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
        snapshot_table(table), sql.Identifier(SNAPSHOT_DATE)), (day,))


def copy_statement(table: str, columns: list[Column]) -> sql.Composed:
    """``COPY snapshots.<table> (<columns>, snapshot_date) FROM STDIN (FORMAT csv)``."""
    names = sql.SQL(", ").join(sql.Identifier(n) for n in [c.name for c in columns] + [SNAPSHOT_DATE])
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(snapshot_table(table), names)


def snapshot_tables(cur: psycopg.Cursor) -> list[str]:
    """Every snapshot table (not the load log)."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname <> %s
                   ORDER BY c.relname""", (SNAPSHOT_SCHEMA, LOADS_TABLE))
    return [row[0] for row in cur.fetchall()]


def publish_views(cur: psycopg.Cursor) -> None:
    """(Re)create ``public.<table>`` as the newest loaded day of every snapshot table."""
    newest = sql.SQL("(SELECT max(snapshot_date) FROM {}.{})").format(
        sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(LOADS_TABLE))
    for table in snapshot_tables(cur):
        names = [n for n in existing_columns(cur, table) if n != SNAPSHOT_DATE]
        view = sql.SQL("{}.{}").format(sql.Identifier(CURRENT_SCHEMA), sql.Identifier(table))
        cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%%I.%%I', "
                    "%s::text, %s::text))", (CURRENT_SCHEMA, table))
        kind = cur.fetchone()
        if kind and kind[0] != "v":
            raise InputError(f"{CURRENT_SCHEMA}.{table} exists and is not a view: the warehouse "
                             "cannot publish the current snapshot under that name")
        if kind:
            cur.execute(sql.SQL("DROP VIEW {}").format(view))
        cur.execute(sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} WHERE {} = {}").format(
            view, sql.SQL(", ").join(sql.Identifier(n) for n in names), snapshot_table(table),
            sql.Identifier(SNAPSHOT_DATE), newest))


def record_load(cur: psycopg.Cursor, day: dt.date, rows: dict[str, int]) -> None:
    """Record that ``day`` is loaded, with its rows per table."""
    cur.execute(sql.SQL(
        "INSERT INTO {}.{} (snapshot_date, rows) VALUES (%s, %s) ON CONFLICT (snapshot_date) "
        "DO UPDATE SET rows = excluded.rows, loaded_at = now()"
    ).format(sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(LOADS_TABLE)),
        (day, json.dumps(rows, sort_keys=True)))


def loaded_days(cur: psycopg.Cursor) -> dict[dt.date, dict[str, int]]:
    """Every loaded day with its rows per table; empty before the first load."""
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (SNAPSHOT_SCHEMA, LOADS_TABLE))
    if not cur.fetchone()[0]:
        return {}
    cur.execute(sql.SQL("SELECT snapshot_date, rows FROM {}.{} ORDER BY 1").format(
        sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(LOADS_TABLE)))
    return dict(cur.fetchall())

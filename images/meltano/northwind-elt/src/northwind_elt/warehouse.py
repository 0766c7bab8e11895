"""The warehouse: one partition per table and loaded day, and views of the newest day.

Layout in the warehouse database::

    snapshots.<table>              partitioned by LIST (snapshot_date): the source columns (exact
                                   source types) + snapshot_date; key (snapshot_date, pk), or an
                                   index on snapshot_date for a table without a key
    snapshots."<table>@YYYY-MM-DD" one partition per loaded day (a digest of the name when long)
    snapshots._loads               one row per loaded day: when, rows and columns per table
    public.<table>                 a view of <table>'s partition of the newest loaded day

Loading day D fills a fresh table per stream and, at the end of the load's single transaction,
drops D's old partition and attaches the fresh one: no DELETE, no dead rows, and readers see the
whole old day or the whole new one. Views name the newest loaded day as a constant, so the planner
prunes them to one partition; loading an older day never changes them.

Schema changes between days (policy, checked before a table's rows are written):

- a column added at the source is added to the table (older days hold NULL there);
- a column dropped at the source stays (older days keep their values, newer days hold NULL); the
  views show the newest day's columns only;
- a widened type (smallint → integer → bigint, varchar(n) → varchar(m > n) or text, numeric(p,s) →
  numeric with room for as many digits on both sides of the point) is applied with ALTER TABLE;
- any other type change is refused, naming the table, the column and both types;
- a table added gets its own snapshot table; a table dropped keeps its history in
  ``snapshots.<table>`` and loses its view.
"""

import datetime as dt
import hashlib
import json
import re

import psycopg
from psycopg import sql

from northwind_elt import copy_binary
from northwind_elt.errors import InputError, SettingError
from northwind_elt.pgtypes import Column, check_sql_type
from northwind_elt.warehouse_types import ensure_types

SNAPSHOT_SCHEMA = "snapshots"
CURRENT_SCHEMA = "public"
LOADS_TABLE = "_loads"
SNAPSHOT_DATE = "snapshot_date"
#: Serialises loads: a second load of any day waits for the first to commit.
LOAD_LOCK_KEY = 0x6E6F7274  # "nort"
#: The retention setting: keep the partitions of this many newest loaded days (unset: all).
KEEP_DAYS_VARIABLE = "NORTHWIND_KEEP_DAYS"
#: PostgreSQL's identifier limit (bytes); longer names would be truncated silently.
_MAX_IDENTIFIER_BYTES = 63
_BOUND_DAY = re.compile(r"FOR VALUES IN \('(\d{4}-\d{2}-\d{2})'\)")
#: Storage parameters of a partition (see :func:`start_day`).
_NO_AUTOVACUUM = sql.SQL("autovacuum_enabled = false, toast.autovacuum_enabled = false")


def keep_days_setting(value: str | None) -> int | None:
    """Parse ``NORTHWIND_KEEP_DAYS``: a positive number of days, or None (keep everything).

    Example:
        >>> keep_days_setting("3"), keep_days_setting("")
        (3, None)
    """
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise SettingError(f"{KEEP_DAYS_VARIABLE}={value!r} must be a whole number of days >= 1")
    return int(value)


def begin_load(cur: psycopg.Cursor) -> list[str]:
    """Take the load lock (held until commit or rollback), create the fixed objects, migrate.

    Returns:
        The snapshot tables migrated from the unpartitioned layout of earlier versions.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOAD_LOCK_KEY,))
    # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
    # schema exists, and the cluster's login role owns the schema made at init, nothing more.
    cur.execute("SELECT to_regnamespace(%s) IS NULL", (SNAPSHOT_SCHEMA,))
    if cur.fetchone()[0]:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SNAPSHOT_SCHEMA)))
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (snapshot_date date PRIMARY KEY, "
        "loaded_at timestamptz NOT NULL DEFAULT now(), rows jsonb NOT NULL, columns jsonb)"
    ).format(loads_table()))
    if "columns" not in existing_columns(cur, LOADS_TABLE):  # a log written by earlier versions
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN columns jsonb").format(loads_table()))
    if "attempt" not in existing_columns(cur, LOADS_TABLE):  # the load's id (its step marker's)
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN attempt text").format(loads_table()))
    return migrate_unpartitioned(cur)


def loads_table() -> sql.Composed:
    """``snapshots._loads``."""
    return snapshot_table(LOADS_TABLE)


def snapshot_table(name: str) -> sql.Composed:
    """``snapshots."<name>"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(SNAPSHOT_SCHEMA), sql.Identifier(name))


def derived_name(table: str, tag: str) -> str:
    """``<table>@<tag>``, or a digest of the table's name in its place when that is too long.

    Example:
        >>> derived_name("orders", "2024-01-02")
        'orders@2024-01-02'
        >>> len(derived_name("x" * 63, "2024-01-02").encode())
        43
    """
    name = f"{table}@{tag}"
    if len(name.encode()) <= _MAX_IDENTIFIER_BYTES:
        return name
    return f"{hashlib.sha256(table.encode()).hexdigest()[:32]}@{tag}"


def partition_name(table: str, day: dt.date) -> str:
    """The name of ``table``'s partition of ``day``."""
    return derived_name(table, day.isoformat())


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


def type_changes(existing: dict[str, str], table: str, columns: list[Column]) -> list[Column]:
    """The columns whose type widened; raise, naming table, column and types, for any other change."""
    widened = []
    for column in columns:
        found = existing.get(column.name)
        if found is None or found == column.sql_type:
            continue
        if not is_widening(found, column.sql_type):
            raise InputError(f"table {table}, column {column.name}: the warehouse has type {found}, "
                             f"the partition has {column.sql_type}; only widening type changes are "
                             f"applied, this one needs a migration of snapshots.{table}")
        widened.append(column)
    return widened


def prepare_table(cur: psycopg.Cursor, table: str, columns: list[Column], keys: list[str]) -> None:
    """Create ``snapshots.<table>`` partitioned by day, or evolve it to the day's columns.

    New columns are added, widened types are altered; any other type change is refused before
    anything of the table is written (see the module's policy).
    """
    if any(c.name == SNAPSHOT_DATE for c in columns):
        raise InputError(f"table {table}: a source column is named {SNAPSHOT_DATE}, which the "
                         "warehouse reserves for the day of the snapshot")
    ensure_types(cur, table, columns)
    existing = existing_columns(cur, table)
    definitions = {
        c.name: sql.SQL("{} {}").format(sql.Identifier(c.name),
                                        sql.SQL(check_sql_type(c.sql_type, f"{table}.{c.name}")))
        for c in columns
    }
    if not existing:
        cur.execute(sql.SQL("CREATE TABLE {} ({}, {} date NOT NULL) PARTITION BY LIST ({})").format(
            snapshot_table(table), sql.SQL(", ").join(definitions.values()),
            sql.Identifier(SNAPSHOT_DATE), sql.Identifier(SNAPSHOT_DATE)))
        if keys:
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                snapshot_table(table),
                sql.SQL(", ").join(sql.Identifier(k) for k in [SNAPSHOT_DATE, *keys])))
        else:  # no key: every row is kept, duplicates included
            cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(
                snapshot_table(table), sql.Identifier(SNAPSHOT_DATE)))
        return
    widened = type_changes(existing, table, columns)
    if widened:  # a view's column cannot change type; publish_views recreates it
        drop_view(cur, table)
    for column in widened:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
            snapshot_table(table), sql.Identifier(column.name), sql.SQL(column.sql_type)))
    for column in columns:
        if column.name not in existing:
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(
                snapshot_table(table), definitions[column.name]))


def start_day(cur: psycopg.Cursor, table: str, day: dt.date) -> str:
    """Create the empty table that will become ``table``'s partition of ``day``; return its name.

    Its ``snapshot_date`` defaults to ``day`` (COPY leaves it out) and is checked to be ``day``,
    so attaching it needs no scan. Autovacuum is off for it: a partition is never changed after its
    load, which freezes (COPY FREEZE) and analyzes it; autovacuum would only analyze and scan it
    again seconds after the load (its inserts reach the statistics at commit, after the ANALYZE),
    competing with the next step. Vacuums against wraparound still run.
    """
    fresh = derived_name(table, f"{day.isoformat()}~loading")
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {}) WITH ({})").format(
        snapshot_table(fresh), snapshot_table(table), _NO_AUTOVACUUM))
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}, "
                        "ADD CHECK ({} = {})").format(
        snapshot_table(fresh), sql.Identifier(SNAPSHOT_DATE), sql.Literal(day),
        sql.Identifier(SNAPSHOT_DATE), sql.Literal(day)))
    return fresh


def copy_statement(fresh: str, columns: list[Column]) -> sql.Composed:
    """``COPY snapshots.<fresh> (<columns>) FROM STDIN (FORMAT binary|csv, FREEZE)``.

    Binary when :mod:`northwind_elt.copy_binary` encodes every column (the server reads it faster),
    else CSV; :func:`northwind_elt.arrow_io.copy_chunks` writes the matching bytes. FREEZE: the
    table was created in this transaction, so its rows need no later vacuum.
    """
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    form = sql.SQL("binary" if copy_binary.encodable(columns) else "csv")
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}, FREEZE)").format(
        snapshot_table(fresh), names, form)


def partitions(cur: psycopg.Cursor, table: str) -> dict[dt.date, str]:
    """The partitions of ``snapshots.<table>`` by day."""
    cur.execute("""SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
                   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = to_regclass(format('%%I.%%I', %s::text, %s::text))""",
                (SNAPSHOT_SCHEMA, table))
    found = {}
    for name, bound in cur.fetchall():
        if match := _BOUND_DAY.fullmatch(bound):
            found[dt.date.fromisoformat(match.group(1))] = name
    return found


def swap_in(cur: psycopg.Cursor, table: str, day: dt.date, fresh: str) -> None:
    """Make ``fresh`` the partition of ``day``: index it, drop the old one, attach it."""
    cur.execute("""SELECT i.indisprimary, array_agg(a.attname ORDER BY k.n)
                   FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
                   GROUP BY i.indexrelid, i.indisprimary""", (SNAPSHOT_SCHEMA, table))
    # Built before the swap, so ATTACH adopts it instead of building under the parent's lock.
    for primary, names in cur.fetchall():
        columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        statement = ("ALTER TABLE {} ADD PRIMARY KEY ({})" if primary
                     else "CREATE INDEX ON {} ({})")
        cur.execute(sql.SQL(statement).format(snapshot_table(fresh), columns))
    # A fresh table has no statistics: without them the planner guesses a handful of rows.
    cur.execute(sql.SQL("ANALYZE {}").format(snapshot_table(fresh)))
    old = partitions(cur, table).get(day)
    if old is not None:
        cur.execute(sql.SQL("DROP TABLE {}").format(snapshot_table(old)))
    final = partition_name(table, day)
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(snapshot_table(fresh),
                                                             sql.Identifier(final)))
    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        snapshot_table(table), snapshot_table(final), sql.Literal(day)))


def drop_day_of_other_tables(cur: psycopg.Cursor, day: dt.date, loaded: set[str]) -> list[str]:
    """Drop ``day``'s partitions of the tables this load of ``day`` did not have (dropped since).

    Returns:
        The tables whose partition was dropped.
    """
    dropped = []
    for table in snapshot_tables(cur):
        if table not in loaded and (old := partitions(cur, table).get(day)) is not None:
            cur.execute(sql.SQL("DROP TABLE {}").format(snapshot_table(old)))
            dropped.append(table)
    return dropped


def migrate_unpartitioned(cur: psycopg.Cursor) -> list[str]:
    """Turn every unpartitioned snapshot table (earlier versions) into one partition per day.

    Runs in the load's transaction: rows are copied day by day into fresh partitions of a new
    partitioned table with the same columns and key, then the old table is dropped.
    """
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition
                     AND c.relname <> %s AND c.relname NOT LIKE '%%@%%' ORDER BY 1""",
                (SNAPSHOT_SCHEMA, LOADS_TABLE))
    tables = [row[0] for row in cur.fetchall()]
    for table in tables:
        cur.execute("""SELECT a.attname FROM pg_index i
                       CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
                         AND i.indisprimary ORDER BY k.n""", (SNAPSHOT_SCHEMA, table))
        keys = [name for (name,) in cur.fetchall() if name != SNAPSHOT_DATE]
        legacy = derived_name(table, "unpartitioned")
        drop_view(cur, table)
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(snapshot_table(table),
                                                                 sql.Identifier(legacy)))
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {}) PARTITION BY LIST ({})").format(
            snapshot_table(table), snapshot_table(legacy), sql.Identifier(SNAPSHOT_DATE)))
        if keys:
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                snapshot_table(table),
                sql.SQL(", ").join(sql.Identifier(k) for k in [SNAPSHOT_DATE, *keys])))
        else:
            cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(
                snapshot_table(table), sql.Identifier(SNAPSHOT_DATE)))
        cur.execute(sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
            sql.Identifier(SNAPSHOT_DATE), snapshot_table(legacy)))
        for (day,) in cur.fetchall():
            fresh = start_day(cur, table, day)
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} = {}").format(
                snapshot_table(fresh), snapshot_table(legacy), sql.Identifier(SNAPSHOT_DATE),
                sql.Literal(day)))
            swap_in(cur, table, day, fresh)
        cur.execute(sql.SQL("DROP TABLE {}").format(snapshot_table(legacy)))
    return tables


def snapshot_tables(cur: psycopg.Cursor) -> list[str]:
    """Every snapshot table (not its partitions, not the load log)."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                     AND c.relname <> %s ORDER BY c.relname""", (SNAPSHOT_SCHEMA, LOADS_TABLE))
    return [row[0] for row in cur.fetchall()]


def drop_view(cur: psycopg.Cursor, table: str) -> None:
    """Drop ``public.<table>`` if it is a view; refuse if something else has that name."""
    cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%%I.%%I', "
                "%s::text, %s::text))", (CURRENT_SCHEMA, table))
    kind = cur.fetchone()
    if kind and kind[0] != "v":
        raise InputError(f"{CURRENT_SCHEMA}.{table} exists and is not a view: the warehouse "
                         "cannot publish the current snapshot under that name")
    if kind:
        cur.execute(sql.SQL("DROP VIEW {}.{}").format(sql.Identifier(CURRENT_SCHEMA),
                                                      sql.Identifier(table)))


def publish_views(cur: psycopg.Cursor) -> None:
    """(Re)create ``public.<table>`` as the newest loaded day of every table that day has.

    The day is a constant in the view, so the planner reads that day's partition only. The view
    lists the columns the newest day had (a column dropped at the source leaves it); a table
    the newest day did not have gets no view (its history stays in ``snapshots``).
    """
    cur.execute(sql.SQL("SELECT snapshot_date, rows, columns FROM {} "
                        "ORDER BY snapshot_date DESC LIMIT 1").format(loads_table()))
    newest = cur.fetchone()
    for table in snapshot_tables(cur):
        drop_view(cur, table)
        if newest is None or table not in newest[1]:
            continue
        names = (newest[2] or {}).get(table) or [
            n for n in existing_columns(cur, table) if n != SNAPSHOT_DATE]
        cur.execute(sql.SQL("CREATE VIEW {}.{} AS SELECT {} FROM {} WHERE {} = {}").format(
            sql.Identifier(CURRENT_SCHEMA), sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(n) for n in names), snapshot_table(table),
            sql.Identifier(SNAPSHOT_DATE), sql.Literal(newest[0])))


def record_load(cur: psycopg.Cursor, day: dt.date, rows: dict[str, int],
                columns: dict[str, list[str]] | None = None, attempt: str | None = None
                ) -> dt.datetime:
    """Record that ``day`` is loaded, with its rows, its columns per table and the load's id.

    Returns:
        ``loaded_at`` (the transaction's time).
    """
    cur.execute(sql.SQL(
        "INSERT INTO {} (snapshot_date, rows, columns, attempt) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (snapshot_date) DO UPDATE SET rows = excluded.rows, "
        "columns = excluded.columns, attempt = excluded.attempt, loaded_at = now() "
        "RETURNING loaded_at"
    ).format(loads_table()), (day, json.dumps(rows, sort_keys=True),
                              None if columns is None else json.dumps(columns, sort_keys=True),
                              attempt))
    return cur.fetchone()[0]


def drop_old_days(cur: psycopg.Cursor, keep: int) -> list[dt.date]:
    """Drop every partition older than the ``keep`` newest loaded days, and those days' log rows.

    Returns:
        The days dropped, oldest first.
    """
    days = sorted(loaded_days(cur), reverse=True)
    if len(days) <= keep:
        return []
    oldest_kept = days[keep - 1]
    dropped = set()
    for table in snapshot_tables(cur):
        for day, name in partitions(cur, table).items():
            if day < oldest_kept:
                cur.execute(sql.SQL("DROP TABLE {}").format(snapshot_table(name)))
                dropped.add(day)
    cur.execute(sql.SQL("DELETE FROM {} WHERE snapshot_date < %s RETURNING snapshot_date").format(
        loads_table()), (oldest_kept,))
    dropped.update(day for (day,) in cur.fetchall())
    return sorted(dropped)


def loaded_days(cur: psycopg.Cursor) -> dict[dt.date, dict[str, int]]:
    """Every loaded day with its rows per table; empty before the first load."""
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (SNAPSHOT_SCHEMA, LOADS_TABLE))
    if not cur.fetchone()[0]:
        return {}
    cur.execute(sql.SQL("SELECT snapshot_date, rows FROM {} ORDER BY 1").format(loads_table()))
    return dict(cur.fetchall())

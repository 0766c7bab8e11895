"""The warehouse: one partition per table and loaded day, and views of the newest day.

Layout (:mod:`northwind_elt.warehouse_layout`): ``snapshots.<table>`` partitioned by LIST
(snapshot_date), the source columns (exact source types) + snapshot_date, key (snapshot_date, pk)
or an index on snapshot_date for a table without a key; its partitions ``snapshot_days."<table>@
<day>"``; the load log ``northwind.loads``; ``public.<table>`` a view of the newest loaded day.

Loading day D fills a fresh table per stream and, at the end of the load's single transaction,
drops D's old partition and attaches the fresh one: no DELETE, no dead rows, and readers see the
whole old day or the whole new one. Views name the newest loaded day as a constant, so the planner
prunes them to one partition; loading an older day never changes them.

Schema changes between days (policy, checked before a table's rows are written):

- a column added at the source is added to the table (older days hold NULL there);
- a column dropped at the source stays (older days keep their values, newer days hold NULL); the
  views show the newest day's columns only;
- a widened type is applied with ALTER TABLE; an older day's narrower type is widened on its way in
  (:mod:`northwind_elt.warehouse_schema`); any other type change is refused, naming the table and
  every such column with both types;
- a column of a ``NOT NULL`` domain is nullable in the table (older days hold NULL) and ``NOT NULL``
  in each partition of a day that has it (:mod:`northwind_elt.warehouse_types`);
- enum labels added at the source are added before the load's transaction (same module);
- a table added gets its own snapshot table; a table dropped keeps its history in
  ``snapshots.<table>`` and loses its view.
"""

import datetime as dt
import json

import psycopg
from psycopg import sql

from northwind_elt import copy_binary
from northwind_elt import history_sql as hs
from northwind_elt.errors import InputError
from northwind_elt.history_sql import history_days
from northwind_elt.pgtypes import Column, check_sql_type
from northwind_elt.warehouse_layout import (
    CURRENT_SCHEMA,
    LOADS_TABLE,
    LOG_SCHEMA,
    PARTITION_SCHEMA,
    SNAPSHOT_DATE,
    SNAPSHOT_SCHEMA,
    derived_name,
    ensure_schema,
    existing_columns,
    loads_table,
    move_own_objects,
    partition_name,
    partition_table,
    partitions,
    relation_exists,
    snapshot_table,
    snapshot_tables,
)
from northwind_elt.warehouse_schema import plan_types
from northwind_elt.warehouse_types import ensure_types

__all__ = ["SNAPSHOT_DATE", "existing_columns", "snapshot_table", "loaded_days"]

#: Serialises loads: a second load of any day waits for the first to commit.
LOAD_LOCK_KEY = 0x6E6F7274  # "nort"
#: Storage parameters of a partition (see :func:`start_day`).
NO_AUTOVACUUM = sql.SQL("autovacuum_enabled = false, toast.autovacuum_enabled = false")


def begin_load(cur: psycopg.Cursor) -> list[str]:
    """Take the load lock (held until commit or rollback), create the fixed objects, migrate.

    Returns:
        What was migrated from the layouts of earlier versions: the load log and partitions moved
        out of ``snapshots``, then the snapshot tables turned into one partition per day.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOAD_LOCK_KEY,))
    for schema in (SNAPSHOT_SCHEMA, PARTITION_SCHEMA, LOG_SCHEMA):
        ensure_schema(cur, schema)
    moved = move_own_objects(cur)
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (snapshot_date date PRIMARY KEY, "
        "loaded_at timestamptz NOT NULL DEFAULT now(), rows jsonb NOT NULL, columns jsonb)"
    ).format(loads_table()))
    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS columns jsonb").format(
        loads_table()))  # a log written by earlier versions has none
    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS attempt text").format(
        loads_table()))  # the load's id (its step marker's), from the chained-markers version on
    return moved + migrate_unpartitioned(cur)


def reserved_columns(tables: dict[str, list[Column]]) -> None:
    """Refuse, before anything is written, every table with a column named ``snapshot_date``.

    Raises:
        InputError: naming every such table.
    """
    clashing = sorted(t for t, columns in tables.items() if any(c.name == SNAPSHOT_DATE
                                                                 for c in columns))
    if clashing:
        raise InputError(f"table {', '.join(clashing)}: a source column is named {SNAPSHOT_DATE}, "
                         "which the warehouse reserves for the day of each snapshot; rename it at "
                         "the source or leave it out of the extract; nothing was loaded")


def newest_day(cur: psycopg.Cursor) -> dt.date | None:
    """The newest loaded day, or None before the first load."""
    return max(loaded_days(cur), default=None)


def prepare_table(cur: psycopg.Cursor, table: str, columns: list[Column], keys: list[str],
                  day: dt.date | None = None) -> dict[str, str]:
    """Create ``snapshots.<table>`` partitioned by day, or evolve it to the day's columns.

    New columns are added, widened types are altered; any other type change is refused before
    anything of the table is written (see the module's policy).

    Args:
        cur: The load's cursor.
        table: The stream.
        columns: The day's columns.
        keys: The day's key columns.
        day: The day loaded (None: taken as the newest, so no day is widened on its way in).

    Returns:
        The columns whose older, narrower values are widened on their way in: name -> stored type.
    """
    reserved_columns({table: columns})
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
        return {}
    newest = newest_day(cur)
    plan = plan_types(existing, table, columns, day is not None and newest is not None
                      and day < newest)
    if plan.widen_table:  # a view's column cannot change type; publish_views recreates it
        drop_view(cur, table)
    for column in plan.widen_table:
        _alter(cur, table, column.name, sql.SQL("ALTER COLUMN {} TYPE {}").format(
            sql.Identifier(column.name), sql.SQL(column.sql_type)))
    for column in columns:
        if column.name not in existing:
            _alter(cur, table, column.name, sql.SQL("ADD COLUMN {}").format(
                definitions[column.name]))
    return plan.widen_day


def _alter(cur: psycopg.Cursor, table: str, column: str, change: sql.Composable) -> None:
    """``ALTER TABLE snapshots.<table> <change>``; a refusal names the table and column."""
    try:
        cur.execute(sql.SQL("ALTER TABLE {} {}").format(snapshot_table(table), change))
    except psycopg.Error as error:
        raise InputError(f"table {table}, column {column}: the warehouse cannot store this "
                         f"change: {str(error).splitlines()[0]}; nothing was loaded") from None


def start_day(cur: psycopg.Cursor, table: str, day: dt.date, not_null: tuple[str, ...] = (),
              fresh: str | None = None) -> str:
    """Create the empty table that will become ``table``'s partition of ``day``; return its name.

    Its ``snapshot_date`` defaults to ``day`` (COPY leaves it out) and is checked to be ``day``,
    so attaching it needs no scan. The columns in ``not_null`` (those of a ``NOT NULL`` domain the
    day has) are ``NOT NULL`` in this partition only. Autovacuum is off for it: a partition is never
    changed after its load, which freezes (COPY FREEZE) and analyzes it; autovacuum would only
    analyze and scan it again seconds after the load (its inserts reach the statistics at commit,
    after the ANALYZE), competing with the next step. Vacuums against wraparound still run.
    """
    fresh = fresh or derived_name(table, f"{day.isoformat()}~loading")
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {}) WITH ({})").format(
        partition_table(fresh), snapshot_table(table), NO_AUTOVACUUM))
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}, "
                        "ADD CHECK ({} = {})").format(
        partition_table(fresh), sql.Identifier(SNAPSHOT_DATE), sql.Literal(day),
        sql.Identifier(SNAPSHOT_DATE), sql.Literal(day)))
    for name in not_null:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
            partition_table(fresh), sql.Identifier(name)))
    return fresh


def copy_statement(fresh: str, columns: list[Column]) -> sql.Composed:
    """``COPY snapshot_days.<fresh> (<columns>) FROM STDIN (FORMAT binary|csv, FREEZE)``.

    Binary when :mod:`northwind_elt.copy_binary` encodes every column (the server reads it faster),
    else CSV; :func:`northwind_elt.arrow_io.copy_chunks` writes the matching bytes. FREEZE: the
    table was created in this transaction, so its rows need no later vacuum.
    """
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    form = sql.SQL("binary" if copy_binary.encodable(columns) else "csv")
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}, FREEZE)").format(
        partition_table(fresh), names, form)


def index_fresh(cur: psycopg.Cursor, table: str, fresh: str) -> None:
    """Give ``fresh`` the key or index of ``snapshots.<table>`` and its statistics."""
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
        cur.execute(sql.SQL(statement).format(partition_table(fresh), columns))
    # A fresh table has no statistics: without them the planner guesses a handful of rows.
    cur.execute(sql.SQL("ANALYZE {}").format(partition_table(fresh)))


def swap_in(cur: psycopg.Cursor, table: str, day: dt.date, fresh: str, indexed=False) -> None:
    """Make ``fresh`` the partition of ``day``: index it (unless done), drop the old, attach it."""
    if not indexed:
        index_fresh(cur, table, fresh)
    old = partitions(cur, table).get(day)
    if old is not None:
        cur.execute(sql.SQL("DROP TABLE {}").format(partition_table(old)))
    final = partition_name(table, day)
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(partition_table(fresh),
                                                             sql.Identifier(final)))
    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        snapshot_table(table), partition_table(final), sql.Literal(day)))


def drop_day_of_other_tables(cur: psycopg.Cursor, day: dt.date, loaded: set[str]) -> list[str]:
    """Drop ``day``'s partitions of the tables this load of ``day`` did not have (dropped since).

    Returns:
        The tables whose partition was dropped.
    """
    dropped = []
    for table in snapshot_tables(cur):
        if table not in loaded and (old := partitions(cur, table).get(day)) is not None:
            cur.execute(sql.SQL("DROP TABLE {}").format(partition_table(old)))
            dropped.append(table)
    return dropped


def migrate_unpartitioned(cur: psycopg.Cursor) -> list[str]:
    """Turn every unpartitioned snapshot table (earlier versions) into one partition per day.

    Runs in the load's transaction, after :func:`~northwind_elt.warehouse_layout.move_own_objects`
    (so every plain table left in ``snapshots`` is such a table): it moves to ``snapshot_days``,
    its rows are copied day by day into fresh partitions of a new partitioned table with the same
    columns and key, then it is dropped.
    """
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition ORDER BY 1""",
                (SNAPSHOT_SCHEMA,))
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
        cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            snapshot_table(legacy), sql.Identifier(PARTITION_SCHEMA)))
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {}) PARTITION BY LIST ({})").format(
            snapshot_table(table), partition_table(legacy), sql.Identifier(SNAPSHOT_DATE)))
        if keys:
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                snapshot_table(table),
                sql.SQL(", ").join(sql.Identifier(k) for k in [SNAPSHOT_DATE, *keys])))
        else:
            cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(
                snapshot_table(table), sql.Identifier(SNAPSHOT_DATE)))
        cur.execute(sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
            sql.Identifier(SNAPSHOT_DATE), partition_table(legacy)))
        for (day,) in cur.fetchall():
            fresh = start_day(cur, table, day)
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} = {}").format(
                partition_table(fresh), partition_table(legacy), sql.Identifier(SNAPSHOT_DATE),
                sql.Literal(day)))
            swap_in(cur, table, day, fresh)
        cur.execute(sql.SQL("DROP TABLE {}").format(partition_table(legacy)))
    return tables


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

    The view reads the day's partition where the warehouse keeps it (the day is a constant in
    the view, so the planner reads that partition only), else the history as of that day
    (``NORTHWIND_KEEP_DAYS=0``: rows whose interval holds the day). It lists the columns the
    newest day had (a column dropped at the source leaves it); a table the newest day did not
    have gets no view (its history stays in ``snapshots`` and ``history``).
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
        cur.execute(sql.SQL("CREATE VIEW {}.{} AS {}").format(
            sql.Identifier(CURRENT_SCHEMA), sql.Identifier(table),
            day_rows(cur, table, newest[0], names)))


def day_rows(cur: psycopg.Cursor, table: str, day: dt.date, names: list[str]) -> sql.Composed:
    """``SELECT <names>`` of ``table`` on ``day``: its partition if kept, else the history's as-of.

    A day without either (not loaded) gives no rows.
    """
    if partitions(cur, table).get(day) is None and hs.history_covers(cur, table, day):
        return hs.as_of_rows(table, bool(hs.source_key(cur, table)), names, sql.Literal(day))
    return sql.SQL("SELECT {} FROM {} WHERE {} = {}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names), snapshot_table(table),
        sql.Identifier(SNAPSHOT_DATE), sql.Literal(day))


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
    """Drop every partition older than the ``keep`` newest loaded days (0: every partition).

    A day the history covers stays loaded (its log row stays: views and the report read it from
    the history); the log row of any other dropped day goes with its partitions.

    Returns:
        The days whose partitions (or log row) were dropped, oldest first.
    """
    days = sorted(loaded_days(cur), reverse=True)
    if len(days) <= keep:
        return []
    oldest_kept = days[keep - 1] if keep else None
    dropped = set()
    for table in snapshot_tables(cur):
        for day, name in partitions(cur, table).items():
            if oldest_kept is None or day < oldest_kept:
                cur.execute(sql.SQL("DROP TABLE {}").format(partition_table(name)))
                dropped.add(day)
    in_history = history_days(cur)
    cur.execute(sql.SQL("DELETE FROM {} WHERE snapshot_date < %s "
                        "AND snapshot_date <> ALL(%s::date[]) RETURNING snapshot_date").format(
        loads_table()),
                (oldest_kept or dt.date.max, in_history))
    dropped.update(day for (day,) in cur.fetchall())
    return sorted(dropped)


def loaded_days(cur: psycopg.Cursor) -> dict[dt.date, dict[str, int]]:
    """Every loaded day with its rows per table; empty before the first load."""
    if not relation_exists(cur, LOG_SCHEMA, LOADS_TABLE):
        return {}
    cur.execute(sql.SQL("SELECT snapshot_date, rows FROM {} ORDER BY 1").format(loads_table()))
    return dict(cur.fetchall())

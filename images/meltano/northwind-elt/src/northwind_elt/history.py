"""Change-only history of every snapshot table, spliced in by each load whatever the day's order.

Layout: ``history.<table>`` holds one row per version of a row of ``snapshots.<table>``: the
source columns (their exact types), ``_nw_row_hash`` (the version's digest, see
:mod:`northwind_elt.history_sql`), ``_nw_valid_from`` (the first loaded day of the version) and
``_nw_valid_to`` (the next loaded day without it; NULL while current). A keyed table is keyed by its
source key; a table without a key versions whole rows, ``_nw_copies`` holding how many identical rows
the day had. ``history."<table>"(day)`` returns the table as of a day, equal row for row to that
day's partition. ``northwind.history_days`` lists the days the history covers.

History is defined over the loaded days: a version valid from A to B was seen on every loaded day
from A up to (not including) B, whatever happened at the source between loaded days. So the
history is a function of the set of loaded days and their snapshots, never of the load order:
loading day D computes, for the rows whose version on D differs from the history's state as of D
(the loaded day before D, when D is new), the cut at D and at the next loaded day N, and merges
the new version with an equal version ending at D or starting at N. Reloading D with the same data
changes nothing.

A table's first day (no version yet) is inserted straight from its partition, its primary key
built after the rows (:func:`bulk_first_day`); a day whose content is provably the one the history
already holds (:mod:`northwind_elt.history_stamps`) is not spliced at all.

The full partitions are then optional: ``NORTHWIND_KEEP_DAYS=0`` drops even the day's own
partitions at the end of its load (after this splice, in the same transaction); the views, the
report and ``northwind verify`` read a day without a partition from the history
(:func:`northwind_elt.history_sql.day_relation`).
"""

import dataclasses
import datetime as dt
from collections.abc import Mapping

import psycopg
from psycopg import sql

from northwind_elt import history_sql as hs
from northwind_elt import history_stamps as stamps
from northwind_elt.errors import InputError, SettingError
from northwind_elt.warehouse import drop_view
from northwind_elt.warehouse_layout import (
    SNAPSHOT_DATE,
    ensure_schema,
    partition_table,
    partitions,
    relation_exists,
    snapshot_table,
    snapshot_tables,
    stored_types,
)

#: Turns the history off (``off``) or on (default).
HISTORY_VARIABLE = "NORTHWIND_HISTORY"
#: The days the history covers (the days loaded while it was on).
HISTORY_DAYS = hs.HISTORY_DAYS
_ON, _OFF = {"", "on", "1", "true", "yes"}, {"off", "0", "false", "no"}
#: Insert a table's first day (no version yet) straight from its partition; off: the general
#: splice (the tests compare both).
BULK_FIRST_DAY = True
#: Build a new history table's primary key after its first day's rows (one sort), not row by row.
KEY_AFTER_ROWS = True


@dataclasses.dataclass
class DayHistory:
    """What splicing one day did to the history."""

    #: Per table: the identities (keys, or distinct rows of a keyless table) whose version
    #: changed on the day, 0 for a table not spliced.
    changed: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The tables whose content the history held already (same stamp): not spliced.
    unchanged: list[str] = dataclasses.field(default_factory=list)


def history_setting(value: str | None) -> bool:
    """Parse ``NORTHWIND_HISTORY``: on (the default) or off.

    Example:
        >>> history_setting(None), history_setting("off")
        (True, False)
    """
    text = (value or "").strip().lower()
    if text in _ON | _OFF:
        return text in _ON
    raise SettingError(f"{HISTORY_VARIABLE}={value!r} must be on or off")


days_table, history_days = hs.days_table, hs.history_days


def record_day(cur: psycopg.Cursor, day: dt.date, files: Mapping[str, str] | None = None
               ) -> DayHistory:
    """Splice ``day``'s partitions into the history of every table (in the load's transaction).

    Call it after the day's partitions are attached. The first time, the days whose partitions
    the warehouse still has are spliced in first (oldest first), so turning history on keeps them.
    ``files``: the SHA-256 of the file each table's partition of ``day`` was loaded from, as its
    manifest and the tap's check give it; a table with one is not spliced when the history
    provably holds its content already (:mod:`northwind_elt.history_stamps`).

    Returns:
        What changed on ``day``, per table.
    """
    ensure_schema(cur, hs.HISTORY_SCHEMA)
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (snapshot_date date PRIMARY KEY)").format(
        days_table()))
    stamps.ensure_stamps(cur)
    hs.canonical_text(cur)
    days = {day}
    if not history_days(cur):
        days |= {d for table in snapshot_tables(cur) for d in partitions(cur, table)}
    done = DayHistory()
    for each in sorted(days):
        done = splice_day(cur, each, files if each == day else None)
    return done


def splice_day(cur: psycopg.Cursor, day: dt.date, files: Mapping[str, str] | None = None
               ) -> DayHistory:
    """Make the history hold ``day``'s partitions as that day's state (a table without one: empty).

    ``files``: as :func:`record_day`'s.
    """
    cur.execute(sql.SQL("INSERT INTO {} VALUES (%s) ON CONFLICT DO NOTHING").format(days_table()),
                (day,))
    first_load = cur.rowcount == 1
    cur.execute(sql.SQL("SELECT max(snapshot_date) FILTER (WHERE snapshot_date < %s), "
                        "min(snapshot_date) FILTER (WHERE snapshot_date > %s) FROM {}").format(
        days_table()), (day, day))
    previous, following = cur.fetchone()
    done = DayHistory()
    for table in snapshot_tables(cur):
        partition = partitions(cur, table).get(day)
        exists = relation_exists(cur, hs.HISTORY_SCHEMA, table)
        if partition is None and not exists:
            continue
        stamp = stamps.day_stamp(cur, table, (files or {}).get(table)) if partition else None
        empty = not exists or not has_versions(cur, table)
        bulk = BULK_FIRST_DAY and empty and partition is not None
        key_later = bulk and not exists and KEY_AFTER_ROWS
        plan = prepare_history(cur, table, key_later=key_later)
        if empty:  # created anew or reset: no stamp of the table holds any more
            stamps.forget_table(cur, table)
        if bulk:
            done.changed[table] = bulk_first_day(cur, plan, day, following,
                                                 partition_table(partition), key_later)
        elif stamps.unchanged(cur, table, day, stamp, previous, first_load):
            done.changed[table] = 0
            done.unchanged.append(table)
        else:
            done.changed[table] = splice_table(cur, plan, day, following, partition, first_load)
        stamps.record(cur, table, day, stamp)
        create_as_of(cur, table, plan)
    return done


def has_versions(cur: psycopg.Cursor, table: str) -> bool:
    """Whether ``history.<table>`` holds any version."""
    cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(hs.history_table(table)))
    return cur.fetchone()[0]


def bulk_first_day(cur: psycopg.Cursor, plan: hs.Plan, day: dt.date, following: dt.date | None,
                   source: sql.Composable, key_later: bool) -> int:
    """Insert a table's first versions: every row of ``day``'s partition, valid until ``following``.

    What the general splice makes from a history without a version (every identity changed, no
    bound to move), without its change detection. ``key_later``: the history table was created
    without its primary key in this transaction: add it after the rows (one sort instead of one
    index insertion per row).

    Returns:
        The identities inserted (keys, or distinct rows of a keyless table).
    """
    cur.execute(hs.bulk_insert(plan, source, day, following))
    inserted = cur.rowcount
    if key_later:
        cur.execute(hs.add_primary_key(plan))
    return inserted


def prepare_history(cur: psycopg.Cursor, table: str, key_later: bool = False) -> hs.Plan:
    """Create ``history.<table>`` or give it the snapshot table's columns and types.

    ``key_later``: create a new table without its primary key (:func:`bulk_first_day` adds it).
    """
    types = {n: t for n, t in stored_types(cur, table).items() if n != SNAPSHOT_DATE}
    snapshot = {n: t[0] for n, t in types.items()}
    keys = hs.source_key(cur, table)
    reserved = hs.meta_types(keyed=bool(keys))
    clashing = sorted(set(snapshot) & set(reserved))
    if clashing:
        raise InputError(f"table {table}: source column {', '.join(clashing)} has a name the "
                         f"history reserves ({', '.join(reserved)}); rename it at the "
                         f"source or set {HISTORY_VARIABLE}=off; nothing was loaded")
    plan = hs.Plan(table, list(snapshot), keys,
                   frozenset(n for n, t in types.items() if t[1] in hs.EXACT_EQUALITY),
                   frozenset(n for n, t in types.items() if t[1] == "numeric"))
    if not relation_exists(cur, hs.HISTORY_SCHEMA, table):
        columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                   for n, t in snapshot.items()]
        columns += [sql.SQL(f"{{}} {t}").format(sql.Identifier(n))
                    for n, t in hs.meta_types(keyed=bool(keys)).items()]
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(hs.history_table(table),
                                                          sql.SQL(", ").join(columns)))
        if not key_later:
            cur.execute(hs.add_primary_key(plan))
        return plan
    existing = hs.history_types(cur, table)
    for name, sql_type in snapshot.items():
        if name not in existing:  # NULL in every version: no version changes (see history_sql)
            change = sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(name), sql.SQL(sql_type))
        elif existing[name] != sql_type:  # widened in snapshots.<table>: follow it
            drop_view(cur, table)  # a view over the history; publish_views makes it again
            change = sql.SQL("ALTER COLUMN {} TYPE {}").format(sql.Identifier(name),
                                                               sql.SQL(sql_type))
        else:
            continue
        cur.execute(sql.SQL("ALTER TABLE {} {}").format(hs.history_table(table), change))
    return plan


def splice_table(cur: psycopg.Cursor, plan: hs.Plan, day: dt.date, following: dt.date | None,
                 partition: str | None, first_load: bool) -> int:
    """Splice one table's partition of ``day`` (None: the table had no rows that day).

    ``first_load``: ``day`` was not in the history before this load.

    Returns:
        How many identities (keys, or distinct rows of a keyless table) changed version on ``day``.
    """
    source = partition_table(partition) if partition else None
    changed_table, new_table = hs.work_table(hs.CHANGED), hs.work_table(hs.NEW)
    # Plain tables of the warehouse's own schema: its role may not create temporary ones.
    before = hs.local_settings(cur, hs.MERGE_PLAN) if plan.keys and source else {}
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS {}").format(
        changed_table, hs.changed_identities(plan, source, day)))
    changed = cur.rowcount
    hs.local_settings(cur, before)
    if changed:
        cur.execute(sql.SQL("ANALYZE {}").format(changed_table))
        cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS {}").format(
            new_table, hs.new_versions(plan, source, following)))
        probe = source is not None and changed <= hs.PROBE_SHARE * day_rows(cur, source)
        if probe:
            cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(new_table, plan.identity_list()))
        cur.execute(sql.SQL("ANALYZE {}").format(new_table))
        before = hs.local_settings(cur, hs.PROBE_PLAN) if probe else {}
        for statement in hs.splice_statements(plan, day, following, first_load):
            cur.execute(statement)
        hs.local_settings(cur, before)
        cur.execute(sql.SQL("DROP TABLE {}").format(new_table))
    cur.execute(sql.SQL("DROP TABLE {}").format(changed_table))
    return changed


def day_rows(cur: psycopg.Cursor, partition: sql.Composable) -> float:
    """The rows of a day's partition, as its ANALYZE (in the load's swap) counted them."""
    cur.execute(sql.SQL("SELECT reltuples FROM pg_class WHERE oid = {}::regclass").format(
        sql.Literal(partition.as_string(cur))))
    return max(cur.fetchone()[0], 0)


def create_as_of(cur: psycopg.Cursor, table: str, plan: hs.Plan) -> None:
    """(Re)create ``history."<table>"(day date)``: the table as of ``day``, as its partition."""
    snapshot_order = list(stored_types(cur, table))
    body = hs.as_of_query(plan, snapshot_order).as_string(cur)
    cur.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}(date) RETURNS SETOF {} LANGUAGE sql STABLE AS {}"
    ).format(hs.history_table(table), snapshot_table(table), sql.Literal(body)))

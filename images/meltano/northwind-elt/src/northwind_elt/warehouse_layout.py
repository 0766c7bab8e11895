"""Where the warehouse keeps what: its schemas, the names it derives, and what its catalog says.

Source tables may have any name (``_loads``, ``orders@2024-01-02``...), so the warehouse's own
objects live in schemas no source table goes to::

    snapshots.<table>                one partitioned table per source table (nothing else)
    snapshot_days."<table>@<day>"    its partition of one loaded day
    northwind.loads                  the load log: one row per loaded day
    public.<table>                   the view of the newest loaded day

Warehouses of earlier versions kept the log (``snapshots._loads``) and the partitions in
``snapshots``; :func:`move_own_objects` moves them here in the next load's transaction.
"""

import datetime as dt
import hashlib
import re

import psycopg
from psycopg import sql

from northwind_elt.errors import SettingError

SNAPSHOT_SCHEMA = "snapshots"
PARTITION_SCHEMA = "snapshot_days"
LOG_SCHEMA = "northwind"
LOADS_TABLE = "loads"
CURRENT_SCHEMA = "public"
#: The day column of every snapshot table: a source column of that name is refused.
SNAPSHOT_DATE = "snapshot_date"
#: Where earlier versions kept the load log.
_LEGACY_LOADS = "_loads"
#: PostgreSQL's identifier limit (bytes); longer names would be truncated silently.
_MAX_IDENTIFIER_BYTES = 63
_BOUND_DAY = re.compile(r"FOR VALUES IN \('(\d{4}-\d{2}-\d{2})'\)")


def qualified(schema: str, name: str) -> sql.Composed:
    """``"<schema>"."<name>"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def snapshot_table(name: str) -> sql.Composed:
    """``snapshots."<name>"``: the snapshot table of a source table."""
    return qualified(SNAPSHOT_SCHEMA, name)


def partition_table(name: str) -> sql.Composed:
    """``snapshot_days."<name>"``: a partition (or a table being loaded to become one)."""
    return qualified(PARTITION_SCHEMA, name)


def loads_table() -> sql.Composed:
    """``northwind.loads``: the load log."""
    return qualified(LOG_SCHEMA, LOADS_TABLE)


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
    """The name (in ``snapshot_days``) of ``table``'s partition of ``day``."""
    return derived_name(table, day.isoformat())


def relation_exists(cur: psycopg.Cursor, schema: str, name: str) -> bool:
    """Whether ``"<schema>"."<name>"`` is a table or view."""
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (schema, name))
    return cur.fetchone()[0]


def ensure_schema(cur: psycopg.Cursor, schema: str) -> None:
    """Create ``schema`` when missing; say which statement its owner must run if we cannot."""
    # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
    # schema exists, and the cluster's login role owns the schemas made at init, nothing more.
    cur.execute("SELECT to_regnamespace(%s) IS NULL", (schema,))
    if not cur.fetchone()[0]:
        return
    try:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.errors.InsufficientPrivilege:
        raise SettingError(
            f"the warehouse has no schema {schema} and role {cur.connection.info.user} may not "
            f"create it: run CREATE SCHEMA {schema} AUTHORIZATION {cur.connection.info.user} as "
            "the database owner (charts/northwind-databases/files/initdb/warehouse.sql does)"
        ) from None


def move_own_objects(cur: psycopg.Cursor) -> list[str]:
    """Move the load log and the partitions of an earlier version's layout out of ``snapshots``.

    ``snapshots._loads`` is the old log only while ``northwind.loads`` does not exist (earlier
    versions could not load a source table of that name); afterwards it is a source table's.

    Returns:
        What was moved, as ``schema.name``.
    """
    moved = []
    if not relation_exists(cur, LOG_SCHEMA, LOADS_TABLE) and \
            relation_exists(cur, SNAPSHOT_SCHEMA, _LEGACY_LOADS):
        cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            snapshot_table(_LEGACY_LOADS), sql.Identifier(LOG_SCHEMA)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            qualified(LOG_SCHEMA, _LEGACY_LOADS), sql.Identifier(LOADS_TABLE)))
        moved.append(f"{SNAPSHOT_SCHEMA}.{_LEGACY_LOADS}")
    # No partition lives in snapshots in this layout: any there is an earlier version's.
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relispartition AND c.relkind = 'r' ORDER BY 1""",
                (SNAPSHOT_SCHEMA,))
    for (name,) in cur.fetchall():
        cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            snapshot_table(name), sql.Identifier(PARTITION_SCHEMA)))
        moved.append(f"{SNAPSHOT_SCHEMA}.{name}")
    return moved


def existing_columns(cur: psycopg.Cursor, table: str) -> dict[str, str]:
    """The columns of ``snapshots.<table>`` and their ``format_type()``; empty if it does not exist."""
    return {name: found[0] for name, found in stored_types(cur, table).items()}


def stored_types(cur: psycopg.Cursor, table: str) -> dict[str, tuple[str, str, int]]:
    """Each column of ``snapshots.<table>``: its ``format_type()``, ``typname`` and typmod."""
    cur.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (SNAPSHOT_SCHEMA, table),
    )
    return {name: (sql_type, type_name, typmod) for name, sql_type, type_name, typmod
            in cur.fetchall()}


def partitions(cur: psycopg.Cursor, table: str) -> dict[dt.date, str]:
    """The partitions of ``snapshots.<table>`` by day (their names in ``snapshot_days``)."""
    cur.execute("""SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
                   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = to_regclass(format('%%I.%%I', %s::text, %s::text))""",
                (SNAPSHOT_SCHEMA, table))
    found = {}
    for name, bound in cur.fetchall():
        if match := _BOUND_DAY.fullmatch(bound):
            found[dt.date.fromisoformat(match.group(1))] = name
    return found


def snapshot_tables(cur: psycopg.Cursor) -> list[str]:
    """Every snapshot table: the partitioned tables of ``snapshots``."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'p' AND NOT c.relispartition
                   ORDER BY c.relname""", (SNAPSHOT_SCHEMA,))
    return [row[0] for row in cur.fetchall()]

"""Loading synthetic days straight through the warehouse's functions, and digests of the history.

A day is ``{table: rows}``; :data:`TABLES` gives each table's columns and key. :func:`load_day`
does what target-pgcopy's load does, in one transaction: prepare, fill a fresh table, swap it in,
drop the day's partitions of absent tables, splice the history, record the day, apply retention,
publish the views.
"""

from __future__ import annotations

import datetime as dt
import random

import psycopg
from northwind_elt import history, localdb, warehouse
from northwind_elt.pgtypes import Column
from psycopg import sql

#: table -> (columns, key).
TABLES = {
    "items": ([Column("id", "integer", "int4"), Column("name", "text"),
               Column("qty", "integer", "int4"), Column("price", "numeric(8,2)", "numeric", 524294)],
              ["id"]),
    "tags": ([Column("tag", "text"), Column("weight", "double precision", "float8")], []),
    "notes": ([Column("note_id", "bigint", "int8"), Column("body", "text")], ["note_id"]),
}
Day = dict[str, list[tuple]]


def load_day(conn: psycopg.Connection, day: dt.date, tables: Day, keep: int | None = None,
             columns: dict[str, list[Column]] | None = None, with_history: bool = True) -> None:
    """Load ``tables`` as ``day`` (columns from :data:`TABLES` unless given), commit."""
    columns = columns or {}
    with conn.cursor() as cur:
        warehouse.begin_load(cur)
        for table, rows in tables.items():
            cols = columns.get(table) or TABLES[table][0]
            warehouse.prepare_table(cur, table, cols, TABLES[table][1], day)
            fresh = warehouse.start_day(cur, table, day)
            if rows:
                cur.executemany(sql.SQL("INSERT INTO snapshot_days.{} ({}) VALUES ({})").format(
                    sql.Identifier(fresh), sql.SQL(", ").join(sql.Identifier(c.name)
                                                              for c in cols),
                    sql.SQL(", ").join(sql.Placeholder() * len(cols))), rows)
            warehouse.swap_in(cur, table, day, fresh)
        warehouse.drop_day_of_other_tables(cur, day, set(tables))
        if with_history:
            history.record_day(cur, day)
        warehouse.record_load(cur, day, {t: len(r) for t, r in tables.items()},
                              {t: [c.name for c in (columns.get(t) or TABLES[t][0])]
                               for t in tables})
        if keep is not None:
            warehouse.drop_old_days(cur, keep)
        warehouse.publish_views(cur)
    conn.commit()


def history_digest(conn: psycopg.Connection) -> dict[str, str]:
    """An order-independent digest of every table of ``history`` and of the history's days."""
    names = [n for (n,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'history' AND c.relkind = 'r' ORDER BY 1")]
    digest = {}
    for name in [*(f"history.{n}" for n in names), "northwind.history_days"]:
        schema, table = name.split(".")
        (digest[name],) = conn.execute(sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) || ':' || "
            "count(*) FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
    return digest


def as_of_differences(conn: psycopg.Connection, table: str, day: dt.date) -> int:
    """How many rows differ (both ways, with multiplicity) between the as-of and the partition."""
    query = sql.SQL("SELECT count(*) FROM ((SELECT * FROM history.{t}(%(d)s) EXCEPT ALL "
                    "SELECT * FROM snapshots.{t} WHERE snapshot_date = %(d)s) UNION ALL "
                    "(SELECT * FROM snapshots.{t} WHERE snapshot_date = %(d)s EXCEPT ALL "
                    "SELECT * FROM history.{t}(%(d)s))) x").format(t=sql.Identifier(table))
    return conn.execute(query, {"d": day}).fetchone()[0]


def random_days(rng: random.Random, count: int, start: dt.date) -> dict[dt.date, Day]:
    """``count`` consecutive daily snapshots: updates, inserts, deletes, keys coming back, NULLs,
    duplicate keyless rows, and a table that exists on some days only."""
    items = {i: (f"item {i}", rng.randint(0, 5), f"{rng.randint(1, 999)}.50") for i in range(12)}
    tags = [("red", 1.5), ("red", 1.5), ("blue", None), (None, 0.1)]
    gone: dict[int, tuple] = {}
    days = {}
    for n in range(count):
        for _ in range(rng.randint(0, 4)):
            action, key = rng.choice(["update", "insert", "delete", "back", "null"]), None
            if action in ("update", "delete", "null") and items:
                key = rng.choice(sorted(items))
            if action == "update" and key is not None:
                items[key] = (items[key][0], rng.randint(0, 5), items[key][2])
            elif action == "null" and key is not None:
                items[key] = (None, None, items[key][2]) if rng.random() < .5 else (
                    f"renamed {rng.randint(0, 3)}", items[key][1], None)
            elif action == "delete" and key is not None:
                gone[key] = items.pop(key)
            elif action == "back" and gone:  # a deleted key comes back, as it was or not
                key = rng.choice(sorted(gone))
                items[key] = gone.pop(key) if rng.random() < .5 else (f"again {key}", 1, None)
            elif action == "insert":
                items[max([*items, *gone, 0]) + 1] = (f"new {n}", rng.randint(0, 5), "1.00")
        for _ in range(rng.randint(0, 2)):
            if tags and rng.random() < .4:
                tags.pop(rng.randrange(len(tags)))
            else:
                tags.append(rng.choice([*tags, ("green", 2.0), ("red", 1.5), (None, None)]))
        day = {"items": [(k, *v) for k, v in sorted(items.items())], "tags": list(tags)}
        if n % 4 in (1, 2):
            day["notes"] = [(1, "always"), (2, f"note of day {n % 3}")]
        days[start + dt.timedelta(days=n)] = day
    return days


def fresh_warehouses(pg_socket):
    """Yield a factory of fresh empty databases on the session's server; drop them afterwards."""
    admin = {"host": str(pg_socket), "dbname": "postgres", "user": localdb.SUPERUSER}
    made, conns = [], []

    def make() -> psycopg.Connection:
        name = f"history_{id(made)}_{len(made)}"
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        conns.append(psycopg.connect(**{**admin, "dbname": name}))
        return conns[-1]

    yield make
    for conn in conns:
        conn.close()
    with psycopg.connect(**admin, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

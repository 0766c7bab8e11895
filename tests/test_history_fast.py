"""The history's fast paths give the history the general splice gives, only cheaper.

A table's first day is inserted straight from its partition (:func:`history.bulk_first_day`); a
day whose files are those of the content the history already holds for it, or for the loaded day
before it, is not spliced (:mod:`northwind_elt.history_stamps`). Each is compared, row for row and
in its catalog (keys, indexes, as-of functions), with the general path on the same loads.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from history_support import (
    TABLES,
    Day,
    as_of_differences,
    fresh_warehouses,
    history_digest,
    load_day,
    random_days,
)
from northwind_elt import history
from northwind_elt.arrow_io import sha256_of
from northwind_elt.pgtypes import Column, arrow_schema
from northwind_elt.warehouse_load import DayPartition, LoadOptions
from northwind_elt.warehouse_load import load_day as load_files

START = dt.date(2024, 1, 1)
D1, D2, D3, D4, D5, D6 = (START + dt.timedelta(days=n) for n in range(6))


@pytest.fixture
def warehouses(pg_socket):
    """A factory of fresh empty warehouses."""
    yield from fresh_warehouses(pg_socket)


def catalog(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """The history's keys, indexes, columns and as-of functions, as the catalog defines them."""
    return {
        "constraints": conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'history'::regnamespace ORDER BY 1, 2").fetchall(),
        "indexes": conn.execute("SELECT tablename, indexname, indexdef FROM pg_indexes "
                                "WHERE schemaname = 'history' ORDER BY 1, 2").fetchall(),
        "columns": conn.execute(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'history' ORDER BY 1, 2"
        ).fetchall(),
        "functions": conn.execute(
            "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
            "WHERE pronamespace = 'history'::regnamespace ORDER BY 1").fetchall(),
    }


def bulk_calls(monkeypatch) -> list[tuple[str, bool]]:
    """Record each table the bulk path inserts (and whether it built the key after the rows)."""
    calls: list[tuple[str, bool]] = []
    real = history.bulk_first_day

    def recorded(cur, plan, day, following, source, key_later):
        calls.append((plan.table, key_later))
        return real(cur, plan, day, following, source, key_later)

    monkeypatch.setattr(history, "bulk_first_day", recorded)
    return calls


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_the_bulk_first_day_gives_the_general_splices_history(warehouses, monkeypatch, seed):
    rng = random.Random(seed)
    days = random_days(rng, 8, START)
    late = list(days)
    # A middle day first, then days before it (out of order), a table's only day reloaded
    # without it (its history left empty, then filled in bulk again), the rest shuffled.
    rest = late[:4] + late[5:]
    rng.shuffle(rest)
    notes_day = next(d for d in late if "notes" in days[d])
    without_notes = {t: rows for t, rows in days[notes_day].items() if t != "notes"}
    order = [(late[4], days[late[4]]), (notes_day, days[notes_day]), (notes_day, without_notes),
             *((d, days[d]) for d in rest)]
    calls = bulk_calls(monkeypatch)
    bulk, general = warehouses(), warehouses()
    for day, tables in order:
        load_day(bulk, day, tables)
    monkeypatch.setattr(history, "BULK_FIRST_DAY", False)
    for day, tables in order:
        load_day(general, day, tables)

    assert {t for t, _ in calls} == {"items", "tags", "notes"}  # keyed and keyless
    assert ("notes", False) in calls  # the emptied history: its key kept, filled in bulk
    assert history_digest(bulk) == history_digest(general)
    assert catalog(bulk) == catalog(general)
    assert [c for c in catalog(bulk)["constraints"] if c[1] == "items_pkey"]
    for day in days:
        for table in ("items", "tags", "notes"):
            assert as_of_differences(bulk, table, day) == 0, (table, day)


def write_day(folder: Path, name: str, tables: Day, columns: dict[str, list[Column]] | None = None
              ) -> list[DayPartition]:
    """Each table's rows as a Parquet partition in ``folder`` (as an extract writes one)."""
    partitions = []
    for table, rows in tables.items():
        cols = (columns or {}).get(table) or TABLES[table][0]
        schema = arrow_schema(cols)
        values = [[Decimal(v) if pa.types.is_decimal(f.type) and v is not None else v
                   for v in (r[i] for r in rows)] for i, f in enumerate(schema)]
        path = folder / f"{name}-{table}.parquet"
        pq.write_table(pa.table(values, schema=schema), path)
        partitions.append(DayPartition(table, cols, TABLES[table][1], path, None,
                                       sha256_of(path)))
    return partitions


class Loads:
    """Real loads (:func:`northwind_elt.warehouse_load.load_day`) of files, with what they log."""

    def __init__(self, conn: psycopg.Connection, stamped: bool = True):
        self.conn, self.stamped, self.said = conn, stamped, []

    def load(self, day: dt.date, partitions: list[DayPartition], keep: int | None = None,
             with_history: bool = True) -> str:
        """Load ``partitions`` as ``day``; return the history's log line."""
        if not self.stamped:  # no file checksum: every table spliced
            partitions = [DayPartition(p.stream, p.columns, p.keys, p.file) for p in partitions]
        self.said.clear()
        load_files(self.conn, day, partitions, LoadOptions(keep, with_history),
                   log=lambda text, *args: self.said.append(text % args))
        return next((line for line in self.said if line.startswith("history:")), "")

    def stamps(self) -> set[tuple]:
        return set(self.conn.execute("SELECT table_name, snapshot_date, file_sha256 "
                                     "FROM northwind.history_stamps").fetchall())

    def versions(self) -> dict[str, str]:
        """The history's tables (not its days)."""
        return {t: d for t, d in history_digest(self.conn).items() if t.startswith("history.")}


def ctids(conn: psycopg.Connection) -> list:
    return conn.execute("SELECT array_agg(ctid ORDER BY ctid) FROM history.items").fetchone()[0]


def same_history(fast: Loads, slow: Loads, days: tuple[dt.date, ...]) -> None:
    """The stamped loads' history is the general path's, and each day's as-of its partition."""
    assert history_digest(fast.conn) == history_digest(slow.conn)
    assert catalog(fast.conn) == catalog(slow.conn)
    for day in days:
        for table in ("items", "tags", "notes"):
            if fast.conn.execute("SELECT count(*) FROM snapshots.items WHERE snapshot_date = %s",
                                 (day,)).fetchone()[0]:
                assert as_of_differences(fast.conn, table, day) == 0, (table, day)


NOT_SPLICED = "not spliced: items, notes, tags"


@pytest.fixture
def files(tmp_path) -> dict[str, list[DayPartition]]:
    """Day ``a``; ``b``, one row of items changed; ``wide``, a's rows with items.qty a bigint."""
    a = {**random_days(random.Random(41), 1, START)[START], "notes": [(1, "always"), (2, "n")]}
    first = a["items"][0]
    b = {**a, "items": [(first[0], first[1], 99, first[3]), *a["items"][1:]]}
    wide = [Column("qty", "bigint", "int8") if c.name == "qty" else c for c in TABLES["items"][0]]
    return {"a": write_day(tmp_path, "a", a), "b": write_day(tmp_path, "b", b),
            "wide": write_day(tmp_path, "wide", a, {"items": wide})}


def test_a_day_the_history_holds_is_not_spliced_and_a_changed_one_is(warehouses, files):
    a, b = files["a"], files["b"]
    sha = {(name, p.stream): p.sha256 for name in ("a", "b") for p in files[name]}
    fast, slow = Loads(warehouses()), Loads(warehouses(), stamped=False)
    steps = [(D2, a), (D2, a), (D3, a), (D4, b), (D1, a), (D3, b), (D6, a), (D5, a)]
    for day, partitions in steps:
        slow.load(day, partitions)

    assert "not spliced: none" in fast.load(D2, a)  # the first day: in bulk, stamped
    assert fast.stamps() == {(t, D2, sha["a", t]) for t in ("items", "notes", "tags")}
    before, first_ctids = fast.versions(), ctids(fast.conn)
    assert NOT_SPLICED in fast.load(D2, a)  # (a) a rerun with the same files
    assert NOT_SPLICED in fast.load(D3, a)  # (b) a new day equal to the history day before it
    assert fast.versions() == before and ctids(fast.conn) == first_ctids
    assert as_of_differences(fast.conn, "items", D3) == 0
    assert ("items", D3, sha["a", "items"]) in fast.stamps()
    line = fast.load(D4, b)  # one row changed: items spliced, the others not
    assert line.startswith("history: 1 keys or rows changed") and "spliced: notes, tags" in line
    assert "not spliced: none" in fast.load(D1, a)  # before every history day: spliced
    assert "not spliced: notes, tags" in fast.load(D3, b)  # a rerun with another items file
    assert ("items", D3, sha["b", "items"]) in fast.stamps()
    fast.load(D6, a)
    # New, equal to the history day after it (D6), not to the one before (D4): spliced.
    assert "not spliced: notes, tags" in fast.load(D5, a)
    same_history(fast, slow, (D1, D2, D3, D4, D5, D6))


def test_a_widened_type_takes_the_full_path(warehouses, files):
    fast, slow = Loads(warehouses()), Loads(warehouses(), stamped=False)
    steps = [(D1, files["a"]), (D2, files["wide"]), (D1, files["a"]), (D3, files["wide"])]
    lines = [fast.load(day, partitions) for day, partitions in steps]
    for day, partitions in steps:
        slow.load(day, partitions)
    # D1's file again, but items.qty is a bigint now: another stamp, the full path.
    assert "not spliced: notes, tags" in lines[1] and "not spliced: notes, tags" in lines[2]
    assert NOT_SPLICED in lines[3]  # D2's file and types: the history day before holds them
    assert fast.conn.execute("SELECT column_types FROM northwind.history_stamps WHERE "
                             "table_name = 'items' AND snapshot_date = %s", (D1,)
                             ).fetchone()[0].count('"bigint"') == 1
    same_history(fast, slow, (D1, D2, D3))


def test_stamps_stay_right_through_reset_history_off_and_no_partitions(warehouses, files):
    a, b = files["a"], files["b"]
    fast, slow = Loads(warehouses()), Loads(warehouses(), stamped=False)
    for loads in (fast, slow):
        loads.load(D1, a)
        loads.load(D2, b)
        loads.conn.execute("DROP TABLE history.items")  # a history reset by hand
        loads.conn.commit()
        loads.load(D2, b)  # items' history starts again, from D2 alone
    assert fast.conn.execute("SELECT count(*) FROM northwind.history_stamps "
                             "WHERE table_name = 'items'").fetchone() == (1,)
    assert "not spliced: notes, tags" in fast.load(D1, a)  # D1's items stamp went with the reset
    slow.load(D1, a)
    assert as_of_differences(fast.conn, "items", D1) == 0
    for loads in (fast, slow):  # history off for D3, on again for D4
        loads.load(D3, a, with_history=False)
        loads.load(D4, b)
    assert NOT_SPLICED in fast.said[-1]  # D4 = b, as D2, its history day before (D3 is none)
    assert as_of_differences(fast.conn, "items", D4) == 0
    same_history(fast, slow, (D1, D2, D4))

    fast, slow = Loads(warehouses()), Loads(warehouses(), stamped=False)
    lines = [fast.load(day, p, keep=0) for day, p in ((D1, a), (D2, a), (D3, b), (D2, a))]
    for day, p in ((D1, a), (D2, a), (D3, b)):
        slow.load(day, p)
    assert [NOT_SPLICED in line for line in lines] == [False, True, False, True]
    assert fast.conn.execute("SELECT count(*) FROM snapshots.items").fetchone() == (0,)
    assert {d for _, d, _ in fast.stamps()} == {D1, D2, D3}  # retention dropped no stamp
    assert history_digest(fast.conn) == history_digest(slow.conn)

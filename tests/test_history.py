"""The change-only history: any load order, reruns and retention give one history and its as-of."""

from __future__ import annotations

import datetime as dt
import random

import psycopg
import pytest
from history_support import (
    as_of_differences,
    fresh_warehouses,
    history_digest,
    load_day,
    random_days,
)
from northwind_elt import history_sql

START = dt.date(2024, 1, 1)


@pytest.mark.parametrize(("seed", "probe"), [(1, False), (2, True), (3, True)])
def test_any_load_order_with_reruns_gives_the_same_history(warehouses, monkeypatch, seed, probe):
    if probe:  # the splice's index-probing plan, which real loads take when under 5% changed
        monkeypatch.setattr(history_sql, "PROBE_SHARE", float("inf"))
    rng = random.Random(seed)
    days = random_days(rng, 9, START)
    in_order = warehouses()
    for day, tables in days.items():
        load_day(in_order, day, tables)
    expected = history_digest(in_order)
    for day in days:  # the as-of view of every day is that day's partition
        for table in ("items", "tags", "notes"):
            assert as_of_differences(in_order, table, day) == 0, (table, day)
    versions = in_order.execute("SELECT count(*) FROM history.items").fetchone()[0]
    assert versions < sum(len(t["items"]) for t in days.values())  # changes, not days

    wrong = random_days(random.Random(seed + 100), 9, START)
    for attempt in range(3):
        order = list(days)
        rng.shuffle(order)
        shuffled = warehouses()
        for day in order:
            if rng.random() < .3:  # loaded first with other data, reloaded right later
                load_day(shuffled, day, wrong[day])
                order.append(day)
            else:
                load_day(shuffled, day, days[day])
        for day in rng.sample(list(days), 3):  # reruns of the right data change nothing
            load_day(shuffled, day, days[day])
        assert history_digest(shuffled) == expected, f"order {attempt}: {order}"
        assert as_of_differences(shuffled, "tags", order[0]) == 0


def test_retention_keeps_the_history_and_a_failed_load_leaves_it(warehouses):
    days = random_days(random.Random(7), 6, START)
    full, kept = warehouses(), warehouses()
    for day, tables in days.items():
        load_day(full, day, tables)
    for day in [*list(days)[3:], *list(days)[:3]]:  # the old days arrive late
        load_day(kept, day, days[day], keep=1)
    assert kept.execute("SELECT count(*) FROM snapshots.items").fetchone()[0] == \
        len(days[max(days)]["items"])  # one full day left...
    assert history_digest(kept) == history_digest(full)  # ...and the whole history
    for day in days:
        assert kept.execute("SELECT count(*) FROM history.items(%s)", (day,)).fetchone()[0] == \
            len(days[day]["items"])
    before = history_digest(kept)
    with pytest.raises(psycopg.Error):
        load_day(kept, START, {"items": [(1, "x", 1, "1.00"), (1, "dup", 1, "1.00")]})
    kept.rollback()
    assert history_digest(kept) == before


def view_rows(conn: psycopg.Connection, table: str) -> list[str]:
    return sorted(r[0] for r in conn.execute(f"SELECT v::text FROM public.{table} v"))


@pytest.mark.parametrize("seed", [21, 22])
def test_keep_days_0_keeps_no_partition_and_views_read_the_history(warehouses, seed):
    rng = random.Random(seed)
    days = random_days(rng, 6, START)
    full, none = warehouses(), warehouses()
    for day, tables in days.items():
        load_day(full, day, tables)
    order = list(days)
    rng.shuffle(order)
    wrong = random_days(random.Random(seed + 100), 6, START)
    load_day(none, order[0], wrong[order[0]], keep=0)  # wrong data first, then reloaded
    for day in [*order, order[-1]]:
        load_day(none, day, days[day], keep=0)
    assert none.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'snapshot_days'"
                        ).fetchone() == (0,)
    assert history_digest(none) == history_digest(full)
    assert [d for (d,) in none.execute("SELECT snapshot_date FROM northwind.loads ORDER BY 1")
            ] == sorted(days)  # every day stays loaded: the history has it
    for table in ("items", "tags", "notes"):  # tags has no key: copies come back as rows
        assert view_rows(none, table) == view_rows(full, table), table
    assert "history" in none.execute(
        "SELECT pg_get_viewdef('public.tags'::regclass)").fetchone()[0]


def test_turning_history_on_keeps_the_days_the_warehouse_has(warehouses):
    days = random_days(random.Random(5), 5, START)
    later, always = warehouses(), warehouses()
    for n, (day, tables) in enumerate(days.items()):
        load_day(later, day, tables, with_history=n == 4)
        load_day(always, day, tables)
    assert history_digest(later) == history_digest(always)


def test_same_day_twice_and_unchanged_rows_write_nothing(warehouses):
    days = random_days(random.Random(11), 3, START)
    wh = warehouses()
    for day, tables in days.items():
        load_day(wh, day, tables)
    ctids = wh.execute("SELECT array_agg(ctid ORDER BY ctid) FROM history.items").fetchone()
    load_day(wh, START + dt.timedelta(days=1), days[START + dt.timedelta(days=1)])
    assert wh.execute("SELECT array_agg(ctid ORDER BY ctid) FROM history.items").fetchone() == ctids


@pytest.fixture
def warehouses(pg_socket):
    """A factory of fresh empty warehouses."""
    yield from fresh_warehouses(pg_socket)


def test_the_history_figures_run(warehouses):
    """scripts/bench_history.py at a tiny size: no timing asserted, the figures are printed."""
    from scripts import bench_history

    lines = bench_history.history_lines(warehouses(), 2000, 4)
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "storage", "load", "first day", "out of order", "as-of"]

"""Parallel load behind one swap: fresh tables filled on N connections, attached in one transaction.

target-pgcopy's ``load_connections`` (``NORTHWIND_LOAD_CONNECTIONS``) fills the day's fresh tables
on worker connections, each committing its own (``snapshot_days."<table>@<day>~filling"``); the
load's transaction attaches them and publishes the views. The warehouse equals a one-connection
load's; a failure anywhere (a worker's COPY, a killed process) leaves the warehouse as it was and
no fresh table behind, at once or at the next load.
"""

import datetime as dt
import os

import psycopg
import pytest
from northwind_elt import faults, steps
from northwind_elt.errors import SettingError
from northwind_elt.layout import DataTree
from northwind_elt.warehouse_load import LoadOptions, load_day
from pipeline import assert_ok, committed, output, run_step
from target_pgcopy.target import TargetPgCopy
from test_load_day import DAY1, DAY2, bench_warehouse, extract, target_config, warehouse_state

from scripts.bench.inprocess import day_partitions, load_in_process

__all__ = ["bench_warehouse"]  # the fixture, used by name

DAY3 = "2024-01-04"
FILLED_ON_3 = "filled on 3 connections"


def filling_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of any schema named as a worker's fresh table (``...@<day>~filling``)."""
    return [name for (name,) in conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE '%%~filling' "
        "ORDER BY 1").fetchall()]


def load(day: str, env: dict, connections: int, **extra: str):
    return run_step(steps.LOAD_WAREHOUSE, day,
                    {**env, "NORTHWIND_LOAD_CONNECTIONS": str(connections), **extra})


@pytest.mark.slow
def test_three_connections_load_what_one_does(databases, bench_warehouse, meltano_project):
    # The step on 3 connections, the in-process load on 1, the same days in the same order: a
    # first load (new snapshot tables), a next day, and a rerun of an older day.
    env, tree = databases.env, DataTree(databases.data_root)
    extract(DAY1, env)
    extract(DAY2, env)
    for day in (DAY1, DAY2, DAY1):
        result = load(day, env, 3)
        assert_ok(result)
        assert FILLED_ON_3 in output(result)
        date = dt.date.fromisoformat(day)
        load_in_process(bench_warehouse, tree, date, date, None)
        with databases.warehouse() as wh:
            assert warehouse_state(wh) == warehouse_state(bench_warehouse)
            assert filling_tables(wh) == []


def test_in_process_parallel_load_equals_one_connection(databases, bench_warehouse,
                                                        meltano_project):
    env, tree = databases.env, DataTree(databases.data_root)
    extract(DAY1, env)
    day = dt.date.fromisoformat(DAY1)
    logged = []
    with databases.warehouse() as wh:
        for date in (day, day + dt.timedelta(days=1)):
            load_day(wh, date, day_partitions(tree, day), LoadOptions(),
                     log=lambda *a: logged.append(a[0] % a[1:]),
                     connect=databases.warehouse, connections=3)
            load_in_process(bench_warehouse, tree, day, date, None)
            assert warehouse_state(wh) == warehouse_state(bench_warehouse)
        assert filling_tables(wh) == []
    assert any(FILLED_ON_3 in line for line in logged), logged


def corrupt(path: os.PathLike) -> bytes:
    """Overwrite the middle of a Parquet file (its footer, so its schema, stays readable)."""
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(len(data) // 4)
        f.write(b"\xff" * (len(data) // 4))
    return data


@pytest.mark.slow
def test_a_failed_worker_leaves_the_warehouse_as_it_was(databases, meltano_project):
    env, root = databases.env, databases.data_root
    extract(DAY1, env)
    assert_ok(load(DAY1, env, 3))
    with databases.warehouse() as wh:
        before = warehouse_state(wh)
    extract(DAY2, env)
    victim = committed(root, "postgres", DAY2, "orders.parquet")
    good = corrupt(victim)
    failed = load(DAY2, env, 3)
    assert failed.returncode != 0, output(failed)
    with databases.warehouse() as wh:
        assert warehouse_state(wh) == before  # the earlier day still published, nothing else
        assert filling_tables(wh) == []
    victim.write_bytes(good)
    assert_ok(load(DAY2, env, 3))
    with databases.warehouse() as wh:
        assert [r[0].isoformat() for r in warehouse_state(wh)["loads"]] == [DAY1, DAY2]
        assert filling_tables(wh) == []


@pytest.mark.slow
def test_fresh_tables_of_a_killed_load_are_dropped_by_the_next(databases, meltano_project):
    env = databases.env
    extract(DAY1, env)
    assert_ok(load(DAY1, env, 3))
    with databases.warehouse() as wh:
        before = warehouse_state(wh)
    extract(DAY2, env)
    killed = load(DAY2, env, 3, **{faults.KILL_AT_VARIABLE: "before-swap"})
    assert killed.returncode != 0
    with databases.warehouse() as wh:
        left = filling_tables(wh)
        # The workers committed; the process died before the swap: the day is not visible.
        assert left and all(name.startswith("snapshot_days.") for name in left), left
        state = warehouse_state(wh)
        assert {k: v for k, v in state.items() if not k.endswith("~filling")} == before
    result = load(DAY2, env, 1)  # the next load, on one connection, drops them
    assert_ok(result)
    assert "dropped the fresh tables an earlier attempt left" in output(result)
    with databases.warehouse() as wh:
        assert filling_tables(wh) == []
        assert [r[0].isoformat() for r in warehouse_state(wh)["loads"]] == [DAY1, DAY2]


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_load_connections_setting_is_one_line_naming_it(tmp_path, value):
    with pytest.raises(SettingError) as raised:
        TargetPgCopy(config=target_config(tmp_path, load_connections=value))
    assert str(raised.value) == (f"load_connections (NORTHWIND_LOAD_CONNECTIONS)={value!r} must "
                                 "be a whole number >= 1")
    assert TargetPgCopy(config=target_config(tmp_path, load_connections="4")).connections == 4
    assert TargetPgCopy(config=target_config(tmp_path)).connections >= 1

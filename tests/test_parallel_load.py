"""Parallel load behind one swap: fresh tables filled on N connections, attached in one transaction.

target-pgcopy's ``load_connections`` (``NORTHWIND_LOAD_CONNECTIONS``) fills the day's fresh tables
on worker connections, each committing its own (``snapshot_days."<table>@<day>~filling"``); the
load's transaction attaches them and publishes the views. The warehouse equals a one-connection
load's; a failure anywhere (a worker's COPY, a killed process) leaves the warehouse as it was and
no fresh table behind, at once or at the next load.
"""

import datetime as dt
import json
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from northwind_elt import faults, steps
from northwind_elt.arrow_io import sha256_of
from northwind_elt.errors import SettingError
from northwind_elt.layout import DataTree
from northwind_elt.warehouse_load import DayLoad, LoadOptions, load_day
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


def tamper(data: Path) -> dict[Path, bytes]:
    """Change one value of a partition and rewrite its manifest (size, SHA-256) to match.

    The tap passes it on, the COPY takes it, its worker's content digest check refuses it.
    Returns both files' bytes before.
    """
    manifest_path = data.with_name(data.name.replace(".parquet", ".manifest.json"))
    before = {data: data.read_bytes(), manifest_path: manifest_path.read_bytes()}
    table = pq.read_table(data)
    freight = table.column("freight").combine_chunks()
    changed = pa.concat_arrays([pc.add(freight[:1], pa.scalar(1, freight.type)).cast(freight.type),
                                freight[1:]])
    pq.write_table(table.set_column(table.schema.get_field_index("freight"),
                                    table.schema.field("freight"), changed), data)
    manifest = json.loads(manifest_path.read_text())
    manifest |= {"bytes": data.stat().st_size, "sha256": sha256_of(data)}
    manifest_path.write_text(json.dumps(manifest))
    return before


@pytest.mark.slow
def test_a_failed_worker_leaves_the_warehouse_as_it_was(databases, meltano_project):
    env, root = databases.env, databases.data_root
    extract(DAY1, env)
    assert_ok(load(DAY1, env, 3))
    with databases.warehouse() as wh:
        before = warehouse_state(wh)
    extract(DAY2, env)
    # One worker's table fails its content check, after the others may have committed theirs.
    good = tamper(committed(root, "postgres", "orders", DAY2, "orders.parquet"))
    failed = load(DAY2, env, 3)
    assert failed.returncode != 0
    assert "queued orders: orders.parquet to a load connection" in output(failed)
    assert "the load was rolled back: orders (loaded 830 rows" in output(failed)
    with databases.warehouse() as wh:
        assert warehouse_state(wh) == before  # the earlier day still published, nothing else
        assert filling_tables(wh) == []
    for path, data in good.items():
        path.write_bytes(data)
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


def test_record_batches_go_to_the_workers_too(databases, bench_warehouse, meltano_project):
    # Rows from RECORD messages (a stock tap's) are COPYed by the stream's worker, as files are.
    env, tree = databases.env, DataTree(databases.data_root)
    extract(DAY1, env)
    day = dt.date.fromisoformat(DAY1)
    partitions = day_partitions(tree, day)
    with databases.warehouse() as wh:
        load = DayLoad(wh, day, LoadOptions(), connect=databases.warehouse, connections=3)
        load.begin({p.stream: p.columns for p in partitions})
        for p in partitions:
            load.add_stream(p.stream, p.columns, p.keys)
            for batch in pq.read_table(p.file).to_batches(max_chunksize=200):
                load.copy_batch(p.stream, batch)
        assert all(load.parallel(p.stream) for p in partitions)
        assert load.settle() == {p.stream: pq.read_metadata(p.file).num_rows for p in partitions}
        load.finish({p.stream: p.digest for p in partitions if p.digest})
        load_in_process(bench_warehouse, tree, day, day, None)
        by_records, from_files = warehouse_state(wh), warehouse_state(bench_warehouse)
        # Rows from RECORD messages come from no file: no stamp of content (history_stamps).
        stamps = "northwind.history_stamps"
        assert by_records.pop(stamps).endswith(":0") and not from_files.pop(stamps).endswith(":0")
        assert by_records == from_files
        assert filling_tables(wh) == []

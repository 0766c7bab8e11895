"""Faults on a real server: a step killed mid-way, an unreachable source, two loads at once, a
partition changed after its extract. Each leaves the data tree and the warehouse as they were (or as
one clean run makes them), and says what went wrong.

A step is killed while it provably is mid-way: the test holds a table lock the step needs, waits
until the step's backend waits for it (with earlier tables already done), then sends SIGKILL to the
whole process group (Meltano, tap and target), as a node losing the pod would.
"""

import contextlib
import datetime as dt
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from northwind.meltano_local import run_folder_env
from northwind_elt import steps
from northwind_elt.errors import PartitionError, PrerequisiteError, SettingError
from northwind_elt.layout import DataTree
from northwind_elt.warehouse import LOAD_LOCK_KEY
from pipeline import (
    assert_ok,
    committed,
    committed_key,
    output,
    run_step,
    tree_digest,
    warehouse_digest,
)
from settings import MELTANO_PROJECT, ORDER_DETAILS_ROWS, SOURCE_ROWS
from tap_datatree.tap import TapDataTree
from target_pgcopy.target import TargetPgCopy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"


def start_step(step: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``meltano run <step>`` in its own process group, with its own Meltano system DB.

    Its own DB and run folder, like a pod's, so that steps running at once share neither
    Meltano's SQLite file nor its catalog.
    """
    own = log.parent / f"meltano-{uuid.uuid4().hex}"
    full = {**os.environ, **env, "RUN_DATE": DAY, "MELTANO_DATABASE_URI": f"sqlite:///{own}.db"}
    full |= run_folder_env(MELTANO_PROJECT, full, own)
    with open(log, "w") as handle:
        return subprocess.Popen(["meltano", "run", "--no-state-update", step], cwd=MELTANO_PROJECT,
                                env=full, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> tuple[int, str]:
    return process.wait(timeout=timeout), log.read_text()


def extract_day(env: dict[str, str], tmp_path: Path) -> None:
    """Both extracts of DAY, at once (as the DAG runs them)."""
    runs = {step: start_step(step, env, tmp_path / f"{step}.log")
            for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV)}
    for step, process in runs.items():
        code, text = finish(process, tmp_path / f"{step}.log")
        assert code == 0, f"{step} failed:\n{text[-5000:]}"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def backends(conn: psycopg.Connection, application: str) -> list[tuple[str, str, str]]:
    """(wait_event_type, wait_event, query) of every backend of ``application``."""
    return conn.execute("SELECT coalesce(wait_event_type, ''), coalesce(wait_event, ''), query "
                        "FROM pg_stat_activity WHERE application_name = %s",
                        (application,)).fetchall()


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def marker(root: Path, step: str) -> dict | None:
    path = root / "_status" / DAY / f"{step}.json"
    return json.loads(path.read_text()) if path.exists() else None


def partitions(root: Path) -> dict[str, str]:
    """Digest of every published partition: data files and manifests, byte for byte."""
    return tree_digest(root) | tree_digest(root, "**/*.manifest.json")


def contents(root: Path) -> dict[str, object]:
    """Every committed partition's data file digest and manifest, but for its extraction time."""
    manifests = {key: json.loads(p.read_text()) for p in root.glob("**/*.manifest.json")
                 if ".staging" not in p.parts
                 and (key := committed_key(root, p.relative_to(root))) is not None}
    for manifest in manifests.values():
        manifest.pop("extracted_at")
        manifest.pop("provenance")  # when and from which source snapshot: a rerun's own
    return tree_digest(root) | manifests


def test_sigkill_mid_load_and_mid_extract_leaves_everything_intact_and_a_rerun_heals(
        databases, tmp_path):
    env, root = databases.env, databases.data_root
    extract_day(env, tmp_path)
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY, env))
    files, published = partitions(root), contents(root)
    with databases.warehouse() as wh:
        loaded = warehouse_digest(wh)

    # Kill the load while it waits for snapshots.orders: six tables are already replaced in its
    # transaction by then.
    with databases.warehouse() as lock, databases.warehouse(autocommit=True) as watch:
        lock.execute("LOCK TABLE snapshots.orders IN ACCESS EXCLUSIVE MODE")
        load = start_step(steps.LOAD_WAREHOUSE, env, tmp_path / "killed-load.log")
        wait_for(lambda: any(kind == "Lock" and "orders" in query
                             for kind, _, query in backends(watch, "northwind-warehouse")),
                 "the load to wait for snapshots.orders")
        assert load.poll() is None
        kill_group(load)
        lock.rollback()
        wait_for(lambda: not backends(watch, "northwind-warehouse"),
                 "the killed load's backend to roll back")
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded
    assert marker(root, steps.LOAD_WAREHOUSE)["status"] in (steps.RUNNING, steps.FAILED)
    assert partitions(root) == files
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY, env))
    assert marker(root, steps.LOAD_WAREHOUSE)["status"] == steps.SUCCESS
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded

    # Kill the extract while it waits for the source's orders: it sizes every table before it
    # reads one (pg_relation_size takes the table's lock), so it waits there, its attempt begun.
    with databases.source() as lock, databases.source(autocommit=True) as watch:
        lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        # The day's extract succeeded: only reextract reads the source again.
        extract = start_step(steps.EXTRACT_POSTGRES, {**env, "NORTHWIND_REEXTRACT": "1"},
                             tmp_path / "killed-extract.log")
        wait_for(lambda: any(kind == "Lock" for kind, _, _ in backends(watch, "northwind-source")),
                 "the extract to wait for orders")
        assert extract.poll() is None
        kill_group(extract)
    assert partitions(root) == files
    assert marker(root, steps.EXTRACT_POSTGRES)["status"] in (steps.RUNNING, steps.FAILED)
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded
    # The day cannot be loaded from a killed extract ...
    with pytest.raises(PrerequisiteError, match="extract-postgres is dead"):
        steps.require_prerequisites(DataTree(root), steps.LOAD_WAREHOUSE,
                                    dt.date.fromisoformat(DAY))
    # ... until a rerun heals it, with the very same data.
    assert_ok(run_step(steps.EXTRACT_POSTGRES, DAY, env))
    assert marker(root, steps.EXTRACT_POSTGRES)["status"] == steps.SUCCESS
    assert contents(root) == published


def test_an_unreachable_source_fails_clearly_and_publishes_nothing(databases, tmp_path):
    env = {**databases.env, "SOURCE_PGHOST": str(tmp_path / "no-server-here")}
    result = run_step(steps.EXTRACT_POSTGRES, DAY, env)
    assert result.returncode != 0
    reason = f"cannot connect to the source database postgres@{tmp_path / 'no-server-here'}"
    assert reason in output(result)
    root = databases.data_root
    # A marker (and the target's lease, if it had started; work files); no data, no commit.
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".lease.json")
                  and ".staging" not in p.parts) == [
        f"_status/{DAY}/extract-postgres.json"]
    found = marker(root, steps.EXTRACT_POSTGRES)
    assert found["status"] == steps.FAILED and reason in found["error"]


def test_two_loads_of_a_day_at_once_end_as_one_load(databases, tmp_path):
    env = databases.env
    extract_day(env, tmp_path)
    # Hold the load lock so both loads are certainly running, and waiting, at the same time.
    with databases.warehouse(autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (LOAD_LOCK_KEY,))
        logs = [tmp_path / f"load-{n}.log" for n in (1, 2)]
        loads = [start_step(steps.LOAD_WAREHOUSE, env, log) for log in logs]
        wait_for(lambda: [e for _, e, _ in backends(lock, "northwind-warehouse")] == ["advisory"] * 2,
                 "both loads to wait for the load lock")
        lock.execute("SELECT pg_advisory_unlock(%s)", (LOAD_LOCK_KEY,))
    results = [finish(load, log) for load, log in zip(loads, logs, strict=True)]
    for code, text in results:
        assert code == 0, text[-5000:]
    assert marker(databases.data_root, steps.LOAD_WAREHOUSE)["status"] == steps.SUCCESS
    with databases.warehouse() as wh:
        expected = SOURCE_ROWS | {"order_details": ORDER_DETAILS_ROWS}
        for table, rows in expected.items():
            assert wh.execute(f'SELECT count(*) FROM snapshots."{table}"').fetchone() == (rows,)
            assert wh.execute(f'SELECT count(*) FROM public."{table}"').fetchone() == (rows,)
        (days,) = wh.execute("SELECT array_agg(snapshot_date::text) FROM northwind.loads").fetchone()
        assert days == [DAY]


def test_a_partition_changed_after_its_extract_is_refused_naming_the_file(databases, tmp_path):
    env, root = databases.env, databases.data_root
    extract_day(env, tmp_path)
    orders = committed(root, "postgres", "orders", DAY, "orders.parquet")
    intact = orders.read_bytes()

    # One flipped byte: same size, so only the checksum can tell. The step refuses.
    corrupt = bytearray(intact)
    corrupt[len(corrupt) // 2] ^= 0xFF
    orders.write_bytes(bytes(corrupt))
    changed = run_step(steps.LOAD_WAREHOUSE, DAY, env)
    assert changed.returncode != 0
    reason = f"partition file {orders} fails its checksum"
    assert reason in output(changed)
    found = marker(root, steps.LOAD_WAREHOUSE)
    assert found["status"] == steps.FAILED and reason in found["error"]
    with databases.warehouse() as wh:
        assert wh.execute("SELECT to_regnamespace('snapshots')").fetchone() == (None,)

    # Truncated: the load's tap refuses before it sends anything (in-process: same code, no 5 s).
    orders.write_bytes(intact[: len(intact) // 2])
    config = {"data_root": str(root), "run_date": DAY, "step": "load-warehouse"}
    with pytest.raises(PartitionError, match=re.escape(
            f"partition file {orders} has {len(intact) // 2} bytes, its manifest says "
            f"{len(intact)}: it was truncated")), contextlib.redirect_stdout(io.StringIO()):
        TapDataTree(config=config).sync_all()


def test_a_failed_rerun_records_its_own_reason(tmp_path):
    tree, day = DataTree(tmp_path), dt.date.fromisoformat(DAY)
    reasons = {"attempt-1": "partition orders.parquet fails its checksum",
               "attempt-2": "products.parquet is missing"}
    for attempt, reason in reasons.items():
        # The tap and the target of one attempt both begin; the tap fails first, then its
        # target reports the generic end of input: the tap's reason stays.
        steps.begin(tree, steps.LOAD_WAREHOUSE, day, attempt)
        steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, reason, attempt)
        steps.begin(tree, steps.LOAD_WAREHOUSE, day, attempt)
        steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, "the extractor ended", attempt)
        found = steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)
        assert (found.status, found.error, found.attempt) == (steps.FAILED, reason, attempt)


def test_a_tap_failure_overwritten_by_its_targets_late_begin_is_still_the_reason(tmp_path):
    """The target read no marker, the tap wrote its failure, the target then wrote ``running``."""
    tree, day = DataTree(tmp_path), dt.date.fromisoformat(DAY)
    reason = "partition file orders.parquet fails its checksum"
    steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, reason, "attempt-1")
    steps.mark_running(tree, steps.LOAD_WAREHOUSE, day, "attempt-1")  # the race's second write
    steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, "the extractor ended", "attempt-1")
    found = steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)
    assert (found.status, found.error) == (steps.FAILED, reason)
    # Another attempt's failure has its own note: it is not taken for this one's.
    steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, "products.parquet is missing",
                         "attempt-2")
    found = steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)
    assert (found.error, found.attempt) == ("products.parquet is missing", "attempt-2")


def test_the_tap_and_target_of_one_step_share_an_attempt_id_and_a_rerun_gets_a_new_one():
    probe = "from northwind_elt.steps import attempt_id; print(attempt_id())"
    run = [sys.executable, "-c", probe]
    # Two children of one shell (like a tap and a target of one `meltano run`) agree ...
    both = subprocess.run(["sh", "-c", f"{shlex.join(run)}; {shlex.join(run)}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert len(both) == 2 and both[0] == both[1]
    # ... and the next attempt (another parent) differs.
    again = subprocess.run(["sh", "-c", shlex.join(run)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert again[0] != both[0]


def test_an_unreachable_warehouse_fails_the_load_with_its_reason(tmp_path):
    """In-process: the loader's part of the step (its tap only replays files)."""
    tree = DataTree(tmp_path)
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV):
        steps.write_marker(tree, steps.StepMarker(step=step, run_date=DAY, status=steps.SUCCESS,
                                                  started_at=steps.now(), rows={"t": 0},
                                                  details={"streams": []}))
    config = {"host": str(tmp_path / "no-server-here"), "dbname": "warehouse", "user": "postgres",
              "data_root": str(tmp_path), "run_date": DAY}
    reason = f"cannot connect to the warehouse database postgres@{tmp_path / 'no-server-here'}"
    target = TargetPgCopy(config=config)  # settings only: nothing connects or is written yet
    assert marker(tmp_path, steps.LOAD_WAREHOUSE) is None
    with pytest.raises(SettingError, match=re.escape(reason)):
        target.listen(io.StringIO(""))
    found = marker(tmp_path, steps.LOAD_WAREHOUSE)
    assert found is not None and found["status"] == steps.FAILED and reason in found["error"]

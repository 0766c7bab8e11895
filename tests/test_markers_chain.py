"""Markers that tell a dead attempt from a live one, chain to what they read, and record a failure
even when no note can be kept. In-process, on a real data tree (and real processes for liveness)."""

import datetime as dt
import json
import socket
import subprocess
import sys
import time

import pytest
from northwind_elt import steps
from northwind_elt.commits import Commit, Superseded, read_commit, write_commit
from northwind_elt.layout import DataTree, new_attempt

DAY = dt.date(2024, 1, 2)


def running(tree: DataTree, step: str, attempt: str, started: str | None = None
            ) -> steps.StepMarker:
    marker = steps.StepMarker(step=step, run_date=DAY.isoformat(), status=steps.RUNNING,
                              started_at=started or steps.now(), attempt=attempt)
    steps.write_marker(tree, marker)
    return marker


def process_attempt(pid: int) -> str:
    """The attempt id a step whose parent is ``pid`` would have (see steps.attempt_id)."""
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{socket.gethostname()}:{pid}:{started}"


def test_a_running_marker_on_this_host_is_dead_once_its_process_is_gone(tmp_path):
    tree = DataTree(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = running(tree, steps.EXTRACT_CSV, process_attempt(child.pid))
        assert steps.state_of(tree, marker) == steps.RUNNING
    finally:
        child.kill()
        child.wait()
    assert steps.state_of(tree, marker) == steps.DEAD


def test_a_running_marker_of_another_host_lives_by_its_lease(tmp_path, monkeypatch):
    monkeypatch.setenv(steps.LEASE_VARIABLE, "2")
    tree = DataTree(tmp_path)
    attempt = "another-host:42:12345"
    marker = running(tree, steps.LOAD_WAREHOUSE, attempt)
    assert steps.state_of(tree, marker) == steps.RUNNING  # within a lease of its start
    heartbeat = steps.Heartbeat(tree, steps.LOAD_WAREHOUSE, DAY, attempt).start()
    first = json.loads(tree.lease_file(steps.LOAD_WAREHOUSE, DAY).read_text())["renewed_at"]
    time.sleep(3)  # longer than the lease: alive only because it was renewed meanwhile
    assert steps.state_of(tree, marker) == steps.RUNNING
    assert json.loads(tree.lease_file(steps.LOAD_WAREHOUSE, DAY).read_text())["renewed_at"] > first
    heartbeat.stop()
    assert steps.state_of(tree, marker, at=time.time() + 3) == steps.DEAD
    # Without any lease, a marker is dead a lease after its start.
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)).isoformat(timespec="seconds")
    assert steps.state_of(tree, running(tree, steps.EXTRACT_CSV, attempt, old)) == steps.DEAD


def test_the_next_attempt_takes_over_a_dead_one_and_removes_its_files(tmp_path):
    tree = DataTree(tmp_path)
    dead = new_attempt()
    (tmp_path / "csv" / DAY.isoformat() / dead).mkdir(parents=True)
    (tmp_path / "csv" / DAY.isoformat() / dead / ".order_details.parquet.x.tmp").write_bytes(b"x")
    running(tree, steps.EXTRACT_CSV, "another-host:1:1", "2024-01-01T00:00:00+00:00")
    marker, heartbeat = steps.start_attempt(tree, steps.EXTRACT_CSV, DAY)
    heartbeat.stop()
    assert marker.attempt == steps.attempt_id() and marker.commit > dead
    assert steps.read_marker(tree, steps.EXTRACT_CSV, DAY).commit == marker.commit
    assert list((tmp_path / "csv").rglob("*")) == []  # nothing of the dead attempt stays


def test_markers_chain_and_a_rerun_prerequisite_makes_its_dependents_stale(tmp_path):
    tree = DataTree(tmp_path)

    def succeed(step: str, commit: str) -> steps.StepMarker:
        inputs = {need: steps.read_marker(tree, need, DAY).commit
                  for need in steps.PREREQUISITES[step]}
        marker = steps.StepMarker(step=step, run_date=DAY.isoformat(), status=steps.SUCCESS,
                                  started_at=steps.now(), commit=commit, inputs=inputs)
        steps.write_marker(tree, marker)
        return marker

    for step in steps.STEPS:
        succeed(step, new_attempt())
    report = steps.read_marker(tree, steps.PUBLISH_REPORT, DAY)
    assert steps.stale_inputs(tree, report) == []
    succeed(steps.LOAD_WAREHOUSE, new_attempt())  # a newer load of the day
    assert steps.stale_inputs(tree, report) == [steps.LOAD_WAREHOUSE]
    running(tree, steps.EXTRACT_CSV, "another-host:1:1")  # an extract being rerun
    load = steps.read_marker(tree, steps.LOAD_WAREHOUSE, DAY)
    assert steps.stale_inputs(tree, load) == [steps.EXTRACT_CSV]


def test_a_failure_is_recorded_even_when_its_note_cannot_be_kept(tmp_path):
    tree = DataTree(tmp_path / "data")
    (tmp_path / "data").mkdir()
    tree.staging.write_bytes(b"")  # a file where the staging folder should be: no note fits
    steps.record_failure(tree, steps.EXTRACT_CSV, DAY, "order_details.csv: line 2: bad", "a-1")
    found = steps.read_marker(tree, steps.EXTRACT_CSV, DAY)
    assert (found.status, found.error) == (steps.FAILED, "order_details.csv: line 2: bad")


def test_an_earlier_attempt_never_replaces_a_later_commit(tmp_path):
    tree = DataTree(tmp_path)
    earlier, later = new_attempt(), new_attempt()
    write_commit(tree, Commit(steps.EXTRACT_CSV, DAY.isoformat(), later, steps.now()))
    with pytest.raises(Superseded, match=f"attempt {later} started later and committed first"):
        write_commit(tree, Commit(steps.EXTRACT_CSV, DAY.isoformat(), earlier, steps.now()))
    assert read_commit(tree, steps.EXTRACT_CSV, DAY).attempt == later

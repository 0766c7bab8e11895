"""``make run`` (scripts/run_local.py) run after run in one checkout state: what a user does.

Two runs of one day at once, a rerun, a failed task after an older success and a day before the
DAG's ``start_date``: real runs of the script, each with its embedded server, Airflow and data.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from settings import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
RUN_LOCAL = [sys.executable, str(ROOT / "scripts" / "run_local.py")]


@pytest.fixture
def local(tmp_path):
    """The environment of ``make run`` with its own state folder, data tree and CSV.

    The state folder is not under pytest's: the server's system user must reach it, and another
    pytest session on the machine may close ``/tmp/pytest-of-<user>`` to others meanwhile.
    """
    from northwind_elt import localdb

    state = Path(tempfile.mkdtemp(prefix="northwind-local-"))
    state.chmod(0o755)
    csv_copy = tmp_path / "order_details.csv"
    csv_copy.write_bytes((ROOT / "sources" / "order_details.csv").read_bytes())
    env = {**os.environ, "NORTHWIND_LOCAL_DIR": str(state / "local"),
           "NORTHWIND_DATA_ROOT": str(tmp_path / "data"), "ORDER_DETAILS_CSV": str(csv_copy)}
    env.pop("VERBOSE", None)
    try:
        yield env
    finally:
        localdb.stop_server(state / "local")
        shutil.rmtree(state, ignore_errors=True)


def start(env: dict[str, str], *arguments: str) -> subprocess.Popen:
    return subprocess.Popen([*RUN_LOCAL, *arguments], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run(env: dict[str, str], *arguments: str) -> tuple[int, str]:
    process = start(env, *arguments)
    out, _ = process.communicate(timeout=600)
    return process.returncode, out


def test_a_day_before_the_start_date_is_refused_in_one_line_and_nothing_runs(local):
    code, out = run(local, "--date=2023-12-31")

    assert code == 1
    assert out == ("run_local: 2023-12-31 is before the start_date of northwind_daily (2024-01-01): "
                   "there is no run of that day\n")
    assert not Path(local["NORTHWIND_DATA_ROOT"]).exists()
    assert not (Path(local["NORTHWIND_LOCAL_DIR"]) / "postgres").exists()  # no server started


def test_two_runs_of_a_day_at_once_take_turns_and_each_keeps_its_log(local):
    logs = Path(local["NORTHWIND_LOCAL_DIR"]) / "logs" / DAY
    first = start(local, f"--date={DAY}")
    # The first run holds the day once it printed its header and created its attempt folder.
    deadline = time.monotonic() + 120
    while not (logs.is_dir() and any(p.name != "latest" for p in logs.iterdir())):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    time.sleep(1)
    second = start(local, f"--date={DAY}")
    first_out, _ = first.communicate(timeout=600)
    second_out, _ = second.communicate(timeout=600)

    assert first.returncode == 0, first_out
    assert second.returncode == 0, second_out
    assert re.search(rf"^run_local: {DAY} is being run by another make run \(pid {first.pid}, "
                     r"since [\d:]+ UTC\); waiting for it to end$", second_out, re.M), second_out
    attempts = sorted(p for p in logs.iterdir() if p.name != "latest")
    assert len(attempts) == 2
    assert (logs / "latest").resolve() == attempts[1]
    for attempt in attempts:  # each attempt kept its own logs, none truncated by the other
        assert (attempt / "airflow.log").stat().st_size > 0
        for task in ("extract_csv", "extract_postgres", "load_warehouse", "publish_report"):
            assert "succeeded for RUN_DATE=2024-01-02" in (attempt / f"{task}.log").read_text()
    assert f"Logs: {attempts[0]}" in first_out and f"Logs: {attempts[1]}" in second_out


def test_a_failed_task_shows_no_rows_of_an_older_success(local):
    code, out = run(local, f"--date={DAY}")
    assert code == 0, out
    marker = Path(local["NORTHWIND_DATA_ROOT"]) / "_status" / DAY / "load-warehouse.json"
    loaded = json.loads(marker.read_text())
    assert loaded["status"] == "success" and sum(loaded["rows"].values()) == 3362
    Path(local["ORDER_DETAILS_CSV"]).write_text(
        "order_id,product_id,unit_price,quantity,discount\n10248,11,14,twelve,0\n")
    # The day's extract succeeded: reading the (now broken) CSV again is asked for.
    code, out = run(local, f"--date={DAY}", "--task=extract_csv", "--reextract")
    assert code == 1, out

    # The load refuses (its extract failed) and leaves its older success marker standing.
    code, out = run(local, f"--date={DAY}", "--task=load_warehouse")

    assert code == 1, out
    line = next(line for line in out.splitlines() if line.startswith("  load_warehouse"))
    assert "failed" in line and "rows" not in line, out
    assert json.loads(marker.read_text())["rows"] == loaded["rows"]  # the older marker stands
    assert "extract-csv is failed for 2024-01-02" in out


"""The DAG end to end in local mode: real Airflow (``northwind_local.day_run``), Meltano, PostgreSQL.

Each test gets fresh databases and a fresh data tree (``pipeline_env``); the DAG's tasks run their
step commands as local processes, exactly what ``make run`` does.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import csv
import datetime as dt
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dag_support import TASK_IDS, run_dag
from pipeline import committed, tree_digest, warehouse_digest
from settings import ORDER_DETAILS_ROWS, ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("meltano_project", "airflow_db"),
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    pytest.mark.filterwarnings("error::Warning:northwind"),
]

DAY, NEXT_DAY = "2024-01-02", "2024-01-03"
ALL_SUCCESS = dict.fromkeys(TASK_IDS, "success")


@pytest.fixture(scope="module")
def airflow_db():
    dag_support.migrate_metadata_db()


def loaded_days(databases) -> list[str]:
    with databases.warehouse() as conn:
        if conn.execute("SELECT to_regclass('northwind.loads')").fetchone()[0] is None:
            return []
        rows = conn.execute("SELECT snapshot_date::text FROM northwind.loads ORDER BY 1")
        return [day for (day,) in rows]


def marker_status(root, day: str) -> dict[str, str]:
    return {
        path.stem: json.loads(path.read_text())["status"]
        for path in sorted((root / "_status" / day).glob("*.json"))
        if not path.name.endswith(".lease.json")  # a running attempt's heartbeat
    }


def evidence(root):
    return tree_digest(root) | tree_digest(root, "reports/**/*")


def test_a_day_runs_end_to_end_a_rerun_keeps_it_and_reextract_reads_again(databases):
    root = databases.data_root

    first = run_dag(DAY, databases.env)

    assert (first.state, first.task_states) == ("success", ALL_SUCCESS)
    # The two extracts ran at the same time, as on a cluster (each starts before the other ends).
    csv_task, pg_task = first.outcomes["extract_csv"], first.outcomes["extract_postgres"]
    assert csv_task.start < pg_task.end and pg_task.start < csv_task.end
    load = first.outcomes["load_warehouse"]
    assert load.start >= max(csv_task.end, pg_task.end)
    report = committed(root, "reports", DAY, "orders_with_details.json").parent
    assert len(json.loads((report / "orders_with_details.json").read_text())) == ORDER_DETAILS_ROWS
    with open(report / "orders_with_details.csv", newline="") as file:
        assert len(list(csv.reader(file))) == ORDER_DETAILS_ROWS + 1  # and the header
    assert set(marker_status(root, DAY).values()) == {"success"}
    assert loaded_days(databases) == [DAY]
    files = evidence(root)
    with databases.warehouse() as conn:
        warehouse = warehouse_digest(conn)

    # The source changes after the day: a rerun keeps the day's extracts (its record) ...
    with databases.source(autocommit=True) as conn:
        conn.execute("UPDATE customers SET company_name = 'Renamed after the day'")
    second = run_dag(DAY, databases.env)

    assert (second.state, second.task_states) == ("success", ALL_SUCCESS)
    assert evidence(root) == files
    with databases.warehouse() as conn:
        assert warehouse_digest(conn) == warehouse
    assert loaded_days(databases) == [DAY]

    # ... unless the run's reextract param asks to read the sources again.
    third = run_dag(DAY, databases.env, conf={"reextract": True})
    assert (third.state, third.task_states) == ("success", ALL_SUCCESS)
    with databases.warehouse() as conn:
        assert conn.execute("SELECT DISTINCT company_name FROM customers").fetchall() == [
            ("Renamed after the day",)]


def test_two_consecutive_days_both_land(databases):
    root = databases.data_root

    runs = [run_dag(day, databases.env) for day in (DAY, NEXT_DAY)]

    assert [(run.state, run.task_states) for run in runs] == [("success", ALL_SUCCESS)] * 2
    assert loaded_days(databases) == [DAY, NEXT_DAY]
    for day in (DAY, NEXT_DAY):
        assert set(marker_status(root, day).values()) == {"success"}
        assert committed(root, "reports", day, "orders_with_details.csv").is_file()
        assert committed(root, "csv", day, "order_details.parquet").is_file()
        assert committed(root, "postgres", "orders", day, "orders.parquet").is_file()


def test_a_broken_csv_fails_its_extract_and_leaves_the_warehouse_unchanged(databases):
    source = databases.data_root.parent / "order_details.csv"
    assert str(source) == databases.env["ORDER_DETAILS_CSV"]
    lines = source.read_text().splitlines(keepends=True)
    fields = lines[3].rstrip("\n").split(",")
    fields[3] = "five"  # quantity is a smallint
    lines[3] = ",".join(fields) + "\n"
    source.write_text("".join(lines))
    with databases.warehouse() as conn:
        before = warehouse_digest(conn)

    run = run_dag(DAY, databases.env)

    assert run.state == "failed"
    assert run.outcomes["extract_csv"].error == (
        f"step extract-csv (RUN_DATE={DAY}): tap-csvtyped: {source}: line 4, column quantity: "
        "'five' is not an integer"
    )
    assert run.task_states == {
        "extract_postgres": "success",
        "extract_csv": "failed",
        "load_warehouse": "upstream_failed",
        "publish_report": "upstream_failed",
        "check_warehouse": "upstream_failed",
    }
    with databases.warehouse() as conn:
        assert warehouse_digest(conn) == before
    assert loaded_days(databases) == []
    assert marker_status(databases.data_root, DAY) == {
        "extract-postgres": "success",
        "extract-csv": "failed",
    }
    assert not (databases.data_root / "reports" / DAY).exists()


def test_make_run_prints_a_line_per_task_and_the_failed_steps_reason_and_log(tmp_path):
    """``scripts/run_local.py`` (``make run``) with its own embedded server, Airflow home, data."""
    from northwind_elt import localdb

    # Not under pytest's folder, which another pytest session may close to the server's user.
    state_dir = Path(tempfile.mkdtemp(prefix="northwind-local-")) / "local"
    state_dir.parent.chmod(0o755)
    broken = tmp_path / "order_details.csv"
    broken.write_text("order_id,product_id,unit_price,quantity,discount\n10248,11,14,twelve,0\n")
    env = {
        **os.environ,
        "NORTHWIND_LOCAL_DIR": str(state_dir),
        "NORTHWIND_DATA_ROOT": str(tmp_path / "data"),
        "ORDER_DETAILS_CSV": str(broken),
    }
    env.pop("VERBOSE", None)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_local.py"), "--date", DAY],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        localdb.stop_server(state_dir)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert len(output.splitlines()) < 30, output
    assert "Traceback" not in output
    reason = f"step extract-csv (RUN_DATE={DAY}): tap-csvtyped: {broken}: line 2, column quantity: "
    log = (state_dir / "logs" / DAY / "latest").resolve() / "extract_csv.log"
    assert re.search(r"^  extract_postgres\s+success\s+\S+ -> \S+\s+[\d.]+ s\s+1,207 rows$", output, re.M)
    assert re.search(
        rf"^  extract_csv\s+failed\s+.*\n    {re.escape(reason)}'twelve' is not an integer\n    log: {log}$",
        output,
        re.M,
    ), output
    assert (
        "northwind_daily 2024-01-02 failed: extract_csv failed, "
        "load_warehouse upstream_failed, publish_report upstream_failed"
    ) in output
    report = tmp_path / "data" / "reports" / DAY
    assert f"{report / 'orders_with_details.csv'}  (missing)" in output
    # The step's own output is in its log: the plugin's one line, no traceback from the plugins.
    step_lines = [line for line in log.read_text().splitlines() if "tap-csvtyped" in line]
    assert any("tap-csvtyped: error: " in line for line in step_lines)
    assert not any("Traceback" in line for line in step_lines)
    assert (state_dir / "airflow" / "airflow.db").is_file()
    shutil.rmtree(state_dir.parent)  # kept for a look when an assertion fails


def test_a_manual_run_without_logical_date_processes_the_day_it_was_queued_for(databases):
    before = dt.datetime.now(dt.UTC).date().isoformat()

    run = run_dag(None, databases.env, only="extract_csv")

    after = dt.datetime.now(dt.UTC).date().isoformat()
    assert run.task_states["extract_csv"] == "success"
    # The task's process was forked from frozen objects (Airflow, the DAG, the execution API):
    # collections skip them, in the child and at the runner's exit; and collections run again.
    assert gc.get_freeze_count() > 100_000 and gc.isenabled()
    days = [path.name for path in (databases.data_root / "_status").iterdir()]
    assert len(days) == 1 and days[0] in {before, after}
    assert marker_status(databases.data_root, days[0]) == {"extract-csv": "success"}


def test_the_date_param_chooses_the_day_of_a_manual_run(databases):
    run = run_dag(None, databases.env, conf={"date": "2024-02-29"}, only="extract_csv")

    assert run.task_states["extract_csv"] == "success"
    assert marker_status(databases.data_root, "2024-02-29") == {"extract-csv": "success"}
    assert committed(databases.data_root, "csv", "2024-02-29", "order_details.parquet").is_file()


def test_the_execution_api_is_routed_before_the_fork_and_leaves_no_thread_behind():
    """Each task process inherits the built routes (seconds of CPU each paid on its first call)."""
    import threading

    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from northwind_local.execution_api import build_execution_api

    threads = set(threading.enumerate())
    build_execution_api()

    paths = {getattr(route, "path", None) for route in in_process_api_server().app.routes}
    assert "/task-instances/{task_instance_id}/run" in paths
    assert set(threading.enumerate()) == threads  # a thread would not cross the fork

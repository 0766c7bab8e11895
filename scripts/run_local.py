"""Run the ``northwind_daily`` DAG for one day on this machine: what ``make run DATE=...`` does.

No cluster: the DAG's tasks run their Meltano step commands as local processes
(``NORTHWIND_RUNTIME=local``) against the embedded PostgreSQL of ``.local/postgres``. Airflow keeps
its metadata in ``.local/airflow``. The script ends with where the evidence files are and one line
per task; it exits non-zero, naming the failed tasks, when the run fails.

Usage::

    uv run python scripts/run_local.py [--date YYYY-MM-DD] [--task TASK_ID]

``--task`` reruns one task of the day: the other tasks are marked done without running (the step
itself still refuses to run unless the markers of its prerequisites say ``success``).
"""

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DAG_ID = "northwind_daily"
DAGS_FOLDER = REPOSITORY / "dags"
NOT_RUN = "not run (--task)"
DONE = ("success", NOT_RUN)
REPORT_FILES = ("orders_with_details.csv", "orders_with_details.json")


def parse_date(value: str) -> dt.date:
    """Return the day of ``value`` (``YYYY-MM-DD``) or raise an argparse error naming it."""
    try:
        if len(value) != 10:
            raise ValueError("expected YYYY-MM-DD")
        return dt.date.fromisoformat(value)
    except ValueError as error:
        message = f"DATE={value!r} is not a day (YYYY-MM-DD): {error}"
        raise argparse.ArgumentTypeError(message) from None


def local_environment(state_dir: Path) -> dict[str, str]:
    """Start or reuse the embedded PostgreSQL; return every setting the run needs.

    Settings already in the environment win for the data tree and the CSV, so
    ``NORTHWIND_DATA_ROOT=/tmp/x make run`` works; the runtime and Airflow's home are fixed.
    """
    from northwind_elt.localdb import ensure_local_databases

    databases = ensure_local_databases(state_dir, REPOSITORY / "sources" / "northwind.sql")
    return {
        "NORTHWIND_DATA_ROOT": os.environ.get("NORTHWIND_DATA_ROOT") or str(REPOSITORY / "data"),
        "ORDER_DETAILS_CSV": os.environ.get("ORDER_DETAILS_CSV")
        or str(REPOSITORY / "sources" / "order_details.csv"),
        **databases,
        "NORTHWIND_RUNTIME": "local",
        # Airflow is private to this checkout: its home and metadata DB never come from the shell.
        "AIRFLOW_HOME": str(state_dir / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{state_dir / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def run_dag(day: dt.date, only: str | None = None) -> tuple[str, dict[str, str]]:
    """Migrate Airflow's metadata DB, run the DAG for ``day``; return run and task states.

    Airflow reads its settings when first imported, so this runs after the environment is set.

    Args:
        day: The run's logical date.
        only: Run just this task; the others are marked success without running.
    """
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.upgradedb()  # idempotent: a no-op when the schema is current
    bag = BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name="dags-folder")
    if bag.import_errors or DAG_ID not in bag.dags:
        errors = "\n".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise SystemExit(f"run_local: {DAG_ID} does not parse:\n{errors}")
    logical_date = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    dag = bag.dags[DAG_ID]
    # Locally a failure is final: retries with backoff are for pods on a cluster, and dag.test()
    # would sit out every retry delay before reporting.
    for task in dag.tasks:
        task.retries = 0
    skipped = None
    if only is not None:
        if only not in dag.task_ids:
            raise SystemExit(f"run_local: --task {only!r} is not one of {', '.join(dag.task_ids)}")
        skipped = "|".join(re.escape(task) for task in dag.task_ids if task != only)
    run = dag.test(logical_date=logical_date, mark_success_pattern=skipped)
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
    # In the DAG's order (extracts, load, report), not the database's.
    tasks = {task_id: states.get(task_id, "none") for task_id in dag.task_ids}
    if only is None:
        return str(run.state), tasks
    return tasks[only], {task: tasks[task] if task == only else NOT_RUN for task in tasks}


def print_summary(day: dt.date, env: dict[str, str], state: str, tasks: dict[str, str]) -> None:
    """Print the evidence files, the Airflow task states and the step markers of ``day``."""
    root = Path(env["NORTHWIND_DATA_ROOT"])
    reports = root / "reports" / day.isoformat()
    print(f"\n=== {DAG_ID} {day}: {state} ===")
    print("Airflow tasks:")
    for task_id, task_state in tasks.items():
        print(f"  {task_id:<18}{task_state}")
    print("Evidence:")
    for name in REPORT_FILES:
        path = reports / name
        print(f"  {path}" + ("" if path.is_file() else "  (missing)"))
    print(f"Step markers ({root / '_status' / day.isoformat()}):")
    status = subprocess.run(
        ["northwind", "--data-root", str(root), "status", "--date", day.isoformat()],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (status.stdout + status.stderr).splitlines():
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    """Run the DAG for the requested day; return 0 on success, 1 naming the failed tasks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    today = dt.datetime.now(dt.UTC).date()
    parser.add_argument("--date", type=parse_date, default=today, help="the day (default: today, UTC)")
    parser.add_argument("--task", help="rerun only this task id of the day (e.g. load_warehouse)")
    args = parser.parse_args(argv)
    state_dir = Path(os.environ.get("NORTHWIND_LOCAL_DIR") or REPOSITORY / ".local")
    env = local_environment(state_dir)
    os.environ.update(env)
    print(f"run_local: {DAG_ID} for {args.date} (Airflow home {env['AIRFLOW_HOME']})", flush=True)
    state, tasks = run_dag(args.date, args.task)
    print_summary(args.date, env, state, tasks)
    failed = [task for task, task_state in tasks.items() if task_state not in DONE]
    if state != "success" or failed:
        print(
            f"run_local: {DAG_ID} {args.date} failed: "
            + ", ".join(f"{task} {tasks[task]}" for task in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the ``northwind_daily`` DAG for one day on this machine: what ``make run DATE=...`` does.

No cluster: the DAG's tasks run their Meltano step commands as local processes
(``NORTHWIND_RUNTIME=local``) against the embedded PostgreSQL of ``.local/postgres``; tasks whose
upstreams are done run at the same time (both extracts), as on a cluster. Airflow keeps its
metadata in ``.local/airflow``.

The console gets one line per task (start, end, duration, the rows its step wrote in this run,
and for a failure its step, its one-line reason and its log), then the evidence files. Everything
else (Airflow's own lines, each step's output) goes to log files under
``.local/logs/<date>/<attempt>/`` (``latest`` is the newest attempt); ``VERBOSE=1`` prints it all
instead. The script exits non-zero, naming the failed tasks, when the run fails. Two runs of one
day never overlap: the second waits for the first (:mod:`northwind_local.attempts`). A day before the DAG's
``start_date`` is refused: Airflow would call such a run a success with nothing run.

Usage::

    uv run python scripts/run_local.py [--date YYYY-MM-DD] [--task TASK_ID]

``--task`` reruns one task of the day: the other tasks are marked done without running (the step
itself still refuses to run unless the markers of its prerequisites say ``success``).
"""

import argparse
import datetime as dt
import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TextIO

from northwind_local.attempts import airflow_db_lock, attempt_log_dir, day_lock
from northwind_local.settings import DAG_ID, DAGS_FOLDER, airflow_settings, local_environment, state_dir
from northwind_local.task_process import redirect_output

NOT_RUN = "not run (--task)"
DONE = ("success", NOT_RUN)
#: Airflow's own lines of a run (parsing, scheduling), beside one ``<task_id>.log`` per task.
AIRFLOW_LOG = "airflow.log"


def parse_date(value: str) -> dt.date:
    """Return the day of ``value`` (``YYYY-MM-DD``) or raise a SystemExit naming it in one line."""
    try:
        if len(value) != 10:
            raise ValueError("expected YYYY-MM-DD")
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise SystemExit(f"run_local: DATE={value!r} is not a day (YYYY-MM-DD): {error}") from None


def open_console(log_dir: Path | None) -> TextIO:
    """Return the stream for our own lines; send everything else printed later to ``log_dir``.

    With ``log_dir`` None (``VERBOSE=1``) nothing is redirected.
    """
    if log_dir is None:
        return sys.stdout
    console = os.fdopen(os.dup(1), "w", buffering=1)
    log_dir.mkdir(parents=True, exist_ok=True)
    redirect_output(log_dir / AIRFLOW_LOG)
    return console


def migrate_once(airflow_home: Path) -> None:
    """Create or upgrade Airflow's metadata DB once per Airflow version (a check costs seconds).

    The stamp lives beside the SQLite file, so removing ``.local`` starts over.
    """
    import airflow
    from airflow.utils import db

    stamp = airflow_home / ".migrated"
    if stamp.is_file() and stamp.read_text() == airflow.__version__:
        return
    db.upgradedb()
    stamp.write_text(airflow.__version__)


def step_rows(env: dict[str, str], step: str | None, day: dt.date, outcome) -> int | None:
    """Rows the step's marker reports for ``day``, if this very task run wrote it as a success.

    A failed task may have left an older attempt's marker standing (a load refused for a missing
    extract does not touch it): its rows are not this run's.
    """
    from northwind_elt.layout import DataTree
    from northwind_elt.steps import SUCCESS, read_marker

    if step is None or outcome.state != "success" or outcome.start is None:
        return None
    marker = read_marker(DataTree(Path(env["NORTHWIND_DATA_ROOT"]).resolve()), step, day)
    if marker is None or marker.status != SUCCESS or not marker.rows or not marker.finished_at:
        return None
    # Markers keep whole seconds.
    if dt.datetime.fromisoformat(marker.finished_at) < outcome.start.replace(microsecond=0):
        return None
    return sum(marker.rows.values())


def task_line(outcome, rows: int | None, unit: str = "rows") -> str:
    """One line of a finished task: state, start, end, duration, rows or checks; a failure's reason."""
    clock = "%H:%M:%S"
    times = (
        f"{outcome.start:{clock}} -> {outcome.end:{clock}} {outcome.seconds:5.1f} s"
        if outcome.start and outcome.end
        else " " * 26
    )
    line = f"  {outcome.task_id:<18}{outcome.state:<16}{times}"
    if rows is not None:
        line += f" {rows:>7,} {unit}"
    if outcome.state not in DONE and outcome.error:
        line += f"\n    {outcome.error}"  # names the step, the date and the reason
    if outcome.state not in DONE and outcome.log is not None:
        line += f"\n    log: {outcome.log}"
    return line


def parse_dag(day: dt.date, only: str | None):
    """Parse the DAG folder; return the bag, the DAG and the tasks to skip (``--task``).

    Refuses, with a SystemExit of one line, a DAG that does not parse, an unknown ``--task`` and
    a day outside the DAG's dates (Airflow would report such a run ``success`` with nothing run).
    Airflow reads its settings when first imported: call this after they are in the environment.
    """
    from airflow.dag_processing.dagbag import BundleDagBag
    from northwind_elt.errors import single_line

    if str(DAGS_FOLDER) not in sys.path:
        sys.path.append(str(DAGS_FOLDER))  # as the DAG processor does: the DAG's own helpers
    bag = BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name="dags-folder")
    if bag.import_errors or DAG_ID not in bag.dags:
        errors = " | ".join(f"{path}: {single_line(str(error))}"
                            for path, error in bag.import_errors.items())
        raise SystemExit(f"run_local: {DAG_ID} does not parse: {errors}")
    dag = bag.dags[DAG_ID]
    if dag.start_date is not None and day < dag.start_date.date():
        raise SystemExit(f"run_local: {day} is before the start_date of {DAG_ID} "
                         f"({dag.start_date.date()}): there is no run of that day")
    if dag.end_date is not None and day > dag.end_date.date():
        raise SystemExit(f"run_local: {day} is after the end_date of {DAG_ID} "
                         f"({dag.end_date.date()}): there is no run of that day")
    # Locally a failure is final: retries with backoff are for pods on a cluster.
    for task in dag.tasks:
        task.retries = 0
    skip = ()
    if only is not None:
        if only not in dag.task_ids:
            raise SystemExit(f"run_local: --task {only!r} is not one of {', '.join(dag.task_ids)}")
        skip = [task for task in dag.task_ids if task != only]
    return bag, dag, skip


def run_dag(
    day: dt.date, dag_parts, env: dict[str, str], console: TextIO, log_dir: Path | None,
    only: str | None = None, reextract: bool = False,
) -> tuple[str, dict[str, str]]:
    """Run the DAG for ``day``, one console line per task as it ends; return run and task states.

    Args:
        day: The run's logical date.
        dag_parts: What :func:`parse_dag` returned.
        env: The run's settings (data root for the markers).
        console: Where the task lines go.
        log_dir: Where each task's log goes; None keeps everything on the console.
        only: Run just this task; the others are marked success without running.
        reextract: The run's ``reextract`` param: read the sources again for a day whose
            extracts already succeeded (they are kept otherwise).
    """
    from northwind_elt.step_names import CHECK_WAREHOUSE
    from northwind_local.day_run import run_day

    bag, dag, skip = dag_parts

    def report(outcome) -> None:
        if outcome.task_id in skip:
            return
        step = getattr(dag.task_dict[outcome.task_id], "step", None)
        # The checks step counts checks, not rows (its marker: passed, warned, failed).
        unit = "checks" if step == CHECK_WAREHOUSE else "rows"
        print(task_line(outcome, step_rows(env, step, day, outcome), unit), file=console, flush=True)

    logical_date = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    state, outcomes = run_day(bag, DAG_ID, logical_date=logical_date, log_dir=log_dir, skip=skip,
                              on_finish=report, run_conf={"reextract": reextract})
    tasks = {task_id: outcome.state for task_id, outcome in outcomes.items()}
    if only is None:
        return state, tasks
    return tasks[only], {task: tasks[task] if task == only else NOT_RUN for task in tasks}


def print_summary(
    day: dt.date, env: dict[str, str], state: str, seconds: float, log_dir: Path | None, console: TextIO
) -> None:
    """Print the run's state, the evidence files and where the markers and logs are."""
    from northwind_elt.commits import committed_files
    from northwind_elt.layout import REPORT_FILES, REPORTS, STATUS, DataTree
    from northwind_elt.steps import PUBLISH_REPORT

    root = Path(env["NORTHWIND_DATA_ROOT"])
    lines = [f"=== {DAG_ID} {day}: {state} ({seconds:.1f} s) ===", "Evidence:"]
    # The current attempt's files, as its commit names them.
    current = committed_files(DataTree(root.resolve()), PUBLISH_REPORT, day)
    for name in REPORT_FILES:
        found = [path for path in current if path.name == name]
        path = found[0] if found else root / REPORTS / day.isoformat() / name
        lines.append(f"  {path}" + ("" if found else "  (missing)"))
    lines.append(f"Step markers: {root / STATUS / day.isoformat()}  (make status)")
    if log_dir is not None:
        lines.append(f"Logs: {log_dir}  ({AIRFLOW_LOG} and <task>.log; VERBOSE=1 prints them)")
    print("\n".join(lines), file=console, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the DAG for the requested day; return 0 on success, 1 naming the failed tasks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    today = dt.datetime.now(dt.UTC).date()
    parser.add_argument("--date", default=today.isoformat(), help="the day (default: today, UTC)")
    parser.add_argument("--task", help="rerun only this task id of the day (e.g. load_warehouse)")
    parser.add_argument("--reextract", action="store_true",
                        help="read the sources again for a day whose extracts already succeeded")
    args = parser.parse_args(argv)
    # Start-up only adds objects that live to the end (Airflow, the DAG, the execution API):
    # collections would walk them again and again (0.5-1 s of CPU). The runner re-enables them
    # when it freezes those objects, before the first task process.
    gc.disable()
    # Checked here, not by argparse: one line (no usage text), before anything starts.
    args.date = parse_date(args.date)
    started = time.monotonic()
    local_dir = state_dir()
    verbose = os.environ.get("VERBOSE", "") not in ("", "0")
    try:
        log_dir = None if verbose else attempt_log_dir(local_dir / "logs", args.date)
        console = open_console(log_dir)
    except OSError as error:  # a full disk or a read-only checkout: nothing has started yet
        from northwind_elt.errors import one_line

        print(f"run_local: cannot write the logs of {args.date} under {local_dir / 'logs'}: "
              f"{one_line(error)}", file=sys.stderr)
        return 1
    try:
        os.environ.update(airflow_settings(local_dir))
        dag_parts = parse_dag(args.date, args.task)
        print(f"run_local: {DAG_ID} for {args.date}", file=console, flush=True)
        with day_lock(local_dir, args.date, console):
            env = local_environment(local_dir)
            os.environ.update(env)
            with airflow_db_lock(local_dir, console):
                migrate_once(Path(env["AIRFLOW_HOME"]))
            state, tasks = run_dag(args.date, dag_parts, env, console, log_dir, args.task,
                                   args.reextract)
    except KeyboardInterrupt:
        print(f"run_local: {DAG_ID} {args.date} interrupted", file=console, flush=True)
        return 130
    except SystemExit as stop:  # our own refusal (a DAG that does not parse, an unknown --task)
        print(stop.code, file=console, flush=True)
        return 1
    except Exception as error:
        # A failure of the local server or of Airflow itself, around the tasks: its traceback is logged.
        traceback.print_exc()
        where = f"; details in {log_dir / AIRFLOW_LOG}" if log_dir is not None else ""
        from northwind_elt.errors import single_line

        reason = single_line(str(error)) or type(error).__name__
        print(f"run_local: {DAG_ID} {args.date} could not run: {reason}{where}", file=console,
              flush=True)
        return 1
    print_summary(args.date, env, state, time.monotonic() - started, log_dir, console)
    failed = [task for task, task_state in tasks.items() if task_state not in DONE]
    if state != "success" or failed:
        print(
            f"run_local: {DAG_ID} {args.date} failed: "
            + ", ".join(f"{task} {tasks[task]}" for task in failed),
            file=console,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

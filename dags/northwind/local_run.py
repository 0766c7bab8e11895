"""Run one day of a DAG on this machine with ready tasks in parallel: the engine of ``make run``.

``dag.test()`` runs one task after the other, but on a cluster the two extracts run at the same
time. This runner keeps the bookkeeping of ``dag.test()`` (a real DagRun and task instances in the
metadata DB, dependencies decided by ``DagRun.update_state``, each task run by Airflow's own
in-process task runner) and forks one process per ready task, as a LocalExecutor would, so
independent tasks overlap. Each task's output (Airflow's and its step's) goes to its own log file.

The caller configures Airflow (home, metadata DB) before importing this module's functions' Airflow
imports, i.e. before calling :func:`run_day`.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

#: A task id becomes a log file name only if it is a plain identifier (Airflow allows dots too).
SAFE_TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class TaskOutcome:
    """How one task of the run ended."""

    task_id: str
    state: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    #: The one-line reason of a failure (the task's exception message), else None.
    error: str | None = None
    #: The task's log file; None for a task that did not run here.
    log: Path | None = None

    @property
    def seconds(self) -> float | None:
        """How long the task ran."""
        return (self.end - self.start).total_seconds() if self.start and self.end else None


def task_log_path(log_dir: Path, task_id: str) -> Path:
    """Return ``<log_dir>/<task_id>.log``, refusing a task id that is not a plain file name."""
    if not SAFE_TASK_ID.fullmatch(task_id):
        raise ValueError(f"task id {task_id!r} cannot name a log file")
    return log_dir / f"{task_id}.log"


def _redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr (and its children's) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _run_in_child(ti, task, log: Path | None, results: Connection) -> None:
    """Run one task instance with Airflow's in-process runner; send back its error line."""
    from airflow import settings
    from airflow.sdk.definitions.dag import _run_task

    if log is not None:
        _redirect_output(log)
    # The parent's pooled connections are not ours to use (the parent closed them before the fork).
    settings.engine.dispose(close=False)
    result = _run_task(ti=ti, task=task)
    error = result.error if result is not None else None
    results.send(" ".join(str(error).split()) if error is not None else None)
    results.close()


def run_day(
    bag,
    dag_id: str,
    *,
    logical_date: dt.datetime | None,
    run_conf: dict | None = None,
    log_dir: Path | None = None,
    skip: Iterable[str] = (),
    on_finish: Callable[[TaskOutcome], None] | None = None,
) -> tuple[str, dict[str, TaskOutcome]]:
    """Create (or reset) the DagRun of ``logical_date`` and run it to the end, ready tasks in parallel.

    Args:
        bag: The DagBag of the DAG folder (parsed once; its DAGs are stored for the task API).
        dag_id: The DAG to run.
        logical_date: The run's logical date; None for a manual run without one.
        run_conf: The run's conf (its params).
        log_dir: Where each task's log goes (``<task_id>.log``); None keeps output on the console.
        skip: Task ids to mark ``success`` without running (rerun of one task).
        on_finish: Called with each task's outcome as soon as the task ends.

    Returns:
        The run's state and every task's outcome, in the DAG's task order.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag = bag.dags[dag_id]
    skip = set(skip)
    session = settings.Session()
    dag.validate()
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = dt.datetime.now(dt.UTC)
    if logical_date is not None:
        # A rerun of a day starts from scratch, as dag.test() does.
        SerializedDAG.clear_dags(
            dags=[scheduler_dag], start_date=logical_date, end_date=logical_date, dag_run_state=False
        )
        interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=logical_date)
    else:
        interval = None
    _sync_bag_to_db(bag, dag)
    # As the scheduler does: the stored DAG, whose deadline alerts are rows (ids) of the DB.
    scheduler_dag = SerializedDagModel.get_dag(dag_id, session=session) or scheduler_dag
    run = get_or_create_dagrun(
        dag=scheduler_dag,
        start_date=logical_date or now,
        logical_date=logical_date,
        data_interval=interval,
        run_after=now,
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=logical_date, run_after=now),
        session=session,
        conf=run_conf,
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="make run",
    )
    # Build the in-process execution API once, here: every forked task process inherits it.
    # (Its transport starts a thread, so that part is left to each child.)
    from airflow.sdk.execution_time import task_runner  # noqa: F401 - imported once, before forks
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    _ = in_process_api_server().app
    fork = multiprocessing.get_context("fork")
    running: dict[int, tuple[str, multiprocessing.process.BaseProcess, Connection]] = {}
    errors: dict[str, str | None] = {}
    logs: dict[str, Path] = {}
    reported: set[str] = set()
    outcomes: dict[str, TaskOutcome] = {}

    def outcome(ti) -> TaskOutcome:
        return TaskOutcome(
            task_id=ti.task_id,
            state=str(ti.state) if ti.state else "none",
            start=ti.start_date,
            end=ti.end_date,
            error=errors.get(ti.task_id),
            log=logs.get(ti.task_id),
        )

    try:
        while True:
            session.expire_all()
            schedulable, _ = run.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
                ti.scheduled_dttm = dt.datetime.now(dt.UTC)
            session.commit()
            tis = run.get_task_instances(session=session)
            for ti in tis:
                if ti.task_id in outcomes or ti.state not in _finished_states():
                    continue
                if ti.task_id in (name for name, _, _ in running.values()):
                    continue
                outcomes[ti.task_id] = outcome(ti)
                if on_finish and ti.task_id not in reported:
                    reported.add(ti.task_id)
                    on_finish(outcomes[ti.task_id])
            if run.state != DagRunState.RUNNING:
                break
            starting = [
                ti
                for ti in tis
                if ti.state == TaskInstanceState.SCHEDULED
                and ti.task_id not in (name for name, _, _ in running.values())
            ]
            for ti in starting:
                if ti.task_id in skip:
                    ti.set_state(TaskInstanceState.SUCCESS, session=session)
                    continue
                log = task_log_path(log_dir, ti.task_id) if log_dir is not None else None
                if log is not None:
                    logs[ti.task_id] = log
                # No connection may cross the fork: commit, and close the pool's connections.
                session.commit()
                settings.engine.dispose()
                receive, send = fork.Pipe(duplex=False)
                child = fork.Process(target=_run_in_child, args=(ti, dag.task_dict[ti.task_id], log, send))
                child.start()
                send.close()
                running[child.sentinel] = (ti.task_id, child, receive)
            session.commit()
            if running:
                for sentinel in wait(list(running)):
                    task_id, child, receive = running.pop(sentinel)
                    errors[task_id] = receive.recv() if receive.poll() else _lost(child)
                    receive.close()
                    child.join()
            elif not starting:
                time.sleep(0.5)  # nothing runnable yet (e.g. a deferred task): look again soon
    finally:
        for _, child, _ in running.values():
            child.terminate()
            child.join()
    session.expire_all()
    for ti in run.get_task_instances(session=session):
        if ti.task_id not in outcomes:
            outcomes[ti.task_id] = outcome(ti)
    state = str(run.state)
    session.close()
    return state, {task_id: outcomes.get(task_id, TaskOutcome(task_id, "none")) for task_id in dag.task_ids}


def _finished_states():
    from airflow.utils.state import State

    return State.finished


def _lost(child) -> str:
    """The reason of a child that exited without reporting (killed, or crashed in Airflow itself)."""
    return f"the task's process exited with code {child.exitcode} before reporting"


def _sync_bag_to_db(bag, dag) -> None:
    """Store the bundles and the parsed DAGs, as ``dag.test()`` does: the task API reads them there."""
    from airflow import settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    manager = DagBundlesManager()
    with settings.Session() as session:
        manager.sync_bundles_to_db(session=session)
        session.commit()
    bundle = next(b for b in manager.get_all_dag_bundles() if Path(dag.fileloc).is_relative_to(b.path))
    sync_bag_to_db(bag, bundle.name, bundle.version)

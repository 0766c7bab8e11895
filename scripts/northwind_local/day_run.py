"""Run one day of a DAG on this machine with ready tasks in parallel: the engine of ``make run``.

``dag.test()`` runs one task after the other, but on a cluster the two extracts run at the same
time. This runner keeps the bookkeeping of ``dag.test()`` (a real DagRun and task instances in the
metadata DB, dependencies decided by ``DagRun.update_state``, each task run by Airflow's own
in-process task runner) and forks one process per ready task, as a LocalExecutor would, so
independent tasks overlap. Each task's output (Airflow's and its step's) goes to its own log file.

The caller configures Airflow (home, metadata DB) before calling :func:`run_day`: Airflow reads
its settings when first imported, and every Airflow import here happens inside a function.
"""

from __future__ import annotations

import datetime as dt
import gc
import multiprocessing
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from northwind_local.execution_api import build_execution_api
from northwind_local.task_process import lost, run_in_child

#: A task id becomes a log file name only if it is a plain identifier (Airflow allows dots too).
SAFE_TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: How soon to look again when nothing runs and nothing can start (e.g. a deferred task).
IDLE_SECONDS = 0.5


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


@dataclass
class RunningTask:
    """A task instance's process and the pipe its error line comes back on."""

    task_id: str
    process: BaseProcess
    results: Connection


def task_log_path(log_dir: Path, task_id: str) -> Path:
    """Return ``<log_dir>/<task_id>.log``, refusing a task id that is not a plain file name."""
    if not SAFE_TASK_ID.fullmatch(task_id):
        raise ValueError(f"task id {task_id!r} cannot name a log file")
    return log_dir / f"{task_id}.log"


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

    dag = bag.dags[dag_id]
    session = settings.Session()
    try:
        run = create_run(bag, dag, logical_date, run_conf, session)
        build_execution_api()
        driver = DayDriver(dag, run, session, log_dir=log_dir, skip=set(skip), on_finish=on_finish)
        driver.drive()
        return driver.result()
    finally:
        session.close()


def create_run(bag, dag, logical_date: dt.datetime | None, run_conf: dict | None, session):
    """Store the parsed DAG and create its DagRun (a day's earlier run is cleared, as ``dag.test()``)."""
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag.validate()
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = dt.datetime.now(dt.UTC)
    interval = None
    if logical_date is not None:
        SerializedDAG.clear_dags(
            dags=[scheduler_dag], start_date=logical_date, end_date=logical_date, dag_run_state=False
        )
        interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=logical_date)
    sync_bag_to_db(bag, dag)
    # As the scheduler does: the stored DAG, whose deadline alerts are rows (ids) of the DB.
    scheduler_dag = SerializedDagModel.get_dag(dag.dag_id, session=session) or scheduler_dag
    return get_or_create_dagrun(
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


def sync_bag_to_db(bag, dag) -> None:
    """Store the bundles and the parsed DAGs, as ``dag.test()`` does: the task API reads them there."""
    from airflow import settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db as store

    manager = DagBundlesManager()
    with settings.Session() as session:
        manager.sync_bundles_to_db(session=session)
        session.commit()
    bundle = next(b for b in manager.get_all_dag_bundles() if Path(dag.fileloc).is_relative_to(b.path))
    store(bag, bundle.name, bundle.version)


class DayDriver:
    """Drives one DagRun: schedules what is ready, forks a process per task, reports each end.

    Args:
        dag: The parsed DAG (its tasks run in the children).
        run: The DagRun of :func:`create_run`.
        session: The metadata DB session of the run.
        log_dir: Where each task's log goes; None keeps output on the console.
        skip: Task ids marked ``success`` without running.
        on_finish: Called with each task's outcome as soon as the task ends.
    """

    def __init__(self, dag, run, session, *, log_dir: Path | None, skip: set[str],
                 on_finish: Callable[[TaskOutcome], None] | None):
        self.dag, self.run, self.session = dag, run, session
        self.log_dir, self.skip, self.on_finish = log_dir, skip, on_finish
        self.fork = multiprocessing.get_context("fork")
        #: Running task processes by their sentinel (what ``wait`` returns).
        self.running: dict[int, RunningTask] = {}
        self.errors: dict[str, str | None] = {}
        self.logs: dict[str, Path] = {}
        self.outcomes: dict[str, TaskOutcome] = {}

    def drive(self) -> None:
        """Run the DagRun until it is no longer running; stop any task process left on the way out."""
        from airflow.utils.state import DagRunState

        try:
            while True:
                tis = self.schedule()
                self.report_finished(tis)
                if self.run.state != DagRunState.RUNNING:
                    # The run ends once every task's state is final, which a task sets before its
                    # process exits: wait for those processes, so their error lines are not lost.
                    while self.running:
                        self.collect()
                    self.session.expire_all()
                    self.report_finished(self.run.get_task_instances(session=self.session))
                    return
                starting = self.ready(tis)
                for ti in starting:
                    self.start(ti)
                self.session.commit()
                if self.running:
                    self.collect()
                elif not starting:
                    time.sleep(IDLE_SECONDS)
        finally:
            for task in self.running.values():
                task.process.terminate()
                task.process.join()

    def schedule(self) -> list:
        """Let the DagRun decide what is ready, mark it scheduled; return every task instance."""
        from airflow.utils.state import TaskInstanceState

        self.session.expire_all()
        schedulable, _ = self.run.update_state(session=self.session)
        for ti in schedulable:
            if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
            ti.scheduled_dttm = dt.datetime.now(dt.UTC)
        self.session.commit()
        return self.run.get_task_instances(session=self.session)

    def report_finished(self, tis: list) -> None:
        """Record, and pass to ``on_finish``, each task that has just ended."""
        from airflow.utils.state import State

        for ti in tis:
            if ti.task_id in self.outcomes or ti.state not in State.finished or self.is_running(ti):
                continue
            self.outcomes[ti.task_id] = self.outcome(ti)
            if self.on_finish:
                self.on_finish(self.outcomes[ti.task_id])

    def ready(self, tis: list) -> list:
        """The scheduled task instances that have no process yet."""
        from airflow.utils.state import TaskInstanceState

        return [ti for ti in tis if ti.state == TaskInstanceState.SCHEDULED and not self.is_running(ti)]

    def start(self, ti) -> None:
        """Fork the process of ``ti`` (or mark it ``success`` when it is skipped)."""
        from airflow import settings
        from airflow.utils.state import TaskInstanceState

        if ti.task_id in self.skip:
            ti.set_state(TaskInstanceState.SUCCESS, session=self.session)
            return
        log = task_log_path(self.log_dir, ti.task_id) if self.log_dir is not None else None
        if log is not None:
            self.logs[ti.task_id] = log
        # No connection may cross the fork: commit, and close the pool's connections.
        self.session.commit()
        settings.engine.dispose()
        # Airflow, the DAG and the built API are some 600,000 objects: frozen, no collection walks
        # them again, neither in a child (whose pages stay shared) nor at this process's exit
        # (a second of CPU each). Collections may run again (``make run`` stops them to start up).
        gc.freeze()
        gc.enable()
        receive, send = self.fork.Pipe(duplex=False)
        child = self.fork.Process(target=run_in_child, args=(ti, self.dag.task_dict[ti.task_id], log, send))
        child.start()
        send.close()
        self.running[child.sentinel] = RunningTask(ti.task_id, child, receive)

    def collect(self) -> None:
        """Wait for at least one task process to end; keep the error line each sent."""
        for sentinel in wait(list(self.running)):
            task = self.running.pop(sentinel)
            self.errors[task.task_id] = task.results.recv() if task.results.poll() else lost(task.process)
            task.results.close()
            task.process.join()

    def is_running(self, ti) -> bool:
        """Whether ``ti`` has a process of this run."""
        return any(task.task_id == ti.task_id for task in self.running.values())

    def outcome(self, ti) -> TaskOutcome:
        """The outcome of ``ti`` as the metadata DB and its process tell it."""
        return TaskOutcome(
            task_id=ti.task_id,
            state=str(ti.state) if ti.state else "none",
            start=ti.start_date,
            end=ti.end_date,
            error=self.errors.get(ti.task_id),
            log=self.logs.get(ti.task_id),
        )

    def result(self) -> tuple[str, dict[str, TaskOutcome]]:
        """The run's state and every task's outcome, in the DAG's task order."""
        self.session.expire_all()
        if str(self.run.state) == "running":  # every task ended since the last look: settle the run
            self.run.update_state(session=self.session)
            self.session.commit()
        for ti in self.run.get_task_instances(session=self.session):
            if ti.task_id not in self.outcomes:
                self.outcomes[ti.task_id] = self.outcome(ti)
        return str(self.run.state), {
            task_id: self.outcomes.get(task_id, TaskOutcome(task_id, "none")) for task_id in self.dag.task_ids
        }

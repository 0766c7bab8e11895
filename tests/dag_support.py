"""Helpers of the DAG tests: a private Airflow home, the parsed DAG, pod contexts and local runs.

Importing this module points Airflow at a throw-away home under the system temp folder, so it
must be imported before anything imports ``airflow`` (the test files import it first).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from settings import ROOT

DAGS_FOLDER = ROOT / "dags"
#: The local runner of ``make run`` (``scripts/northwind_local``), which never ships with the DAGs.
SCRIPTS_FOLDER = ROOT / "scripts"
DAG_ID = "northwind_daily"
TASK_IDS = ("extract_postgres", "extract_csv", "load_warehouse", "publish_report")


def _configure_airflow() -> Path:
    """Give this test session its own Airflow home and settings, before Airflow is imported."""
    if "airflow" in sys.modules and "NORTHWIND_TEST_AIRFLOW_HOME" not in os.environ:
        raise RuntimeError("import tests/dag_support.py before anything imports airflow")
    home = os.environ.get("NORTHWIND_TEST_AIRFLOW_HOME")
    if not home:
        home = tempfile.mkdtemp(prefix="northwind-airflow-")
        os.environ["NORTHWIND_TEST_AIRFLOW_HOME"] = home
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    return Path(home)


AIRFLOW_HOME = _configure_airflow()


def migrate_metadata_db() -> None:
    """Create or upgrade the Airflow metadata DB of this session (idempotent)."""
    from airflow.utils import db

    db.upgradedb()


def load_dagbag():
    """Parse the DAG folder the way the DAG processor does (the folder is put on ``sys.path``)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name="dags-folder")


def load_dag():
    """Return a freshly parsed ``northwind_daily`` (a new object each call: params never leak)."""
    bag = load_dagbag()
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


def task_context(
    dag,
    task,
    *,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None = None,
    date_param: str | None = None,
) -> dict:
    """Return the part of a task context that rendering and ``build_pod_request_obj`` read."""
    run_after = run_after or logical_date
    params = {**{k: v for k, v in dag.params.items()}, "date": date_param}
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1)
    context = {
        "dag": dag,
        "task": task,
        "ti": ti,
        "params": params,
        "dag_run": SimpleNamespace(run_after=run_after, logical_date=logical_date, conf={}),
        "run_id": f"manual__{(logical_date or run_after).isoformat()}",
        # Airflow Variables as templates read them (``var.value.get(name, default)``): none set.
        "var": SimpleNamespace(value={}),
    }
    if logical_date is not None:
        # Like the task runner: a run without a logical date has no such key (nor ds, ts...).
        context |= {"logical_date": logical_date, "ds": logical_date.strftime("%Y-%m-%d")}
    return context


def build_pod(task_id: str, **context_kwargs):
    """Render ``task_id`` of a fresh DAG for a context; return the V1Pod its operator would create.

    Rendering replaces templates in place, so every call parses the DAG anew.
    """
    dag = load_dag()
    task = dag.get_task(task_id)
    context = task_context(dag, task, **context_kwargs)
    task.render_template_fields(context)
    return task.build_pod_request_obj(context, dry_run=True)


def utc_day(day: str) -> dt.datetime:
    """Return midnight UTC of ``YYYY-MM-DD``."""
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


@dataclass
class RunResult:
    """A finished run of the DAG."""

    state: str
    task_states: dict[str, str]
    #: Every task's outcome (start, end, error line), from ``northwind_local.day_run``.
    outcomes: dict


def run_dag(
    day: str | None,
    env: Mapping[str, str],
    conf: dict | None = None,
    only: str | None = None,
) -> RunResult:
    """Run the DAG in local mode, as ``make run`` does (ready tasks in parallel), with ``env`` added.

    Args:
        day: The logical date, or None for a manual run without one.
        env: The step environment (databases, data root, CSV).
        conf: The run's conf (params), e.g. ``{"date": "2024-01-02"}``.
        only: Run only this task; the others are marked success without running.
    """
    for folder in (DAGS_FOLDER, SCRIPTS_FOLDER):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    from northwind_local.day_run import run_day
    from northwind_local.settings import LOCAL_RUNTIME

    skipped = [task for task in TASK_IDS if task != only] if only else ()
    with patched_environ({**LOCAL_RUNTIME, **env}):
        bag = load_dagbag()
        assert not bag.import_errors, bag.import_errors
        no_retries(bag.dags[DAG_ID])
        logical_date = utc_day(day) if day else None
        state, outcomes = run_day(bag, DAG_ID, logical_date=logical_date, run_conf=conf, skip=skipped)
    states = {task_id: outcome.state for task_id, outcome in outcomes.items()}
    return RunResult(state=state, task_states=states, outcomes=outcomes)


def no_retries(dag) -> None:
    """Make every failure final, as ``make run`` does: a run would otherwise wait out retry delays."""
    for task in dag.tasks:
        task.retries = 0


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the duration of the block."""
    with mock.patch.dict(os.environ, dict(values)):
        yield

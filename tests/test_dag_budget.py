"""The DAG's run timeout against its retry budget: every retry it schedules can still happen."""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import datetime as dt

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


def _task_budget(task) -> dt.timedelta:
    """Every try to its timeout, and the longest wait (the backoff's cap) before each retry."""
    return (task.retries + 1) * task.execution_timeout + task.retries * task.max_retry_delay


def _longest_path(dag) -> dt.timedelta:
    longest: dict[str, dt.timedelta] = {}
    for task in dag.topological_sort():
        before = [longest[upstream] for upstream in task.upstream_task_ids]
        longest[task.task_id] = max(before, default=dt.timedelta(0)) + _task_budget(task)
    return max(longest.values())


def test_run_timeout_covers_every_retry_and_ends_within_a_day():
    dag = dag_support.load_dag()
    assert dag.dagrun_timeout >= _longest_path(dag)
    # A stuck run must still end before the next day's run is due (max_active_runs is 1).
    assert dag.dagrun_timeout < dt.timedelta(days=1)

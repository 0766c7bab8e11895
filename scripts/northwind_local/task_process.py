"""The process of one task instance, forked from the run that drives the day (as a LocalExecutor).

The child runs the task with Airflow's own in-process task runner and sends its one-line error
(or None) back through a pipe; its output (Airflow's and its step's) goes to the task's log file.
"""

import os
import sys
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path


def redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr (and its children's) to ``path``, truncated."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run_in_child(ti, task, log: Path | None, results: Connection) -> None:
    """Run one task instance with Airflow's in-process runner; send back its error line."""
    from airflow import settings
    from airflow.sdk.definitions.dag import _run_task
    from northwind_elt.errors import single_line

    if log is not None:
        redirect_output(log)
    # The parent's pooled connections are not ours to use (the parent closed them before the fork).
    settings.engine.dispose(close=False)
    result = _run_task(ti=ti, task=task)
    error = result.error if result is not None else None
    results.send(single_line(str(error)) if error is not None else None)
    results.close()


def lost(child: BaseProcess) -> str:
    """The reason of a child that exited without reporting (killed, or crashed in Airflow itself)."""
    return f"the task's process exited with code {child.exitcode} before reporting"

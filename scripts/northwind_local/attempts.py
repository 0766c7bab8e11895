"""What keeps local runs of ``make run`` apart: a lock per day, and a log folder per attempt.

Two runs of the same day would reset and drive the same DagRun in Airflow's SQLite metadata
database at once (``UNIQUE constraint failed: task_instance_history``); the second run therefore
waits for the first, saying so. Each attempt writes its logs into a folder of its own, so a rerun
never truncates the logs of the attempt before it; ``latest`` points at the newest.
"""

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

#: The newest attempt's folder of a day, beside the attempts' folders.
LATEST = "latest"


def attempt_log_dir(logs: Path, day: dt.date) -> Path:
    """Create ``<logs>/<day>/<UTC time>-<pid>`` for this attempt and point ``latest`` at it."""
    folder = logs / day.isoformat() / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}"
    folder.mkdir(parents=True)
    link = folder.parent / LATEST
    temporary = folder.parent / f".{LATEST}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name)
    os.replace(temporary, link)  # a reader sees the old link or the new one, never none
    return folder


@contextlib.contextmanager
def exclusive(path: Path, busy: str, console: TextIO) -> Iterator[None]:
    """Hold the lock file ``path`` for the block; if another process holds it, say so and wait.

    The lock is the kernel's (``flock``): it ends with its holder, even a killed one. Forked task
    processes share it with the run that started them.

    Args:
        path: The lock file (created if missing).
        busy: What the waiting message says is going on (``2024-01-02 is being run by another
            make run``); the holder's pid and start follow it.
        console: Where the waiting message goes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid unknown"
            print(f"run_local: {busy} ({holder}); waiting for it to end", file=console, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, since {dt.datetime.now(dt.UTC):%H:%M:%S} UTC\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def day_lock(state_dir: Path, day: dt.date, console: TextIO):
    """The lock of ``day``'s runs (a context manager): one run of a day at a time."""
    return exclusive(state_dir / "locks" / f"{day.isoformat()}.lock",
                     f"{day} is being run by another make run", console)


def airflow_db_lock(state_dir: Path, console: TextIO):
    """The lock of Airflow's metadata database while it is created or upgraded (a context manager)."""
    return exclusive(state_dir / "locks" / "airflow-db.lock",
                     "another make run is upgrading Airflow's database", console)

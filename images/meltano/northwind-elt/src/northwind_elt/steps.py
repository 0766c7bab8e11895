"""The four steps of a day and their markers in ``_status/<date>/<step>.json``.

A step writes ``running`` when it starts (so a crash or kill never leaves an older ``success``
standing), then ``success`` or ``failed`` with the reason. A step runs as a tap and a target: the
tap records its own failures (it is the first to know), the target records success once everything
is published or committed. The load refuses to start unless both extract markers of its day say
``success``.
"""

import datetime as dt
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from northwind_elt import atomic
from northwind_elt.errors import PipelineError, PrerequisiteError, SettingError
from northwind_elt.layout import DataTree

EXTRACT_POSTGRES = "extract-postgres"
EXTRACT_CSV = "extract-csv"
LOAD_WAREHOUSE = "load-warehouse"
PUBLISH_REPORT = "publish-report"

#: Every step, in the order a day runs them.
STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE, PUBLISH_REPORT)

#: The data-tree source each extract step publishes.
SOURCE_OF_STEP = {EXTRACT_POSTGRES: "postgres", EXTRACT_CSV: "csv"}

#: What each step needs to have succeeded on the same day.
PREREQUISITES = {
    EXTRACT_POSTGRES: (),
    EXTRACT_CSV: (),
    LOAD_WAREHOUSE: (EXTRACT_POSTGRES, EXTRACT_CSV),
    PUBLISH_REPORT: (LOAD_WAREHOUSE,),
}

RUNNING, SUCCESS, FAILED = "running", "success", "failed"


def now() -> str:
    """The wall clock, for provenance only: it never names a path."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class StepMarker:
    """What a step reports about one day."""

    step: str
    run_date: str
    status: str
    started_at: str
    finished_at: str | None = None
    #: Rows per stream (table or file) that the step published or loaded.
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Which attempt wrote the marker (see :func:`attempt_id`).
    attempt: str | None = None


def attempt_id() -> str:
    """Name this attempt of a step: its tap and target are children of the same ``meltano run``.

    The parent's pid and start time (from /proc) tell one attempt from the next, so a rerun's
    failure replaces an earlier failure while a tap's reason is never hidden by its own target.
    """
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/stat") as stat:
            started = stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "?"
    return f"{socket.gethostname()}:{parent}:{started}"


#: Reads of a marker that its step's other process is overwriting at that moment: an
#: S3-compatible store (SeaweedFS here) can serve such a read torn; a moment later it is whole.
TORN_READ_RETRIES = 20
TORN_READ_PAUSE_S = 0.05


def read_marker(tree: DataTree, step: str, day: dt.date) -> StepMarker | None:
    """Return the marker of ``step`` on ``day``, or None when the step never ran that day."""
    path = tree.status_file(step, day)
    for _ in range(TORN_READ_RETRIES):
        try:
            return StepMarker(**json.loads(tree.fs.read_bytes(path)))
        except FileNotFoundError:
            return None
        except ValueError:  # JSON or UTF-8 of a torn read
            time.sleep(TORN_READ_PAUSE_S)
    raise PipelineError(f"step marker {tree.fs.url(path)} is not valid JSON: remove it and rerun")


def write_marker(tree: DataTree, marker: StepMarker) -> None:
    """Write ``marker`` whole (a rename locally, one PUT on object storage)."""
    day = dt.date.fromisoformat(marker.run_date)
    tree.fs.write_json(tree.status_file(marker.step, day), asdict(marker))


def mark_running(tree: DataTree, step: str, day: dt.date, attempt: str | None = None
                 ) -> StepMarker:
    """Replace any earlier marker of ``step`` on ``day`` by ``running`` and return it."""
    marker = StepMarker(step=step, run_date=day.isoformat(), status=RUNNING, started_at=now(),
                        attempt=attempt or attempt_id())
    write_marker(tree, marker)
    return marker


def begin(tree: DataTree, step: str, day: dt.date, attempt: str | None = None) -> StepMarker:
    """Start a step's attempt without hiding a failure its other process already recorded.

    A step is two processes (tap and target) started together. Whichever starts first replaces
    the marker of an earlier attempt (whatever it says) by ``running``; the marker of this same
    attempt is left alone, so a tap that failed before its target started keeps its reason.
    """
    attempt = attempt or attempt_id()
    current = read_marker(tree, step, day)
    if current is None or current.attempt != attempt or current.status == SUCCESS:
        return mark_running(tree, step, day, attempt)
    return StepMarker(step=step, run_date=day.isoformat(), status=RUNNING, started_at=now(),
                      attempt=attempt)


def record_failure(tree: DataTree, step: str, day: dt.date, reason: str,
                   attempt: str | None = None) -> None:
    """Mark ``step`` failed with the first reason of this attempt (its cause).

    Tap and target both record their failures, and either may ``begin`` after the other failed:
    its read of the marker and its write of ``running`` are two requests (an object store offers
    no compare-and-swap), so a failure written between them is overwritten. The first reason is
    therefore also kept in a local note of the attempt (:func:`failure_note`; both processes of a
    step run on one host): the target ends last, as it reads the tap's output to its end, and
    writes the note's reason into the marker.
    """
    attempt = attempt or attempt_id()
    note = failure_note(tree, step, day, attempt)
    try:
        reason = json.loads(note.read_bytes())["error"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        note.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(note, json.dumps({"error": reason}).encode())
    current = read_marker(tree, step, day)
    if current is not None and current.status == FAILED and current.attempt == attempt \
            and current.error == reason:
        return
    marker = StepMarker(step=step, run_date=day.isoformat(), status=RUNNING,
                        started_at=current.started_at if current else now(), attempt=attempt)
    finish(tree, marker, error=reason)


def failure_note(tree: DataTree, step: str, day: dt.date, attempt: str | None = None) -> Path:
    """The local file where the first failure of this attempt of ``step`` on ``day`` is kept."""
    key = f"{attempt or attempt_id()}\0{step}\0{day.isoformat()}"
    return tree.staging / f"failure-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def finish(tree: DataTree, marker: StepMarker, *, error: str | None = None) -> None:
    """Record the end of a step: ``success`` without ``error``, ``failed`` with it."""
    marker.status = FAILED if error else SUCCESS
    marker.error = error
    marker.finished_at = now()
    write_marker(tree, marker)


def parse_flag(value: object, setting: str) -> bool:
    """A yes/no setting: unset, empty, ``false``/``0``/``no`` are no; ``true``/``1``/``yes`` yes.

    Example:
        >>> parse_flag(None, "reextract"), parse_flag("1", "reextract"), parse_flag(True, "x")
        (False, True, True)
    """
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise SettingError(f"{setting} setting: {value!r} is not true or false")


def kept_extract(tree: DataTree, step: str, day: dt.date, *, reextract: bool) -> StepMarker | None:
    """The ``success`` marker of an extract that a rerun keeps; None when the step must run.

    A day's extract is the record of the source on that day: rerunning a past day must not
    replace it with today's source. Only ``reextract`` reads the source again.
    """
    if reextract or step not in SOURCE_OF_STEP:
        return None
    marker = read_marker(tree, step, day)
    return marker if marker is not None and marker.status == SUCCESS else None


def kept_message(marker: StepMarker) -> str:
    """The one line a kept extract logs."""
    return (f"{marker.step} for {marker.run_date}: kept the extract of {marker.finished_at} "
            f"({sum(marker.rows.values())} rows in {len(marker.rows)} streams); the source is not "
            "read again (set reextract to replace it)")


def require_prerequisites(tree: DataTree, step: str, day: dt.date) -> list[StepMarker]:
    """Return the markers ``step`` depends on, or raise naming every one that is not a success."""
    markers, problems = [], []
    for needed in PREREQUISITES[step]:
        marker = read_marker(tree, needed, day)
        if marker is None:
            problems.append(f"{needed} has not run for {day}")
        elif marker.status != SUCCESS:
            detail = f": {marker.error}" if marker.error else ""
            problems.append(f"{needed} is {marker.status} for {day}{detail}")
        elif needed in SOURCE_OF_STEP and not marker.rows:
            # Loading it would end every current view: an empty extract is never loaded.
            problems.append(f"{needed} published no table for {day}")
        else:
            markers.append(marker)
    if problems:
        raise PrerequisiteError(
            f"{step} refuses to run for {day}: " + "; ".join(problems)
            + f" (markers under {tree.fs.url(tree.root / '_status' / day.isoformat())})"
        )
    return markers

"""The steps of a day and their markers in ``_status/<date>/<step>.json``.

A step writes ``running`` when it starts (so a crash or kill never leaves an older ``success``
standing), then ``success`` or ``failed`` with the reason. A step runs as a tap and a target: the
tap records its own failures (it is the first to know), the target records success once everything
is published or committed. The load refuses to start unless both extract markers of its day say
``success``.

Markers chain: a success names the attempt it committed (``commit``) and the commit of each
prerequisite it read (``inputs``); a success whose inputs are no longer the prerequisites' current
successes is ``stale`` (:func:`stale_inputs`). A running attempt renews a lease beside its marker
(:class:`Heartbeat`); a ``running`` marker whose process is gone (same host) or whose lease has
expired is ``dead`` (:func:`state_of`), and the next attempt takes it over.
"""

import datetime as dt
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from northwind_elt import atomic, lineage, logger, metrics
from northwind_elt.commits import FOLDER_OF_STEP, read_commit, read_document, remove_stale_attempts
from northwind_elt.errors import PipelineError, PrerequisiteError, SettingError, StorageError
from northwind_elt.layout import DataTree, new_attempt
from northwind_elt.step_names import (  # noqa: F401 - the step names are imported from here
    CHECK_WAREHOUSE,
    EXTRACT_CSV,
    EXTRACT_POSTGRES,
    LOAD_WAREHOUSE,
    PUBLISH_REPORT,
    STEPS,
)

#: The data-tree source each extract step publishes.
SOURCE_OF_STEP = {EXTRACT_POSTGRES: "postgres", EXTRACT_CSV: "csv"}

#: What each step needs to have succeeded on the same day.
PREREQUISITES = {
    EXTRACT_POSTGRES: (),
    EXTRACT_CSV: (),
    LOAD_WAREHOUSE: (EXTRACT_POSTGRES, EXTRACT_CSV),
    PUBLISH_REPORT: (LOAD_WAREHOUSE,),
    CHECK_WAREHOUSE: (LOAD_WAREHOUSE,),
}

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
#: States ``status`` derives: a running marker whose process is gone, a success over old inputs.
DEAD, STALE = "dead", "stale"

#: A running attempt renews its lease this often and is taken for dead this long after the last
#: renewal (from another host, where its process cannot be looked up).
LEASE_VARIABLE = "NORTHWIND_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 120


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
    #: The attempt's commit: its attempt folder (extracts, report) or its ``northwind.loads`` id (load).
    commit: str | None = None
    #: The commit of each prerequisite this attempt read: ``{step: commit}``.
    inputs: dict[str, str] = field(default_factory=dict)


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


def read_marker(tree: DataTree, step: str, day: dt.date) -> StepMarker | None:
    """Return the marker of ``step`` on ``day``, or None when the step never ran that day."""
    document = read_document(tree, tree.status_file(step, day), "step marker")
    return None if document is None else StepMarker(**document)


def write_marker(tree: DataTree, marker: StepMarker) -> None:
    """Write ``marker`` whole (a rename locally, one PUT on object storage)."""
    day = dt.date.fromisoformat(marker.run_date)
    tree.fs.write_json(tree.status_file(marker.step, day), asdict(marker))


def mark_running(tree: DataTree, step: str, day: dt.date, attempt: str | None = None
                 ) -> StepMarker:
    """Replace any earlier marker of ``step`` on ``day`` by ``running`` and return it."""
    marker = StepMarker(step=step, run_date=day.isoformat(), status=RUNNING, started_at=now(),
                        attempt=attempt or attempt_id())
    current = read_marker(tree, step, day)
    if current is not None and current.attempt != marker.attempt and \
            state_of(tree, current) == DEAD:
        logger.warning("%s for %s: taking over from attempt %s, which died while running",
                       step, day, current.attempt)
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
        first = json.loads(note.read_bytes())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        first = None
    reason = first or reason
    # The small marker first: the failure may have filled the disk, and a marker that says
    # ``failed`` matters more than the note (the lease shows the attempt dead if even this fails).
    try:
        current = read_marker(tree, step, day)
        if current is None or current.status != FAILED or current.attempt != attempt \
                or current.error != reason:
            marker = StepMarker(step=step, run_date=day.isoformat(), status=RUNNING,
                                started_at=current.started_at if current else now(),
                                attempt=attempt)
            finish(tree, marker, error=reason)
    except (OSError, PipelineError) as error:
        logger.error("%s for %s: could not record the failure in %s: %s", step, day,
                     tree.fs.url(tree.status_file(step, day)), error)
    if first is None:
        try:
            atomic.make_folders(note.parent)
            atomic.write_bytes(note, json.dumps({"error": reason}).encode())
        except (OSError, PipelineError) as error:  # atomic names the path (a StorageError)
            logger.warning("could not keep the failure note %s: %s", note, error)


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
    metrics.step_finished(tree, marker)  # off unless NORTHWIND_STATSD_HOST is set
    lineage.step_finished(tree, marker)  # off unless OPENLINEAGE_* configures the client


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
            state = state_of(tree, marker)
            detail = f": {marker.error}" if marker.error else (
                " (its attempt ended without a result: rerun it)" if state == DEAD else "")
            problems.append(f"{needed} is {state} for {day}{detail}")
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


def inputs_of(markers: list[StepMarker]) -> dict[str, str]:
    """The commits of the prerequisite ``markers`` a step read, for its own marker."""
    return {marker.step: marker.commit or "" for marker in markers}


def stale_inputs(tree: DataTree, marker: StepMarker) -> list[str]:
    """The prerequisites of a successful ``marker`` whose current success is not what it read.

    A load over extracts that were rerun since, evidence of a load that was replaced: each is
    ``stale`` until rerun. A marker of an earlier version (no ``inputs``) is never stale.
    """
    if marker.status != SUCCESS or not marker.inputs:
        return []
    day = dt.date.fromisoformat(marker.run_date)
    changed = []
    for needed in PREREQUISITES[marker.step]:
        current = read_marker(tree, needed, day)
        if current is None or current.status != SUCCESS \
                or current.commit != marker.inputs.get(needed):
            changed.append(needed)
    return changed


def lease_seconds() -> float:
    """The lease of a running attempt (``NORTHWIND_LEASE_SECONDS``, default 120)."""
    try:
        return max(1.0, float(os.environ.get(LEASE_VARIABLE) or DEFAULT_LEASE_SECONDS))
    except ValueError:
        return float(DEFAULT_LEASE_SECONDS)


def _process_alive(attempt: str) -> bool | None:
    """Whether the process of ``attempt`` (``host:pid:start``) runs; None on another host."""
    try:
        host, pid, started = attempt.rsplit(":", 2)
    except ValueError:
        return None
    if host != socket.gethostname() or started == "?":
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19] == started
    except (OSError, ValueError, IndexError):
        return False


def _lease_alive(lease: dict[str, Any], at: float | None = None) -> bool:
    """Whether the attempt holding ``lease`` still runs: by its process, else by its renewals."""
    alive = _process_alive(str(lease.get("attempt") or ""))
    if alive is not None:
        return alive
    at = time.time() if at is None else at
    return at <= float(lease.get("renewed_at", 0)) + float(lease.get("seconds", lease_seconds()))


def state_of(tree: DataTree, marker: StepMarker, at: float | None = None) -> str:
    """The marker's status, with ``running`` told apart from ``dead``.

    Running is alive while its process runs (same host: looked up by pid and start time) or,
    from another host, while its lease is renewed (:class:`Heartbeat`); before the first
    renewal, for one lease from its start.
    """
    if marker.status != RUNNING:
        return marker.status
    lease = read_document(tree, tree.lease_file(marker.step, dt.date.fromisoformat(
        marker.run_date)), "lease")
    if lease is None or lease.get("attempt") != marker.attempt:
        lease = {"attempt": marker.attempt, "seconds": lease_seconds(),
                 "renewed_at": dt.datetime.fromisoformat(marker.started_at).timestamp()}
    return RUNNING if _lease_alive(lease, at) else DEAD


def start_attempt(tree: DataTree, step: str, day: dt.date) -> tuple[StepMarker, "Heartbeat"]:
    """Begin an attempt of ``step``: its marker, its lease, its commit id; tidy dead attempts.

    The marker's ``commit`` names the attempt's folder (and the load's ``northwind.loads`` id). Attempt
    folders of the step's day are removed but the committed one, this one, and the one of
    another attempt whose lease is alive (two runs at once: the later commit wins).
    """
    before = read_document(tree, tree.lease_file(step, day), "lease")
    marker = begin(tree, step, day)
    marker.commit = new_attempt()
    current = read_marker(tree, step, day)
    if current is not None and current.attempt == marker.attempt and current.status == RUNNING:
        # The running marker names the commit to come: a load killed between its warehouse
        # commit and its marker is found in northwind.loads under this id.
        write_marker(tree, marker)
    heartbeat = Heartbeat(tree, step, day, marker.attempt, marker.commit).start()
    lineage.step_started(tree, marker)  # off unless OPENLINEAGE_* configures the client
    if step in FOLDER_OF_STEP:
        keep = {marker.commit}
        if (committed := read_commit(tree, step, day)) is not None:
            keep.add(committed.attempt)
        if before is not None and before.get("attempt") != marker.attempt \
                and _lease_alive(before):
            keep.add(str(before.get("folder")))
        for path in remove_stale_attempts(tree, step, day, keep):
            logger.info("removed %s: an attempt that was never committed or is no longer "
                        "current", tree.fs.url(path))
    return marker, heartbeat


class Heartbeat:
    """Renews the lease of a running attempt until stopped (a daemon thread: it dies with it)."""

    def __init__(self, tree: DataTree, step: str, day: dt.date, attempt: str | None = None,
                 folder: str | None = None):
        self.tree, self.step, self.day = tree, step, day
        self.attempt = attempt or attempt_id()
        #: The attempt's folder, which the next attempt leaves alone while this one lives.
        self.folder = folder
        self.seconds = lease_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def start(self) -> "Heartbeat":
        """Write the lease now, then renew it a few times per lease."""
        self.renew()
        self._thread.start()
        return self

    def renew(self) -> None:
        """Write the lease (a failure to is only logged: the attempt goes on, and may look dead)."""
        lease = {"attempt": self.attempt, "folder": self.folder, "renewed_at": time.time(),
                 "seconds": self.seconds}
        try:
            self.tree.fs.write_json(self.tree.lease_file(self.step, self.day), lease)
        except (OSError, StorageError) as error:  # StorageError: the local tree names the path
            logger.warning("could not renew the lease of %s for %s: %s", self.step, self.day, error)

    def stop(self) -> None:
        """Stop renewing (the marker says how the attempt ended)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            self.renew()

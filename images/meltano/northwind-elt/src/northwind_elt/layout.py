"""Where every file of the data tree lives: the one place that turns names and dates into paths.

Layout under the data root (``./data`` locally, ``/data`` on the cluster's volume)::

    postgres/<table>/<YYYY-MM-DD>/<attempt>/<table>.parquet   one partition per table and day
    postgres/<table>/<YYYY-MM-DD>/<attempt>/<table>.manifest.json
    csv/<YYYY-MM-DD>/<attempt>/<stream>.parquet                one partition per CSV file and day
    csv/<YYYY-MM-DD>/<attempt>/<stream>.manifest.json
    reports/<YYYY-MM-DD>/<attempt>/orders_with_details.{csv,json}   the evidence of the load
    _commits/<YYYY-MM-DD>/<step>.json          which attempt of the step is current that day
    _status/<YYYY-MM-DD>/<step>.json           one marker per step and day
    _status/<YYYY-MM-DD>/<step>.lease.json     the running attempt's heartbeat
    .staging/                                  work files, renamed into place when done

Every attempt of a step writes under its own ``<attempt>`` folder; the step's commit object,
written last, makes one attempt current for the whole day at once (:mod:`northwind_elt.commits`).
Readers resolve the commit and never look at any other attempt.

The root is a local path or an ``s3://bucket/prefix`` URL (:mod:`northwind_elt.treefs`). On S3 the
work files stay on local disk (``NORTHWIND_STAGING_DIR``, default: the temp folder) and only
published objects are uploaded.
"""

import datetime as dt
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from northwind_elt.errors import SettingError
from northwind_elt.treefs import LOCAL, TreeFS, open_root

#: The environment variable naming the data root.
DATA_ROOT_VARIABLE = "NORTHWIND_DATA_ROOT"
#: The local folder for work files when the data root is on object storage.
STAGING_DIR_VARIABLE = "NORTHWIND_STAGING_DIR"

#: Sources whose partitions live in one folder per stream (``<source>/<stream>/<date>``);
#: every other source keeps all streams of a day in one folder (``<source>/<date>``).
PER_STREAM_FOLDER_SOURCES = frozenset({"postgres"})

_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
#: An attempt folder: when it started (UTC, to the microsecond, so names sort by start) and a
#: random suffix (two attempts of one microsecond differ).
_ATTEMPT_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
_SAFE_CHARS = "_-"
#: The folder of the evidence, beside the sources' folders.
REPORTS = "reports"
#: The folder of the step markers and leases.
STATUS = "_status"
#: The evidence of a day (:mod:`northwind_elt.report`), in each attempt folder of ``REPORTS``.
REPORT_NAME = "orders_with_details"
REPORT_CSV, REPORT_JSON = f"{REPORT_NAME}.csv", f"{REPORT_NAME}.json"
REPORT_FILES = (REPORT_CSV, REPORT_JSON)


def path_segment(name: str) -> str:
    """Return ``name`` as one file-name segment that cannot leave its folder.

    Letters, digits, ``_`` and ``-`` stay; every other byte (``/``, ``.``, quotes, spaces) is
    percent-encoded, so the mapping is reversible and two names never share a segment.

    Args:
        name: A stream or table name as the source spells it.

    Returns:
        The safe segment.

    Raises:
        SettingError: If the name is empty.

    Example:
        >>> path_segment("order_details")
        'order_details'
        >>> path_segment('../My "Table"')
        '%2E%2E%2FMy%20%22Table%22'
    """
    if not name:
        raise SettingError("a stream or table name is empty")
    return quote(name, safe=_SAFE_CHARS).replace(".", "%2E")


def stream_from_segment(segment: str) -> str:
    """Invert :func:`path_segment`.

    Example:
        >>> stream_from_segment(path_segment("a.b c"))
        'a.b c'
    """
    return unquote(segment)


def new_attempt() -> str:
    """Name a new attempt folder: its start time and a random suffix, sortable by start.

    Example:
        >>> is_attempt(new_attempt()), is_attempt("orders.parquet")
        (True, False)
    """
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{started}-{uuid.uuid4().hex[:8]}"


def is_attempt(name: str) -> bool:
    """Whether ``name`` is an attempt folder's name (see :func:`new_attempt`)."""
    return _ATTEMPT_NAME.fullmatch(name) is not None


def check_source(source: str) -> str:
    """Return ``source`` if it is a valid source name, else raise an error naming it."""
    if not _SOURCE_NAME.fullmatch(source):
        raise SettingError(f"source name {source!r} must match {_SOURCE_NAME.pattern}")
    return source


@dataclass(frozen=True)
class Partition:
    """One stream of one source on one day, as one attempt wrote it: a Parquet file, a manifest."""

    root: PurePosixPath
    source: str
    stream: str
    day: dt.date
    fs: TreeFS = LOCAL
    #: The attempt folder under the day's folder (:func:`new_attempt`).
    attempt: str = ""

    @property
    def day_folder(self) -> PurePosixPath:
        """The folder of the stream's day: every attempt's folder lies in it."""
        base = self.root / check_source(self.source)
        if self.source in PER_STREAM_FOLDER_SOURCES:
            base = base / path_segment(self.stream)
        return base / self.day.isoformat()

    @property
    def folder(self) -> PurePosixPath:
        """The folder holding the partition's files: its attempt's folder."""
        if not is_attempt(self.attempt):
            raise ValueError(f"partition {self.stream}: {self.attempt!r} is not an attempt name")
        return self.day_folder / self.attempt

    @property
    def data_file(self) -> PurePosixPath:
        """The Parquet file."""
        return self.folder / f"{path_segment(self.stream)}.parquet"

    @property
    def manifest_file(self) -> PurePosixPath:
        """The JSON manifest: row count, schema, checksum, provenance."""
        return self.folder / f"{path_segment(self.stream)}.manifest.json"


@dataclass(frozen=True)
class DataTree:
    """The data root, its backend and the paths derived from it."""

    #: A local folder, or ``bucket/prefix`` on an object store.
    root: PurePosixPath
    fs: TreeFS = LOCAL

    @classmethod
    def from_setting(cls, value: str | None) -> "DataTree":
        """Build from a setting's value, or from ``NORTHWIND_DATA_ROOT`` when ``value`` is empty."""
        raw = value or os.environ.get(DATA_ROOT_VARIABLE, "")
        if not raw:
            raise SettingError(f"the data root is not set: set {DATA_ROOT_VARIABLE} or data_root")
        fs, root = open_root(raw)
        return cls(root, fs)

    @property
    def url(self) -> str:
        """The root as a person would type it."""
        return self.fs.url(self.root)

    def partition(self, source: str, stream: str, day: dt.date, attempt: str) -> Partition:
        """The partition of ``stream`` from ``source`` on ``day``, as ``attempt`` wrote it."""
        return Partition(self.root, check_source(source), stream, day, self.fs, attempt)

    def day_folders(self, source: str, day: dt.date) -> list[PurePosixPath]:
        """The folders of ``source`` on ``day`` that hold attempt folders (one per stream or one).

        ``source`` is a data source (``postgres``, ``csv``) or ``reports``.
        """
        base = self.root / check_source(source)
        if source in PER_STREAM_FOLDER_SOURCES:
            return [base / name / day.isoformat() for name in self.fs.children(base)]
        return [base / day.isoformat()]

    def report_folder(self, day: dt.date, attempt: str) -> PurePosixPath:
        """The folder of a day's evidence files, as ``attempt`` wrote them."""
        if not is_attempt(attempt):
            raise ValueError(f"evidence of {day}: {attempt!r} is not an attempt name")
        return self.root / REPORTS / day.isoformat() / attempt

    def commit_file(self, step: str, day: dt.date) -> PurePosixPath:
        """The commit object of ``step`` on ``day``: which attempt is current."""
        return self.root / "_commits" / day.isoformat() / f"{path_segment(step)}.json"

    def status_folder(self, day: dt.date) -> PurePosixPath:
        """The folder of the markers and leases of ``day``."""
        return self.root / STATUS / day.isoformat()

    def lease_file(self, step: str, day: dt.date) -> PurePosixPath:
        """The heartbeat of the attempt of ``step`` running on ``day``."""
        return self.status_folder(day) / f"{path_segment(step)}.lease.json"

    def status_file(self, step: str, day: dt.date) -> PurePosixPath:
        """The marker of ``step`` on ``day``."""
        return self.status_folder(day) / f"{path_segment(step)}.json"

    def status_days(self) -> list[dt.date]:
        """Every day that has at least one step marker, oldest first."""
        days = []
        for name in self.fs.children(self.root / STATUS):
            try:
                days.append(dt.date.fromisoformat(name))
            except ValueError:
                continue
        return sorted(days)

    @property
    def staging(self) -> Path:
        """The local folder of work files.

        Locally it lies inside the tree, on the same file system, so a rename publishes. For an
        object store it is local disk: files are written and checked there, then uploaded once.
        """
        if self.fs.is_local:
            return Path(self.root) / ".staging"
        return Path(os.environ.get(STAGING_DIR_VARIABLE) or tempfile.gettempdir()) / "northwind-staging"

"""Where every file of the data tree lives: the one place that turns names and dates into paths.

Layout under the data root (``./data`` locally, ``/data`` on the cluster's volume)::

    postgres/<table>/<YYYY-MM-DD>/<table>.parquet       one partition per table and day
    postgres/<table>/<YYYY-MM-DD>/<table>.manifest.json
    csv/<YYYY-MM-DD>/<stream>.parquet                    one partition per CSV file and day
    csv/<YYYY-MM-DD>/<stream>.manifest.json
    reports/<YYYY-MM-DD>/orders_with_details.{csv,json}  the evidence of the load
    _status/<YYYY-MM-DD>/<step>.json                     one marker per step and day
    .staging/                                            work files, renamed into place when done

The root is a local path or an ``s3://bucket/prefix`` URL (:mod:`northwind_elt.treefs`). On S3 the
work files stay on local disk (``NORTHWIND_STAGING_DIR``, default: the temp folder) and only
published objects are uploaded.
"""

import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from northwind_elt.errors import SettingError
from northwind_elt.treefs import LOCAL, TreeFS, open_root

#: The environment variable naming the data root.
DATA_ROOT_VARIABLE = "NORTHWIND_DATA_ROOT"
#: The local folder for work files when the data root is on object storage.
STAGING_DIR_VARIABLE = "NORTHWIND_STAGING_DIR"

#: Every step creates the tree's folders writable by all: a local run (the user's uid) and the
#: cluster's step pods (uid 10001) share one tree through a hostPath, which gets no fsGroup, and
#: either may create a folder first. Files are replaced by rename, which needs only the folder.
SHARED_TREE_UMASK = 0o000

#: Sources whose partitions live in one folder per stream (``<source>/<stream>/<date>``);
#: every other source keeps all streams of a day in one folder (``<source>/<date>``).
PER_STREAM_FOLDER_SOURCES = frozenset({"postgres"})

_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_SAFE_CHARS = "_-"


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


def check_source(source: str) -> str:
    """Return ``source`` if it is a valid source name, else raise an error naming it."""
    if not _SOURCE_NAME.fullmatch(source):
        raise SettingError(f"source name {source!r} must match {_SOURCE_NAME.pattern}")
    return source


@dataclass(frozen=True)
class Partition:
    """One stream of one source on one day: a Parquet file and its manifest."""

    root: PurePosixPath
    source: str
    stream: str
    day: dt.date
    fs: TreeFS = LOCAL

    @property
    def folder(self) -> PurePosixPath:
        """The folder holding the partition's files."""
        base = self.root / check_source(self.source)
        if self.source in PER_STREAM_FOLDER_SOURCES:
            base = base / path_segment(self.stream)
        return base / self.day.isoformat()

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
        os.umask(SHARED_TREE_UMASK)
        fs, root = open_root(raw)
        return cls(root, fs)

    @property
    def url(self) -> str:
        """The root as a person would type it."""
        return self.fs.url(self.root)

    def partition(self, source: str, stream: str, day: dt.date) -> Partition:
        """The partition of ``stream`` from ``source`` on ``day``."""
        return Partition(self.root, check_source(source), stream, day, self.fs)

    def partitions_on(self, source: str, day: dt.date) -> list[Partition]:
        """Every partition of ``source`` on ``day`` found in the tree, by manifest, sorted by stream."""
        base = self.root / check_source(source)
        if source in PER_STREAM_FOLDER_SOURCES:
            folders = [base / name / day.isoformat() for name in self.fs.children(base)]
        else:
            folders = [base / day.isoformat()]
        streams = {stream_from_segment(name.removesuffix(".manifest.json"))
                   for folder in folders for name in self.fs.children(folder)
                   if name.endswith(".manifest.json")}
        return [self.partition(source, s, day) for s in sorted(streams)]

    def report_folder(self, day: dt.date) -> PurePosixPath:
        """The folder of a day's evidence files."""
        return self.root / "reports" / day.isoformat()

    def status_file(self, step: str, day: dt.date) -> PurePosixPath:
        """The marker of ``step`` on ``day``."""
        return self.root / "_status" / day.isoformat() / f"{path_segment(step)}.json"

    def status_days(self) -> list[dt.date]:
        """Every day that has at least one step marker, oldest first."""
        days = []
        for name in self.fs.children(self.root / "_status"):
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

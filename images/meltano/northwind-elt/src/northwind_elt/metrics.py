"""StatsD metrics of a step's end, sent over UDP the way Airflow sends its own.

Off unless ``NORTHWIND_STATSD_HOST`` is set (``NORTHWIND_STATSD_PORT``, default 9125, is the
statsd exporter's port in the Airflow chart). When a step writes its final marker
(:func:`northwind_elt.steps.finish`) it sends, in DogStatsD form (tags become Prometheus labels in
the statsd exporter):

- ``northwind.step.duration`` (timer, ms): from the marker's start (1 s resolution) to its end;
- ``northwind.step.rows`` (gauge, tag ``table``): rows per table or file the step published or loaded;
- ``northwind.step.bytes`` (gauge): bytes of the files the step published in the data tree
  (extracts and report; a load writes none);
- ``northwind.step.succeeded`` / ``northwind.step.failed`` (counters).

Every metric has the tags ``step`` and ``day``. Sending never fails a step: an error (an unknown
host, a full socket buffer) is logged once per process and the step goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping

from northwind_elt import logger

HOST_VARIABLE = "NORTHWIND_STATSD_HOST"
PORT_VARIABLE = "NORTHWIND_STATSD_PORT"
DEFAULT_PORT = 9125
PREFIX = "northwind.step"
#: Characters DogStatsD gives a meaning to; a tag value never holds them.
UNSAFE_TAG_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-/]")
#: At most this many metric lines in one datagram (well under a 1,432-byte Ethernet payload).
LINES_PER_DATAGRAM = 8

_warned = False


def address(environ: Mapping[str, str] = os.environ) -> tuple[str, int] | None:
    """Return ``(host, port)`` of the StatsD server, or None when metrics are off.

    Raises:
        ValueError: A port that is not a number from 1 to 65535, named in one line.
    """
    host = environ.get(HOST_VARIABLE, "").strip()
    if not host:
        return None
    raw = environ.get(PORT_VARIABLE, "").strip() or str(DEFAULT_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{PORT_VARIABLE}={raw!r}: expected a UDP port (1-65535)")
    return host, int(raw)


def tag(value: object) -> str:
    """Return ``value`` as a DogStatsD tag value (unsafe characters become ``_``)."""
    return UNSAFE_TAG_CHARACTERS.sub("_", str(value))


def line(name: str, value: float, kind: str, tags: Mapping[str, object]) -> str:
    """Return one DogStatsD line: ``northwind.step.<name>:<value>|<kind>|#k:v,...``."""
    number = int(value) if float(value).is_integer() else round(value, 3)
    labels = ",".join(f"{key}:{tag(val)}" for key, val in tags.items())
    return f"{PREFIX}.{name}:{number}|{kind}|#{labels}"


def step_lines(marker, published_bytes: int | None, now: dt.datetime | None = None) -> list[str]:
    """Return the metric lines of a finished step's marker (a ``steps.StepMarker``)."""
    tags = {"step": marker.step, "day": marker.run_date}
    now = now or dt.datetime.now(dt.UTC)
    lines = [line("failed" if marker.error else "succeeded", 1, "c", tags)]
    try:
        started = dt.datetime.fromisoformat(marker.started_at)
        lines.append(line("duration", max((now - started).total_seconds(), 0) * 1000, "ms", tags))
    except (TypeError, ValueError):
        pass  # a marker without a readable start: no duration rather than a wrong one
    lines += [line("rows", rows, "g", {**tags, "table": table}) for table, rows in marker.rows.items()]
    if published_bytes is not None:
        lines.append(line("bytes", published_bytes, "g", tags))
    return lines


def published_files(tree, marker) -> Iterable:
    """The data-tree paths of the files a successful step published (none for a load)."""
    from northwind_elt import steps

    if marker.error or not marker.commit:
        return []
    day = dt.date.fromisoformat(marker.run_date)
    if marker.step == steps.PUBLISH_REPORT:
        folder = tree.report_folder(day, marker.commit)
        return [folder / name for name in tree.fs.children(folder)]
    source = (marker.details or {}).get("source")
    if source is None:
        return []
    partitions = [tree.partition(source, stream, day, marker.commit) for stream in marker.rows]
    return [path for p in partitions for path in (p.data_file, p.manifest_file)]


def send(lines: list[str], target: tuple[str, int]) -> None:
    """Send ``lines`` to ``target`` over UDP, a few lines per datagram."""
    import socket

    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for start in range(0, len(lines), LINES_PER_DATAGRAM):
            sock.sendto("\n".join(lines[start:start + LINES_PER_DATAGRAM]).encode(), target)


def step_finished(tree, marker, environ: Mapping[str, str] = os.environ) -> None:
    """Send the metrics of ``marker`` when metrics are on; never raise."""
    global _warned
    try:
        target = address(environ)
        if target is None:
            return
        sizes = [tree.fs.size(path) for path in published_files(tree, marker)]
        total = sum(size or 0 for size in sizes) if sizes else None
        send(step_lines(marker, total), target)
    except Exception as error:  # noqa: BLE001 - metrics never fail the step they describe
        if not _warned:
            _warned = True
            logger.warning("metrics of %s for %s not sent: %s", marker.step, marker.run_date,
                           " ".join(str(error).split()) or type(error).__name__)

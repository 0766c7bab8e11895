"""How many connections read the snapshot, and how a large table is cut into CTID page ranges.

Every connection imports the same exported snapshot, so the ranges of a table, read on different
connections at different moments, still add up to the table as it was at the snapshot's instant.
A range is ``ctid >= '(a,0)' AND ctid < '(b,0)'``: PostgreSQL 14 and later read only its pages (a
TID Range Scan). Older servers would scan the whole table for every range, so there a table is
read in one piece. The last range of a table is open-ended: its size is measured when the plan is
made, and pages added since (by writers the snapshot does not see) must still be read, even if they
can only hold rows invisible to the snapshot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from northwind_elt.errors import SettingError
from psycopg import sql

#: The settings (and their environment variables in images/meltano/meltano.yml).
CONNECTIONS_SETTING = "connections (TAP_PGCOPY_CONNECTIONS, NORTHWIND_EXTRACT_CONNECTIONS)"
RANGE_PAGES_SETTING = "range_pages (TAP_PGCOPY_RANGE_PAGES)"
#: A table of more than this many 8 kB pages (8 MB) is cut into ranges: a smaller one is read
#: in a fraction of a second, less than a second connection's start-up would gain.
DEFAULT_RANGE_PAGES = 1024
#: The first server version with TID Range Scans.
TID_RANGE_SCAN_VERSION = 140000
#: Where a container's CPU limit is (cgroup v2): "<quota> <period>" or "max <period>".
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

# The pages of each table now (pg_relation_size is not transactional: the plan's sizes, not the
# snapshot's), and whether LOCK TABLE takes it. Only ordinary tables and materialized views have
# pages of their own to cut.
_PAGES = """
SELECT t.schema, t.name,
       CASE WHEN c.relkind IN ('r', 'm')
            THEN pg_relation_size(c.oid) / current_setting('block_size')::bigint ELSE 0 END,
       c.relkind IN ('r', 'p')
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS t(schema, name)
JOIN pg_namespace n ON n.nspname = t.schema
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
"""


@dataclass(frozen=True)
class PageRange:
    """Pages ``start`` (included) to ``end`` (excluded; None: to the table's end)."""

    start: int = 0
    end: int | None = None

    @property
    def whole(self) -> bool:
        """Whether the range is the whole table (no condition)."""
        return self.start == 0 and self.end is None

    def condition(self) -> sql.Composable | None:
        """The ``WHERE`` condition that reads the range's rows, None for a whole table."""
        if self.whole:
            return None
        low = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.start},0)"))
        if self.end is None:
            return low
        return sql.SQL("{} AND ctid < {}::tid").format(low, sql.Literal(f"({self.end},0)"))

    def __str__(self) -> str:
        return f"pages {self.start}-{'end' if self.end is None else self.end - 1}"


def positive_setting(value: Any, setting: str, default: int) -> int:
    """A whole-number setting >= 1 (an int or its text; unset or empty: ``default``).

    Raises:
        SettingError: Naming the setting, if the value is not a whole number >= 1.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise SettingError(f"{setting} setting: {value!r} is not a whole number >= 1")
    return number


def cpu_quota(cpu_max: Path = CPU_MAX) -> int | None:
    """The cores a cgroup v2 CPU limit allows (rounded up), None without a limit."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def default_connections() -> int:
    """The cores this process may use: its CPU affinity, capped by its container's CPU limit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cpu_quota()
    return max(1, min(cores or 1, quota or cores or 1))


def connections_of(config: Mapping[str, Any]) -> int:
    """The ``connections`` setting (default: :func:`default_connections`)."""
    return positive_setting(config.get("connections"), CONNECTIONS_SETTING, default_connections())


def range_pages_of(config: Mapping[str, Any]) -> int:
    """The ``range_pages`` setting (default :data:`DEFAULT_RANGE_PAGES`)."""
    return positive_setting(config.get("range_pages"), RANGE_PAGES_SETTING, DEFAULT_RANGE_PAGES)


def tid_range_scans(conn: psycopg.Connection) -> bool:
    """Whether the server reads a CTID range without scanning the whole table."""
    return conn.info.server_version >= TID_RANGE_SCAN_VERSION


class Size(NamedTuple):
    """A relation's pages now (0: it cannot be cut), and whether it is a table LOCK TABLE takes."""

    pages: int
    lockable: bool


def table_sizes(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]
                ) -> dict[tuple[str, str], Size]:
    """The :class:`Size` of each (schema, name)."""
    rows = conn.execute(_PAGES, {"schemas": [s for s, _ in tables], "names": [n for _, n in tables]})
    return {(schema, name): Size(int(pages), lockable) for schema, name, pages, lockable in rows}


def split(pages: int, connections: int, range_pages: int) -> list[PageRange]:
    """Cut ``pages`` into ``ceil(pages / range_pages)`` equal ranges, at most ``connections``.

    Example:
        >>> [str(r) for r in split(100, 3, 40)]
        ['pages 0-32', 'pages 33-65', 'pages 66-end']
        >>> split(30, 4, 30)
        [PageRange(start=0, end=None)]
    """
    count = max(1, min(connections, math.ceil(pages / range_pages)))
    bounds = [pages * i // count for i in range(count)]
    return [PageRange(start, bounds[i + 1] if i + 1 < count else None)
            for i, start in enumerate(bounds)]

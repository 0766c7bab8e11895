"""A day's load into the warehouse, in one place: what target-pgcopy runs and the benchmark times.

The sequence (:class:`DayLoad`, or :func:`load_day` for a list of Parquet partitions):

1. :meth:`DayLoad.begin`: every type only an extension can create exists (naming table, column and
   type); no table has a column the warehouse reserves; the enum labels the day's source added are
   committed in a short transaction of their own (a label is usable only once committed); then the
   load's transaction takes the load lock and migrates warehouses of earlier layouts.
2. :meth:`DayLoad.add_stream` and :meth:`DayLoad.copy_file` / :meth:`DayLoad.copy_batch`: each
   stream's snapshot table is created or evolved and its rows are streamed with COPY into a fresh
   table.
3. :meth:`DayLoad.finish`: the fresh tables' content digests are checked against their manifests,
   each replaces the day's partition (indexed and analyzed first), the day's partitions of tables
   it no longer has are dropped, the day is spliced into the history and recorded in
   ``northwind.loads``, the partitions beyond the retention are dropped, the views of the newest
   day are refreshed, and the transaction commits. Any failure before the commit leaves the
   warehouse as it was (the caller rolls back).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import psycopg
import pyarrow as pa

from northwind_elt import (
    faults,
    history,
    parallel_fill,
    verify,
    warehouse,
    warehouse_layout,
    warehouse_schema,
    warehouse_types,
)
from northwind_elt.arrow_io import ProgressCallback, copy_parquet_into
from northwind_elt.errors import SettingError
from northwind_elt.pgtypes import Column

#: The retention setting: keep the partitions of this many newest loaded days (unset: all; 0:
#: none, the history keeping every day).
KEEP_DAYS_VARIABLE = "NORTHWIND_KEEP_DAYS"


def keep_days_setting(value: str | None) -> int | None:
    """Parse ``NORTHWIND_KEEP_DAYS``: a number of days >= 0, or None (keep everything).

    0 keeps no full day: the history keeps every day (:meth:`LoadOptions.from_settings`).

    Example:
        >>> keep_days_setting("3"), keep_days_setting("0"), keep_days_setting("")
        (3, 0, None)
    """
    if value is None or not str(value).strip():
        return None
    if not str(value).strip().isdigit():
        raise SettingError(f"{KEEP_DAYS_VARIABLE}={value!r} must be a whole number of days >= 0")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a load treats the days around it: retention and history."""

    #: Keep the partitions of this many newest loaded days (None: all).
    keep_days: int | None = None
    #: Splice each loaded day into the history.
    history: bool = True

    @classmethod
    def from_settings(cls, keep_days: str | None, history_on: str | None) -> LoadOptions:
        """The options from their settings' text (``NORTHWIND_KEEP_DAYS``, ``NORTHWIND_HISTORY``).

        Raises:
            SettingError: naming the setting; ``NORTHWIND_KEEP_DAYS=0`` without the history is
                refused too, as the load would keep nothing.
        """
        options = cls(keep_days_setting(keep_days), history.history_setting(history_on))
        if options.keep_days == 0 and not options.history:
            raise SettingError(f"{KEEP_DAYS_VARIABLE}=0 keeps no full day: it needs the history "
                               f"({history.HISTORY_VARIABLE} on, the default) to keep the loaded "
                               "days")
        return options


@dataclasses.dataclass(frozen=True)
class Finished:
    """What a committed load did."""

    #: ``loaded_at`` of the day's row in ``northwind.loads`` (the transaction's time).
    loaded_at: dt.datetime
    #: The streams whose content was checked by row count only (no digest in their manifest).
    unchecked: list[str]
    #: The days whose partitions the retention dropped.
    dropped_days: list[dt.date]


def _ignore(*_args: object) -> None:
    """A log that says nothing."""


class DayLoad:
    """One load of one day, on one connection: its transactions, its fresh tables, its rows.

    Args:
        conn: The warehouse connection (not autocommit); the load commits on it.
        day: The day loaded.
        options: Retention and history.
        log: Where the load says what it did (``logger.info``-like); silent by default.
        connect: Opens another connection like ``conn``, for ``connections`` > 1.
        connections: Fill the fresh tables on this many connections of their own
            (:mod:`northwind_elt.parallel_fill`); 1: all in the load's transaction.
    """

    def __init__(self, conn: psycopg.Connection, day: dt.date, options: LoadOptions,
                 log: Callable[..., None] = _ignore,
                 connect: Callable[[], psycopg.Connection] | None = None, connections: int = 1):
        self.conn, self.day, self.options, self.log = conn, day, options, log
        self.connect = connect
        self.fill = (parallel_fill.ParallelFill(connect, connections, day)
                     if connect is not None and connections > 1 else None)
        self.cursor = conn.cursor()
        #: Rows copied per stream.
        self.loaded: dict[str, int] = {}
        #: The fresh table of each stream, swapped in at the end.
        self.fresh: dict[str, str] = {}
        #: Each stream's column names, as the load log records them.
        self.columns: dict[str, list[str]] = {}
        #: Each stream's columns as stored, where an older day's narrower types are widened.
        self.stored: dict[str, list[Column]] = {}
        #: Each stream's columns with their source types, as the content digest reads them.
        self.typed: dict[str, list[Column]] = {}
        #: What the load did, once committed.
        self.finished: Finished | None = None

    def begin(self, tables: Mapping[str, list[Column]]) -> list[str]:
        """Check the day's tables, commit their new enum labels, open the load's transaction.

        Args:
            tables: The columns of every table the day has.

        Returns:
            What was migrated from the layouts of earlier versions.
        """
        tables = dict(tables)
        warehouse_types.require_external_types(self.cursor, tables)
        warehouse.reserved_columns(tables)
        self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.LOAD_LOCK_KEY,))
        newest = warehouse.newest_day(self.cursor)
        added = warehouse_types.add_enum_labels(self.cursor, tables,
                                                newest is not None and self.day < newest)
        left = parallel_fill.drop_leftovers(self.cursor)
        if self.fill is not None:  # where the workers create their tables (empty if they fail)
            warehouse_layout.ensure_schema(self.cursor, warehouse_layout.PARTITION_SCHEMA)
        self.conn.commit()
        if left:
            self.log("dropped the fresh tables an earlier attempt left: %s", ", ".join(left))
        if added:
            self.log("enum labels added: %s", "; ".join(added))
        migrated = warehouse.begin_load(self.cursor)
        if migrated:
            self.log("migrated to the current layout: %s", ", ".join(migrated))
        return migrated

    def add_stream(self, stream: str, columns: list[Column], keys: list[str]) -> None:
        """Create or evolve the stream's snapshot table and start the fresh table of the day."""
        new = not warehouse_layout.relation_exists(self.cursor, warehouse_layout.SNAPSHOT_SCHEMA,
                                                   stream)
        widen = warehouse.prepare_table(self.cursor, stream, columns, keys, self.day)
        self.stored[stream] = warehouse_schema.stored_columns(
            columns, widen, warehouse_layout.stored_types(self.cursor, stream) if widen else {})
        if widen:
            self.log("%s: widening this older day's %s on the way in", stream,
                     ", ".join(f"{n} to {t}" for n, t in sorted(widen.items())))
        if stream not in self.fresh:
            not_null = warehouse_types.not_null_columns(columns)
            if self.fill is not None and (
                    parallel_fill.types_committed(self.cursor, stream) if new
                    else not parallel_fill.changed_here(self.cursor, stream)):
                self.fresh[stream] = self.fill.add(stream, self.stored[stream], columns, not_null,
                                                   keys if new else None)
            else:
                self.fresh[stream] = warehouse.start_day(self.cursor, stream, self.day, not_null)
        self.columns[stream] = [c.name for c in columns]
        self.typed[stream] = columns
        self.loaded.setdefault(stream, 0)

    def parallel(self, stream: str) -> bool:
        """Whether a worker of :mod:`northwind_elt.parallel_fill` fills the stream."""
        return self.fill is not None and stream in self.fill.tables

    def copy_file(self, stream: str, path: Path, progress: ProgressCallback | None = None
                  ) -> int | None:
        """COPY a Parquet partition of the stream (its columns as added) into its fresh table.

        Returns:
            The rows copied, or None when a worker copies it (counted by :meth:`settle`).
        """
        if self.parallel(stream):
            self.fill.copy_file(stream, path, progress)
            return None
        stored, columns = self.stored[stream], self.typed[stream]
        statement = warehouse.copy_statement(self.fresh[stream], stored)
        if stored == columns:
            rows = copy_parquet_into(self.cursor, statement, path, columns, progress=progress)
        else:
            rows = warehouse_schema.copy_widened(self.cursor, statement, path, stored, progress)
        self.loaded[stream] += rows
        return rows

    def copy_batch(self, stream: str, batch: pa.RecordBatch) -> int:
        """COPY a batch of the stream's rows (converted from RECORD messages).

        A worker's stream is queued to it (counted by :meth:`settle`).
        """
        if self.parallel(stream):
            self.fill.copy_batch(stream, batch)
            return batch.num_rows
        self.loaded[stream] += parallel_fill.copy_batch(self.cursor, self.fresh[stream],
                                                        self.stored[stream], batch)
        return batch.num_rows

    def settle(self) -> dict[str, int]:
        """Wait for the copies the workers were given; return ``loaded`` (rows per stream)."""
        if self.fill is not None:
            for stream, rows in self.fill.settle().items():
                self.loaded[stream] += rows
        return self.loaded

    def discard(self) -> None:
        """After a failure: roll back, stop the workers and drop the fresh tables they committed.

        The drop runs in a transaction of its own, under the load lock; if it cannot (the
        connection is lost), the next load drops them (:func:`parallel_fill.drop_leftovers`).
        """
        if not self.conn.closed:
            self.conn.rollback()
        if self.fill is None:
            return
        self.fill.close()
        try:
            conn = self.conn if not self.conn.closed else self.connect()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.LOAD_LOCK_KEY,))
                parallel_fill.drop_leftovers(cur)
            conn.commit()
        except psycopg.Error as error:
            self.log("fresh tables left for the next load to drop: %s", error)

    def finish(self, digests: Mapping[str, dict], attempt: str | None = None,
               files: Mapping[str, str] | None = None) -> Finished:
        """Check the content, swap the partitions in, record the day, apply retention, commit.

        Args:
            digests: Each stream's content digest from its manifest (a stream without one is
                checked by row count only, by the caller).
            attempt: The load's id, recorded in ``northwind.loads`` (its step marker's).
            files: Each stream's file SHA-256 from its manifest: the history skips a table whose
                content it holds already (:mod:`northwind_elt.history_stamps`).
        """
        started = time.perf_counter()
        self.settle()
        here = {s: f for s, f in self.fresh.items() if not self.parallel(s)}
        unchecked = verify.check_loaded(self.cursor, digests, here, self.typed)
        if self.fill is not None:  # digests, keys and ANALYZE on the workers, then their commit
            unchecked = sorted(unchecked + self.fill.commit(digests))
            self.fill.close()
            self.log("%d tables filled on %d connections", len(self.fill.tables),
                     len(self.fill.workers))
            faults.point("before-swap")
        self.log("content digests of %d tables match their manifests (%.2f s)",
                 len(self.fresh) - len(unchecked), time.perf_counter() - started)
        for stream, fresh in sorted(self.fresh.items()):
            warehouse.swap_in(self.cursor, stream, self.day, fresh, self.parallel(stream))
        # A rerun replaces the whole day: a table gone from the source loses its older copy of it.
        warehouse.drop_day_of_other_tables(self.cursor, self.day, set(self.fresh))
        if self.options.history:  # in this transaction: a failed load leaves the history as it was
            spliced = history.record_day(self.cursor, self.day, files)
            self.log("history: %d keys or rows changed version; content it held already, not spliced: %s",
                     sum(spliced.changed.values()), ", ".join(spliced.unchanged) or "none")
        # The load's id in northwind.loads, in its transaction: the marker says the same, or is dead.
        loaded_at = warehouse.record_load(self.cursor, self.day, self.loaded, self.columns, attempt)
        dropped: list[dt.date] = []
        if self.options.keep_days is not None:
            dropped = warehouse.drop_old_days(self.cursor, self.options.keep_days)
            self.log("retention %s=%d: dropped the partitions of %s", KEEP_DAYS_VARIABLE,
                     self.options.keep_days, ", ".join(map(str, dropped)) or "no day")
        warehouse.publish_views(self.cursor)
        self.conn.commit()
        self.finished = Finished(loaded_at, unchecked, dropped)
        return self.finished


@dataclasses.dataclass(frozen=True)
class DayPartition:
    """One stream's Parquet partition of the day, as :func:`load_day` takes it."""

    stream: str
    columns: list[Column]
    keys: list[str]
    file: Path
    #: The manifest's content digest (None: checked by row count only).
    digest: dict | None = None
    #: The manifest's SHA-256 of the file (None: the history splices the table whatever it holds).
    sha256: str | None = None


def load_day(conn: psycopg.Connection, day: dt.date, partitions: Iterable[DayPartition],
             options: LoadOptions, attempt: str | None = None,
             log: Callable[..., None] = _ignore,
             connect: Callable[[], psycopg.Connection] | None = None,
             connections: int = 1) -> DayLoad:
    """Load ``partitions`` as ``day``: the whole :class:`DayLoad` sequence, committed at the end.

    What target-pgcopy does with the partitions tap-datatree hands it, without the Singer
    messages in between. On failure nothing is committed and no fresh table stays
    (:meth:`DayLoad.discard`). ``connect`` and ``connections``: as :class:`DayLoad`'s; the
    largest partitions are queued first, so the workers end together.

    Returns:
        The committed load: its rows per stream in ``loaded``, what it did in ``finished``.
    """
    partitions = sorted(partitions, key=lambda p: -p.file.stat().st_size)
    load = DayLoad(conn, day, options, log, connect, connections)
    try:
        load.begin({p.stream: p.columns for p in partitions})
        for partition in partitions:
            load.add_stream(partition.stream, partition.columns, partition.keys)
            load.copy_file(partition.stream, partition.file)
        load.finish({p.stream: p.digest for p in partitions if p.digest}, attempt,
                    {p.stream: p.sha256 for p in partitions if p.sha256})
    except BaseException:
        load.discard()
        raise
    return load

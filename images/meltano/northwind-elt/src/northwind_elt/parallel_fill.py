"""Fill a day's fresh tables on several connections, committed, then swapped in by the load.

With ``load_connections`` > 1 (:class:`northwind_elt.warehouse_load.DayLoad`), each stream whose
snapshot table the load's transaction did not create or change is filled by a worker: a thread
with its own connection (same settings as the load's) and its own transaction, which creates the
stream's fresh table ``snapshot_days."<table>@<day>~filling"`` (``LIKE`` the committed snapshot
table), COPYs its Parquet partitions (FREEZE), checks its content digest, builds its key or index
and ANALYZEs it, then commits. The load's transaction then attaches every fresh table and
publishes the views, as with one connection: readers see the whole old day or the whole new one.

A committed fresh table is visible, but it is no partition and no view reads it. Whatever fails
(a worker, the load's transaction, the process killed), no fresh table stays: a failed load drops
its own (:meth:`ParallelFill.close`, then :func:`drop_leftovers` in a transaction of its own), and
every load drops the ``~filling`` tables a killed attempt left (:func:`drop_leftovers`, under the
load lock, so never another running load's). A stream whose snapshot table is new or changed in
this load (columns added or widened, a migration) is filled in the load's transaction, as with
one connection: a worker could not see its uncommitted definition. A snapshot table created by
this load (its first day) is filled by a worker that creates the fresh table from the day's
columns and keys, unless a column's type is created by this load too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql

from northwind_elt import verify, warehouse, warehouse_schema
from northwind_elt.arrow_io import ProgressCallback, copy_chunks, copy_parquet_into
from northwind_elt.errors import SettingError
from northwind_elt.pgtypes import Column, check_sql_type
from northwind_elt.warehouse_layout import (
    PARTITION_SCHEMA,
    SNAPSHOT_DATE,
    SNAPSHOT_SCHEMA,
    derived_name,
    partition_table,
)

#: The setting (target-pgcopy ``load_connections``) and its variable.
CONNECTIONS_SETTING = "load_connections (NORTHWIND_LOAD_CONNECTIONS)"
#: The tag of a fresh table a worker fills: ``<table>@<day>~filling``.
FILLING = "~filling"


def connections_setting(value: object, default: int) -> int:
    """Parse ``load_connections``: a whole number >= 1 (empty: ``default``).

    Example:
        >>> connections_setting("3", 2), connections_setting("", 2), connections_setting(None, 1)
        (3, 2, 1)
    """
    if value is None or not str(value).strip():
        return default
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise SettingError(f"{CONNECTIONS_SETTING}={value!r} must be a whole number >= 1")
    return int(text)


def filling_name(table: str, day: dt.date) -> str:
    """The name (in ``snapshot_days``) of the table a worker fills for ``table`` on ``day``."""
    return derived_name(table, f"{day.isoformat()}{FILLING}")


def drop_leftovers(cur: psycopg.Cursor) -> list[str]:
    """Drop every ``~filling`` table of ``snapshot_days`` (call under the load lock).

    Under the lock no other load runs, so each is what a failed or killed attempt left.
    """
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition
                     AND right(c.relname, %s) = %s ORDER BY 1""",
                (PARTITION_SCHEMA, len(FILLING), FILLING))
    names = [name for (name,) in cur.fetchall()]
    for name in names:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
            sql.Identifier(PARTITION_SCHEMA), sql.Identifier(name)))
    return names


def types_committed(cur: psycopg.Cursor, table: str) -> bool:
    """Whether every column type of ``snapshots.<table>`` was committed before this transaction."""
    cur.execute("""SELECT NOT EXISTS (
                       SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                       WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
                         AND t.xmin = pg_current_xact_id_if_assigned()::xid)""",
                (SNAPSHOT_SCHEMA, table))
    return bool(cur.fetchone()[0])


def changed_here(cur: psycopg.Cursor, table: str) -> bool:
    """Whether this transaction created or changed ``snapshots.<table>`` (its catalog rows)."""
    cur.execute("""WITH t AS (SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) AS r,
                                     pg_current_xact_id_if_assigned()::xid AS x)
                   SELECT t.r IS NULL OR EXISTS (
                       SELECT 1 FROM pg_class c WHERE c.oid = t.r AND c.xmin = t.x
                       UNION ALL SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.r AND a.xmin = t.x
                       UNION ALL SELECT 1 FROM pg_index i WHERE i.indrelid = t.r AND i.xmin = t.x)
                   FROM t""", (SNAPSHOT_SCHEMA, table))
    return bool(cur.fetchone()[0])


class _Worker:
    """One connection and one thread: its streams' fresh tables, in one transaction."""

    def __init__(self, connect: Callable[[], psycopg.Connection]):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-fill")
        self.connect = connect
        self.conn: psycopg.Connection | None = None
        self.futures: list[Future] = []
        self.queued_bytes = 0
        self.streams: list[str] = []

    def submit(self, job: Callable[[psycopg.Cursor], object]) -> Future:
        future = self.executor.submit(self._run, job)
        self.futures.append(future)
        return future

    def _run(self, job: Callable[[psycopg.Cursor], object]) -> object:
        if self.conn is None:
            self.conn = self.connect()
        with self.conn.cursor() as cur:
            return job(cur)

    def close(self) -> None:
        """Stop the thread, roll back what is not committed, close the connection."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.rollback()
            finally:
                self.conn.close()


class ParallelFill:
    """The workers of one load of ``day``: streams queued to the least loaded, joined at the end.

    Args:
        connect: Opens a connection as the load's (same role, database and settings).
        connections: Workers (the load's own connection fills the streams it must).
        day: The day loaded.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], connections: int, day: dt.date):
        self.day = day
        self.workers = [_Worker(connect) for _ in range(connections)]
        #: The worker of each stream, chosen at its first file.
        self.assigned: dict[str, _Worker] = {}
        #: Each stream's fresh table and the columns it is created and filled with.
        self.tables: dict[str, tuple[str, list[Column], list[Column], tuple[str, ...]]] = {}
        #: The keys of the streams whose snapshot table is new (created with this load).
        self.new: dict[str, list[str]] = {}
        #: Rows of each copy, once done: (stream, future).
        self.copies: list[tuple[str, Future]] = []

    def add(self, stream: str, stored: list[Column], typed: list[Column],
            not_null: tuple[str, ...], new_keys: list[str] | None = None) -> str:
        """Register a stream filled by a worker; return its fresh table's name.

        ``new_keys``: the keys of a snapshot table this load creates (None: it is committed).
        """
        fresh = filling_name(stream, self.day)
        self.tables[stream] = (fresh, stored, typed, not_null)
        if new_keys is not None:
            self.new[stream] = new_keys
        return fresh

    def _worker(self, stream: str, size: int) -> _Worker:
        if stream not in self.assigned:
            worker = min(self.workers, key=lambda w: w.queued_bytes)
            worker.streams.append(stream)
            self.assigned[stream] = worker
            fresh, stored, _, not_null = self.tables[stream]
            day, new = self.day, stream in self.new
            worker.submit(lambda cur: _create(cur, stream, day, fresh, not_null,
                                              stored if new else None))
        worker = self.assigned[stream]
        worker.queued_bytes += size
        return worker

    def copy_file(self, stream: str, path: Path, progress: ProgressCallback | None = None) -> None:
        """Queue a Parquet partition of the stream to its worker."""
        self.raise_failure()
        worker = self._worker(stream, path.stat().st_size)
        fresh, stored, typed, _ = self.tables[stream]
        self.copies.append((stream, worker.submit(
            lambda cur: _copy(cur, fresh, stored, typed, path, progress))))

    def copy_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Queue a batch of the stream's rows (from RECORD messages) to its worker."""
        self.raise_failure()
        worker = self._worker(stream, batch.nbytes)
        fresh, stored, _, _ = self.tables[stream]
        self.copies.append((stream, worker.submit(
            lambda cur: copy_batch(cur, fresh, stored, batch))))

    def raise_failure(self) -> None:
        """Raise the first error a worker met so far (fail fast)."""
        for worker in self.workers:
            for future in worker.futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()

    def settle(self) -> dict[str, int]:
        """Wait for every queued COPY; return the rows each added per stream (then forget them)."""
        rows: dict[str, int] = {}
        copies, self.copies = self.copies, []
        for stream, future in copies:
            rows[stream] = rows.get(stream, 0) + future.result()
        return rows

    def commit(self, digests: Mapping[str, dict]) -> list[str]:
        """Check, index and analyze every worker's tables and commit them; return the unchecked."""
        for stream in self.tables:
            if stream not in self.assigned:  # no file: an empty table, filled by nobody yet
                self._worker(stream, 0)
        done = []
        for worker in self.workers:
            if worker.streams:
                streams = list(worker.streams)
                done.append(worker.submit(lambda cur, s=streams: self._finalize(cur, s, digests)))
        unchecked: list[str] = []
        for future in done:
            unchecked += future.result()
        return sorted(unchecked)

    def _finalize(self, cur: psycopg.Cursor, streams: Sequence[str],
                  digests: Mapping[str, dict]) -> list[str]:
        fresh = {s: self.tables[s][0] for s in streams}
        unchecked = verify.check_loaded(cur, digests, fresh, {s: self.tables[s][2]
                                                              for s in streams})
        for stream in streams:
            if stream in self.new:
                _index_new(cur, fresh[stream], self.new[stream])
            else:
                warehouse.index_fresh(cur, stream, fresh[stream])
        cur.connection.commit()
        return unchecked

    def close(self) -> None:
        """Stop every worker; what they did not commit is rolled back."""
        for worker in self.workers:
            worker.close()


def _create(cur: psycopg.Cursor, stream: str, day: dt.date, fresh: str,
            not_null: tuple[str, ...], columns: list[Column] | None) -> None:
    """Create the fresh table: ``LIKE`` its snapshot table, or from ``columns`` if that is new.

    From ``columns``, it has the columns :func:`warehouse.prepare_table` gives a new snapshot
    table, in its order, with :func:`warehouse.start_day`'s day default, check and storage.
    """
    if columns is None:
        warehouse.start_day(cur, stream, day, not_null, fresh)
        return
    definitions = [sql.SQL("{} {}").format(sql.Identifier(c.name),
                                           sql.SQL(check_sql_type(c.sql_type, f"{stream}.{c.name}")))
                   for c in columns]
    definitions.append(sql.SQL("{} date NOT NULL DEFAULT {} CHECK ({} = {})").format(
        sql.Identifier(SNAPSHOT_DATE), sql.Literal(day), sql.Identifier(SNAPSHOT_DATE),
        sql.Literal(day)))
    cur.execute(sql.SQL("CREATE TABLE {} ({}) WITH ({})").format(
        partition_table(fresh), sql.SQL(", ").join(definitions), warehouse.NO_AUTOVACUUM))
    for name in not_null:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
            partition_table(fresh), sql.Identifier(name)))


def _index_new(cur: psycopg.Cursor, fresh: str, keys: list[str]) -> None:
    """The key (or day index) a new snapshot table has (:func:`warehouse.prepare_table`), ANALYZE."""
    if keys:
        cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
            partition_table(fresh),
            sql.SQL(", ").join(sql.Identifier(k) for k in [SNAPSHOT_DATE, *keys])))
    else:
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(
            partition_table(fresh), sql.Identifier(SNAPSHOT_DATE)))
    cur.execute(sql.SQL("ANALYZE {}").format(partition_table(fresh)))


def copy_batch(cur: psycopg.Cursor, fresh: str, stored: list[Column], batch: pa.RecordBatch
               ) -> int:
    """COPY a batch of rows into ``fresh`` (its older, narrower types widened); its rows."""
    with cur.copy(warehouse.copy_statement(fresh, stored)) as copy:
        for data, _ in copy_chunks(warehouse_schema.widened([batch], stored), stored):
            copy.write(data)
    return batch.num_rows


def _copy(cur: psycopg.Cursor, fresh: str, stored: list[Column], typed: list[Column], path: Path,
          progress: ProgressCallback | None) -> int:
    statement = warehouse.copy_statement(fresh, stored)
    if stored == typed:
        return copy_parquet_into(cur, statement, path, typed, progress=progress)
    return warehouse_schema.copy_widened(cur, statement, path, stored, progress)

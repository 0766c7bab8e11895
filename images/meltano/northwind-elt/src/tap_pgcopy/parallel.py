"""Read the tables of one snapshot on several connections, each table into one Parquet file.

The work is cut into units, one per page range of a table (:mod:`tap_pgcopy.ranges`), and run by
a pool of threads, each with its own ADBC connection that imported the catalog's snapshot. Threads
suffice: ADBC decodes ``COPY (FORMAT binary)`` and Arrow encodes Parquet in C++ without the
interpreter lock. The ranges of a table all feed the table's one Parquet writer (its row groups in
the order they arrive: a snapshot's rows have no order), so a day's partition stays one file per
table and the manifest, the load and the content digest (a sum over rows) are unchanged.

Memory stays bounded: each unit holds the batch it decodes and at most one batch being written.
The first failure stops every other unit after its current batch, and is the one raised.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import adbc_driver_manager
import pyarrow as pa
import pyarrow.parquet as pq
from northwind_elt import pgconn
from northwind_elt.arrow_io import PARQUET_COMPRESSION, PARQUET_DICTIONARY, ProgressCallback
from northwind_elt.errors import InputError, StorageError, os_reason
from northwind_elt.pgtypes import Column, arrow_schema
from psycopg import sql

from tap_pgcopy.ranges import PageRange, Size

Result = TypeVar("Result")
#: SQLSTATE of a lock that NOWAIT did not get.
LOCK_NOT_AVAILABLE = "55P03"


class NeedsText(Exception):
    """A column holds a value its native Arrow type cannot: the table must be read again."""


class Stopped(Exception):
    """Another unit failed first: this one gave up (the other's error is the one to report)."""


@dataclass
class TableJob:
    """One table to extract: its query parts, its ranges, and the file its ranges share.

    Attributes:
        stream: The stream name, for messages.
        where: ``table <schema>.<name>``, for messages.
        query: The query of a range: ``query(range)`` is its SQL text.
        columns: The selected columns (the query may also select a range flag after them).
        convert: Turns a batch of the query into a batch of the Parquet schema (or raises).
        ranges: The page ranges, each read by one unit.
        size: The table's size (to start the largest work first), and whether it is locked.
        lock: ``LOCK TABLE ... IN ACCESS SHARE MODE NOWAIT`` of the table, None for a relation
            LOCK TABLE does not take (a view, a foreign table...).
    """

    stream: str
    where: str
    query: Callable[[PageRange], str]
    columns: list[Column]
    convert: Callable[[pa.RecordBatch], pa.RecordBatch]
    ranges: list[PageRange]
    destination: Path
    progress: ProgressCallback
    size: Size = Size(0, False)
    lock: str | None = None
    rows: int = 0
    future: Future = field(default_factory=Future)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writer: pq.ParquetWriter | None = None
    _remaining: int = 0
    _error: BaseException | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to the table's file (opened by the first batch of any range)."""
        with self._lock:
            if self._error is not None:
                raise Stopped()
            if self._writer is None:
                self._writer = self._open()
            self._writer.write_batch(batch)
            self.rows += batch.num_rows
            rows = self.rows
        self.progress(rows)

    def _open(self) -> pq.ParquetWriter:
        try:
            return pq.ParquetWriter(self.destination, arrow_schema(self.columns),
                                    compression=PARQUET_COMPRESSION,
                                    use_dictionary=PARQUET_DICTIONARY)
        except OSError as error:
            raise StorageError(f"cannot write {self.destination}: {os_reason(error)}") from None

    def abandon(self) -> None:
        """Close the file of a job whose ranges were cancelled (a failed run removes it)."""
        with self._lock:
            if self._writer is not None:
                with contextlib.suppress(OSError):
                    self._writer.close()
                self._writer = None

    @property
    def failed(self) -> bool:
        """Whether a range of the table failed (the others stop)."""
        return self._error is not None

    def range_ended(self, error: BaseException | None) -> None:
        """Count one range as done (or failed); the last one closes the file and settles."""
        with self._lock:
            if error is not None and (self._error is None or isinstance(self._error, Stopped)):
                self._error = error
            self._remaining -= 1
            if self._remaining:
                return
            try:
                if self._error is None and self._writer is None:
                    self._writer = self._open()  # an empty table: a file of its columns, no rows
                if self._writer is not None:
                    self._writer.close()
            except (OSError, StorageError) as close_error:
                self._error = self._error or StorageError(
                    f"cannot write {self.destination}: {os_reason(close_error)}"
                    if isinstance(close_error, OSError) else str(close_error))
        if self._error is not None:
            self.future.set_exception(self._error)
        else:
            self.future.set_result(self.rows)


class ParallelExtract:
    """A pool of ``connections`` threads, each reading on its own connection in the snapshot."""

    def __init__(self, connect: Callable[[], contextlib.AbstractContextManager[Any]],
                 connections: int):
        self.connections = connections
        #: The stream name's job (set by the tap when it queues them).
        self.jobs: dict[str, TableJob] = {}
        self._connect = connect
        self._pool = ThreadPoolExecutor(connections, thread_name_prefix="extract")
        self._local = threading.local()
        self._opened = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first_error: BaseException | None = None
        self._submitted: list[TableJob] = []

    def _connection(self):
        """This thread's connection, opened (and its snapshot imported) on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            opened = self._connect()
            conn = opened.__enter__()  # outside the lock: the connections open side by side
            with self._lock:
                self._opened.push(opened.__exit__)
            self._local.conn = conn
        return conn

    def submit(self, jobs: list[TableJob]) -> None:
        """Queue every range of ``jobs``, the largest first (they finish closest together)."""
        units = [(job.size.pages / len(job.ranges), n, job, page_range)
                 for n, job in enumerate(jobs) for page_range in job.ranges]
        for job in jobs:
            job._remaining = len(job.ranges)
        self._submitted += jobs
        for _, _, job, page_range in sorted(units, key=lambda u: (-u[0], u[1])):
            self._pool.submit(self._run, job, page_range)

    def call(self, work: Callable[[Any], Result]) -> Result:
        """Run ``work(connection)`` on one of the pool's connections, wait for its result."""
        return self._pool.submit(lambda: work(self._connection())).result()

    def wait(self, job: TableJob) -> int:
        """The rows of ``job`` once all its ranges are written; raises the first failure."""
        try:
            return job.future.result()
        except Stopped:
            raise self._first_error or Stopped() from None

    def _run(self, job: TableJob, page_range: PageRange) -> None:
        error: BaseException | None = None
        try:
            self._read(job, page_range)
        except BaseException as failure:  # noqa: BLE001 (settled on the job, raised by wait)
            error = failure
            if not isinstance(failure, (Stopped, NeedsText)):
                with self._lock:
                    self._first_error = self._first_error or failure
                self._stop.set()
        job.range_ended(error)

    def _read(self, job: TableJob, page_range: PageRange) -> None:
        if self._stop.is_set() or job.failed:
            raise Stopped()
        cursor = self._connection().cursor()
        try:
            if job.lock is not None:
                # As pg_dump -j: a lock this connection would queue for behind a session waiting
                # for an exclusive one (ALTER, TRUNCATE...), itself waiting for the connection
                # that read the table first (another range, the digest: held until the end),
                # would never come.
                cursor.execute(job.lock)
            cursor.execute(job.query(page_range))
            with ThreadPoolExecutor(1, thread_name_prefix="parquet") as background:
                # Encode and compress batch N in the background while batch N+1 is read.
                pending: Future | None = None
                for batch in cursor.fetch_record_batch():
                    if self._stop.is_set() or job.failed:
                        raise Stopped()
                    converted = job.convert(batch)
                    if pending is not None:
                        pending.result()
                    pending = background.submit(job.write, converted)
                if pending is not None:
                    pending.result()
        except (adbc_driver_manager.Error, pa.ArrowInvalid) as error:
            if getattr(error, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise InputError(
                    f"{job.where}: another session is waiting for an exclusive lock on it (ALTER "
                    "TABLE, TRUNCATE, VACUUM FULL...) that only the end of this extract would "
                    "grant: run the extract again once that session is done") from None
            raise pgconn.read_failure(error, job.where) from None
        except OSError as error:
            raise StorageError(f"cannot write {job.destination}: {os_reason(error)}") from None
        finally:
            cursor.close()

    def close(self) -> None:
        """Stop the units still queued or running, wait for them, close files and connections.

        Safe to call again. After a failure this frees the disk space the open files hold
        before the step's marker is written.
        """
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job in self._submitted:
            job.abandon()
        self._opened.close()


def range_query(select: sql.Composable, condition: sql.Composable | None) -> str:
    """``select`` limited to a range's rows (``select`` has no WHERE of its own)."""
    if condition is None:
        return select.as_string()
    return sql.SQL("{} WHERE {}").format(select, condition).as_string()


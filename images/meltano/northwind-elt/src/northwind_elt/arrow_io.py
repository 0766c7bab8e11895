"""Move rows between Arrow, Parquet, CSV and PostgreSQL ``COPY`` in bounded memory.

Load: Parquet batches are encoded by Arrow's kernels (C++) and streamed into ``COPY ... FROM
STDIN``: in the binary format where every column has an encoding (:mod:`northwind_elt.copy_binary`),
else as CSV, where a NULL is an unquoted empty field and an empty string a quoted one, so NULL stays
NULL. A thread reads and encodes the next batches while the current one is sent, so the client's
work overlaps the server's. The same CSV conventions read typed CSV files (``tap-csvtyped``).
Extract from PostgreSQL uses ADBC instead (``tap_pgcopy.streams``).
"""

import datetime as dt
import decimal
import hashlib
import io
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from northwind_elt import copy_binary
from northwind_elt.pgtypes import Column, arrow_schema

#: Arrow's CSV block: bounds the memory of a stream (several blocks may be in flight).
CSV_BLOCK_BYTES = 8 << 20
#: Rows per Parquet batch read on load.
LOAD_BATCH_ROWS = 65_536
#: Encoded batches a load prepares ahead of the one being sent (bounds its memory).
PREFETCH_BATCHES = 2
PARQUET_COMPRESSION = "zstd"
#: Dictionary pages for the PostgreSQL extract's files: off. zstd already packs repeated values,
#: so at scale 1000 the files are 16% smaller without them and writing takes 0.07 s (25%) less
#: CPU; readers decode them faster too (scripts/extract_cpu.py --compression).
PARQUET_DICTIONARY = False

ProgressCallback = Callable[[int], None]
#: A running step logs its row count at most this often (seconds), per table.
PROGRESS_INTERVAL = 5.0


def throttled_progress(log: Callable[[str], None], what: str) -> ProgressCallback:
    """A progress callback that logs ``<what>: N rows so far`` at most every few seconds."""
    last = [time.monotonic()]

    def report(rows: int) -> None:
        if time.monotonic() - last[0] >= PROGRESS_INTERVAL:
            last[0] = time.monotonic()
            log(f"{what}: {rows} rows so far")

    return report


def csv_convert_options(columns: list[Column]) -> pacsv.ConvertOptions:
    """How to read a typed CSV file (PostgreSQL's CSV conventions) into the columns' Arrow types."""
    return pacsv.ConvertOptions(
        column_types={c.name: c.arrow_type for c in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )


def _binary_to_hex(array: pa.Array) -> pa.Array:
    r"""Bytes into the ``\x0a0b`` text PostgreSQL's COPY reads as bytea."""
    return pa.array([None if v is None else "\\x" + v.hex() for v in array.to_pylist()],
                    pa.string())


def csv_for_copy(batch: pa.RecordBatch) -> bytes:
    """Render a batch as CSV that ``COPY ... FROM STDIN (FORMAT csv)`` reads back exactly."""
    arrays = [_binary_to_hex(a) if pa.types.is_binary(a.type) else a for a in batch.columns]
    names = batch.schema.names
    out = io.BytesIO()
    pacsv.write_csv(pa.RecordBatch.from_arrays(arrays, names=names), out,
                    write_options=pacsv.WriteOptions(include_header=False))
    return out.getvalue()


def copy_chunks(batches: Iterable[pa.RecordBatch], columns: list[Column]
                ) -> Iterator[tuple[memoryview | bytes, int]]:
    """What ``COPY ... FROM STDIN`` of ``columns`` reads for ``batches``, with each chunk's rows.

    The format is the one :func:`northwind_elt.warehouse.copy_statement` asks for: binary when
    every column has a binary encoding, else CSV.
    """
    binary = copy_binary.encodable(columns)
    if binary:
        yield copy_binary.HEADER, 0
    names = [c.name for c in columns]
    for batch in batches:
        batch = batch.select(names)
        yield (copy_binary.encode(batch, columns) if binary else csv_for_copy(batch)), batch.num_rows
    if binary:
        yield copy_binary.TRAILER, 0


Item = TypeVar("Item")


def prefetched(items: Iterator[Item], depth: int = PREFETCH_BATCHES) -> Iterator[Item]:
    """``items``, produced by a thread up to ``depth`` ahead of the consumer.

    Arrow's readers and kernels release the interpreter lock, so the next batches are decoded and
    encoded on one core while the current one is sent (the server works on the other). An error of
    the producer is raised in the consumer; a consumer that stops early stops the producer.
    """
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((end, error))

    worker = threading.Thread(target=produce, name="copy-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def copy_parquet_into(
    cursor: psycopg.Cursor,
    copy_sql: psycopg.sql.Composable,
    parquet_file: Path,
    columns: list[Column],
    progress: ProgressCallback | None = None,
) -> int:
    """Stream every row of ``parquet_file`` into ``copy_sql`` (:func:`warehouse.copy_statement`).

    Args:
        cursor: An open cursor (its transaction is the caller's).
        copy_sql: The COPY statement of ``columns``, in the format :func:`copy_chunks` writes.
        parquet_file: The partition to load.
        columns: The partition's columns, in the statement's order.
        progress: Called with the running row count after each batch.

    Returns:
        The number of rows copied.
    """
    rows = 0
    batches = pq.ParquetFile(parquet_file).iter_batches(batch_size=LOAD_BATCH_ROWS)
    with cursor.copy(copy_sql) as copy:
        for data, count in prefetched(copy_chunks(batches, columns)):
            copy.write(data)
            rows += count
            if count and progress:
                progress(rows)
    return rows


def records_to_batch(records: list[dict], columns: list[Column]) -> pa.RecordBatch:
    """Turn Singer RECORD dicts into a batch of the columns' Arrow types (stock taps' streams).

    This is the slow, general path (Python objects); our own taps hand over Parquet instead.
    """
    arrays = []
    for column in columns:
        values = [record.get(column.name) for record in records]
        target = column.arrow_type
        if pa.types.is_timestamp(target):
            values = [_as_datetime(v, bool(target.tz)) for v in values]
        elif pa.types.is_date(target):
            values = [None if v is None else dt.date.fromisoformat(str(v)[:10]) for v in values]
        elif pa.types.is_decimal(target):
            values = [None if v is None else decimal.Decimal(str(v)) for v in values]
        elif pa.types.is_string(target):
            values = [_as_text(v) for v in values]
        elif pa.types.is_floating(target):
            # The SDK parses JSON numbers as Decimal.
            values = [None if v is None else float(v) for v in values]
        elif pa.types.is_integer(target):
            values = [None if v is None else int(v) for v in values]
        arrays.append(pa.array(values, target))
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(columns))


def _as_datetime(value: object, aware: bool) -> dt.datetime | None:
    """An ISO 8601 text as a datetime; naive values are taken as UTC for aware columns."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if aware and parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    if not aware and parsed.tzinfo is not None:
        return parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _as_text(value: object) -> str | None:
    """Text for a string column: JSON for objects and arrays, the value itself otherwise."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

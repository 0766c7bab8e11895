"""target-pgcopy: load one day into the warehouse, all tables in one transaction.

Before anything else the load checks that both extract steps of the day succeeded (so it refuses
without touching the warehouse or its own marker), then that the warehouse has every type only an
extension can create (naming table, column and type) and that no table has a column the warehouse
reserves; then, in a short transaction of its own, the enums gain the labels the day's source
added (a label is usable only once committed). Then, in one transaction holding the load lock:
warehouses of earlier layouts are migrated, each stream's snapshot table is
created or evolved and its rows are streamed with COPY into a fresh table; when the tap's completion
message has arrived and every row count matches, each fresh table replaces the day's partition, the
day is spliced into the history and recorded in ``northwind.loads``, the partitions of days beyond
``NORTHWIND_KEEP_DAYS`` are dropped (0: every one, this day's too: the history keeps them), the
views of the newest day are refreshed, and the transaction commits. Any failure rolls everything back.
"""

import contextlib
import datetime as dt
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from northwind_elt import (
    faults,
    history,
    pgconn,
    steps,
    verify,
    warehouse,
    warehouse_layout,
    warehouse_schema,
    warehouse_types,
)
from northwind_elt.arrow_io import copy_chunks, copy_parquet_into, throttled_progress
from northwind_elt.commits import vouched_partitions
from northwind_elt.errors import PartitionError, PipelineError
from northwind_elt.layout import DataTree
from northwind_elt.pgtypes import Column, columns_of
from northwind_elt.run_date import parse_run_date
from northwind_elt.step_target import StepTarget, one_line
from singer_sdk import typing as th

from target_pgcopy.sinks import SnapshotSink


def day_columns(tree: DataTree, markers: list[steps.StepMarker], day: dt.date
                ) -> dict[str, list[Column]]:
    """The columns of every partition the day's extracts published.

    Unreadable files are left out here: tap-datatree refuses them, naming the file.
    """
    tables = {}
    for marker in markers:
        with contextlib.suppress(PipelineError):  # tap-datatree refuses it, naming the commit
            for partition in vouched_partitions(tree, marker, day):
                with contextlib.suppress(OSError, ValueError, TypeError, pa.ArrowException):
                    tables[partition.stream] = columns_of(pq.read_schema(partition.data_file))
    return tables


class TargetPgCopy(StepTarget):
    """Exact, transactional, idempotent daily snapshots in PostgreSQL."""

    name = "target-pgcopy"
    package_name = "northwind-elt"
    default_sink_class = SnapshotSink
    config_jsonschema = th.PropertiesList(
        *pgconn.CONNECTION_PROPERTIES,
        th.Property("data_root", th.StringType, required=True,
                    description="Root of the data tree (for the step markers)"),
        th.Property("run_date", th.StringType,
                    description="Day being loaded"),
    ).to_dict()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        day = parse_run_date(self.config.get("run_date"))
        tree = DataTree.from_setting(self.config.get("data_root"))
        markers = steps.require_prerequisites(tree, steps.LOAD_WAREHOUSE, day)
        self.inputs = steps.inputs_of(markers)
        self.keep_days = warehouse.keep_days_setting(os.environ.get(warehouse.KEEP_DAYS_VARIABLE))
        self.history = history.history_setting(os.environ.get(history.HISTORY_VARIABLE))
        warehouse.retention_needs_history(self.keep_days, self.history)
        # One connection, one transaction, sinks drained one at a time.
        self.max_parallelism = 1
        try:
            self.conn = pgconn.connect(self.config, "warehouse")
            self.cursor = self.conn.cursor()
            self.start_step(tree, steps.LOAD_WAREHOUSE, day)
            tables = day_columns(tree, markers, day)
            warehouse_types.require_external_types(self.cursor, tables)
            warehouse.reserved_columns(tables)
            self.add_enum_labels(tables)
            migrated = warehouse.begin_load(self.cursor)
        except BaseException as error:
            # No message handler runs yet, so nothing else would record why the load failed.
            steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, one_line(error))
            raise
        if migrated:
            self.logger.info("migrated to the current layout: %s", ", ".join(migrated))
        self.loaded: dict[str, int] = {}
        #: The fresh table of each stream, and its columns, swapped in at the end.
        self.fresh: dict[str, str] = {}
        self.columns: dict[str, list[str]] = {}
        #: Each stream's columns as stored, where an older day's narrower types are widened.
        self.stored: dict[str, list[Column]] = {}
        #: Each stream's columns with their source types, as the content digest reads them.
        self.typed: dict[str, list[Column]] = {}
        self.logger.info("loading %s into %s", day,
                         pgconn.describe(pgconn.connection_kwargs(self.config, "warehouse")))

    def add_enum_labels(self, tables: dict[str, list[Column]]) -> None:
        """Add the enum labels new at the source, in a transaction committed before the load's."""
        self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.LOAD_LOCK_KEY,))
        newest = warehouse.newest_day(self.cursor)
        added = warehouse_types.add_enum_labels(self.cursor, tables,
                                                newest is not None and self.day < newest)
        self.conn.commit()
        if added:
            self.logger.info("enum labels added: %s", "; ".join(added))

    def prepare_stream(self, stream: str, columns: list[Column], keys: list[str]) -> None:
        """Create or evolve the stream's snapshot table and start the fresh table of the day."""
        widen = warehouse.prepare_table(self.cursor, stream, columns, keys, self.day)
        self.stored[stream] = warehouse_schema.stored_columns(
            columns, widen, warehouse_layout.stored_types(self.cursor, stream) if widen else {})
        if widen:
            self.logger.info("%s: widening this older day's %s on the way in", stream,
                             ", ".join(f"{n} to {t}" for n, t in sorted(widen.items())))
        if stream not in self.fresh:
            self.fresh[stream] = warehouse.start_day(self.cursor, stream, self.day,
                                                     warehouse_types.not_null_columns(columns))
        self.columns[stream] = [c.name for c in columns]
        self.typed[stream] = columns
        self.loaded.setdefault(stream, 0)

    def copy_file(self, stream: str, columns: list[Column], path: Path) -> None:
        """COPY a Parquet partition into the stream's snapshot table."""
        stored = self.stored[stream]
        statement = warehouse.copy_statement(self.fresh[stream], stored)
        progress = throttled_progress(self.logger.info, f"loading {stream}")
        if stored == columns:
            rows = copy_parquet_into(self.cursor, statement, path, columns, progress=progress)
        else:
            rows = warehouse_schema.copy_widened(self.cursor, statement, path, stored, progress)
        self.loaded[stream] += rows
        self.logger.info("loaded %s: %d rows (%d of %d streams)", stream, rows, len(self.loaded),
                         len(self.completion.rows) if self.completion else len(self.loaded))

    def copy_batch(self, stream: str, columns: list[Column], batch: pa.RecordBatch) -> None:
        """COPY a batch of rows converted from RECORD messages."""
        stored = self.stored[stream]
        with self.cursor.copy(warehouse.copy_statement(self.fresh[stream], stored)) as copy:
            for data, _ in copy_chunks(warehouse_schema.widened([batch], stored), stored):
                copy.write(data)
        self.loaded[stream] += batch.num_rows

    def process_endofpipe(self) -> None:
        """Commit the day, or roll it all back."""
        try:
            super().process_endofpipe()
        finally:
            if not self.conn.closed:
                self.conn.rollback()  # no-op after a commit
                self.conn.close()

    def finish_step(self) -> None:
        """Check every announced row arrived, swap the partitions in, record the day, commit."""
        if self.completion is None:
            raise PartitionError("the extractor ended without its completion message: the load "
                                 "was rolled back")
        wrong = [f"{s}: loaded {self.loaded.get(s, 0)}, announced {n}"
                 for s, n in sorted(self.completion.rows.items()) if self.loaded.get(s, 0) != n]
        if wrong:
            raise PartitionError("row counts differ, the load was rolled back: " + "; ".join(wrong))
        started = time.perf_counter()
        unchecked = verify.check_loaded(self.cursor, self.completion.digests, self.fresh, self.typed)
        self.logger.info("content digests of %d tables match their manifests (%.2f s)",
                         len(self.fresh) - len(unchecked), time.perf_counter() - started)
        if unchecked:
            self.logger.info("no content digest in the manifests of %s (extracted before digests, "
                             "or not asked for by NORTHWIND_CONTENT_DIGEST): checked by row count only",
                             ", ".join(unchecked))
        for stream, fresh in sorted(self.fresh.items()):
            warehouse.swap_in(self.cursor, stream, self.day, fresh)
        # A rerun replaces the whole day: a table gone from the source loses its older copy of it.
        warehouse.drop_day_of_other_tables(self.cursor, self.day, set(self.fresh))
        if self.history:  # in this transaction: a failed load leaves the history as it was
            history.record_day(self.cursor, self.day)
        # The load's id in northwind.loads, in its transaction: the marker says the same, or is dead.
        loaded_at = warehouse.record_load(self.cursor, self.day, self.loaded, self.columns,
                                          self.marker.commit)
        if self.keep_days is not None:
            dropped = warehouse.drop_old_days(self.cursor, self.keep_days)
            self.logger.info("retention %s=%d: dropped the partitions of %s",
                             warehouse.KEEP_DAYS_VARIABLE, self.keep_days,
                             ", ".join(map(str, dropped)) or "no day")
        warehouse.publish_views(self.cursor)
        self.conn.commit()
        faults.point("after-commit")
        self.marker.inputs = self.inputs
        self.succeed_step(self.loaded, {"tables": sorted(self.loaded),
                                        "loaded_at": loaded_at.isoformat()})


if __name__ == "__main__":
    TargetPgCopy.cli()

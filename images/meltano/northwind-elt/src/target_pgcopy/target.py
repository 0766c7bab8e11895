"""target-pgcopy: load one day into the warehouse, all tables in one transaction.

Constructing the target only reads its settings. Its run (:meth:`TargetPgCopy.begin_run`) first
checks that both extract steps of the day succeeded (so it refuses without touching the warehouse
or its own marker), then marks the step running and begins the day's load
(:class:`northwind_elt.warehouse_load.DayLoad`: external types, reserved columns, enum labels,
the load's transaction). Each stream's rows are COPYed as its messages arrive; when the tap's
completion message has arrived and every row count matches, the load finishes (content digests,
swap, history, load log, retention ``keep_days``, views) and commits. Any failure rolls
everything back.
"""

import contextlib
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from northwind_elt import faults, parallel_fill, pgconn, steps
from northwind_elt.arrow_io import throttled_progress
from northwind_elt.commits import vouched_partitions
from northwind_elt.errors import PartitionError, PipelineError
from northwind_elt.layout import DataTree
from northwind_elt.pgtypes import Column, columns_of
from northwind_elt.run_date import parse_run_date
from northwind_elt.step_target import StepTarget, one_line
from northwind_elt.warehouse_load import DayLoad, LoadOptions
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
        th.Property("keep_days", th.StringType,
                    description="Keep the partitions of this many newest loaded days (empty: all; "
                                "0: none, the history keeps every day); NORTHWIND_KEEP_DAYS"),
        th.Property("history", th.StringType,
                    description="on (default) or off: splice each loaded day into the history; "
                                "NORTHWIND_HISTORY"),
        th.Property("load_connections", th.StringType,
                    description="Fill the day's fresh tables on this many connections (default "
                                "1: all in the load's transaction); "
                                "NORTHWIND_LOAD_CONNECTIONS"),
    ).to_dict()

    #: The day's load, from the run's start (None before).
    load: DayLoad | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Every setting is checked here; nothing is read or written before the run.
        self.day = parse_run_date(self.config.get("run_date"))
        self.tree = DataTree.from_setting(self.config.get("data_root"))
        self.options = LoadOptions.from_settings(self.config.get("keep_days"),
                                                 self.config.get("history"))
        # 1 by default: on 2 cores more connections measured no faster (docs/benchmark.md).
        self.connections = parallel_fill.connections_setting(self.config.get("load_connections"), 1)
        # Sinks drained one at a time; their files go to the load's workers (load_connections).
        self.max_parallelism = 1

    def begin_run(self) -> None:
        """Check the prerequisites, mark the step running, connect and begin the day's load."""
        tree, day = self.tree, self.day
        markers = steps.require_prerequisites(tree, steps.LOAD_WAREHOUSE, day)
        self.inputs = steps.inputs_of(markers)
        try:
            self.conn = pgconn.connect(self.config, "warehouse")
            self.start_step(tree, steps.LOAD_WAREHOUSE, day)
            self.load = DayLoad(self.conn, day, self.options, self.logger.info,
                                lambda: pgconn.connect(self.config, "warehouse"), self.connections)
            self.load.begin(day_columns(tree, markers, day))
        except BaseException as error:
            # No message handler runs yet, so nothing else would record why the load failed.
            steps.record_failure(tree, steps.LOAD_WAREHOUSE, day, one_line(error))
            raise
        self.logger.info("loading %s into %s on %d connection(s)", day,
                         pgconn.describe(pgconn.connection_kwargs(self.config, "warehouse")),
                         self.connections)

    def prepare_stream(self, stream: str, columns: list[Column], keys: list[str]) -> None:
        """Create or evolve the stream's snapshot table and start the fresh table of the day."""
        self.load.add_stream(stream, columns, keys)

    def copy_file(self, stream: str, path: Path) -> None:
        """COPY a Parquet partition into the stream's snapshot table."""
        loaded = self.load.loaded
        rows = self.load.copy_file(stream, path,
                                   throttled_progress(self.logger.info, f"loading {stream}"))
        if rows is None:
            self.logger.info("queued %s: %s to a load connection", stream, path.name)
            return
        self.logger.info("loaded %s: %d rows (%d of %d streams)", stream, rows, len(loaded),
                         len(self.completion.rows) if self.completion else len(loaded))

    def copy_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """COPY a batch of rows converted from RECORD messages."""
        self.load.copy_batch(stream, batch)

    def process_endofpipe(self) -> None:
        """Commit the day, or roll it all back."""
        try:
            super().process_endofpipe()
        finally:
            conn = getattr(self, "conn", None)
            if self.load is not None and self.load.finished is None:
                self.load.discard()  # rolls back; drops the fresh tables the workers committed
            if conn is not None and not conn.closed:
                conn.rollback()  # no-op after a commit
                conn.close()

    def finish_step(self) -> None:
        """Check every announced row arrived, then finish the day's load and mark the step done."""
        if self.completion is None:
            raise PartitionError("the extractor ended without its completion message: the load "
                                 "was rolled back")
        loaded = self.load.settle()
        wrong = [f"{s}: loaded {loaded.get(s, 0)}, announced {n}"
                 for s, n in sorted(self.completion.rows.items()) if loaded.get(s, 0) != n]
        if wrong:
            raise PartitionError("row counts differ, the load was rolled back: " + "; ".join(wrong))
        finished = self.load.finish(self.completion.digests, self.marker.commit,
                                    self.completion.files)
        if finished.unchecked:
            self.logger.info("no content digest in the manifests of %s (extracted before digests, "
                             "or not asked for by NORTHWIND_CONTENT_DIGEST): checked by row count only",
                             ", ".join(finished.unchecked))
        faults.point("after-commit")
        self.marker.inputs = self.inputs
        self.succeed_step(loaded, {"tables": sorted(loaded),
                                   "loaded_at": finished.loaded_at.isoformat()})


if __name__ == "__main__":
    TargetPgCopy.cli()

"""tap-pgcopy: discover every table of PostgreSQL schemas and hand each over as a Parquet BATCH."""

import contextlib
import functools
import time

import psycopg
from northwind_elt import pgconn
from northwind_elt.content_digest import digests_enabled
from northwind_elt.errors import SettingError
from northwind_elt.step_tap import BatchTap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from tap_pgcopy.catalog import DEFAULT_SCHEMA, discover_configured
from tap_pgcopy.client import DigestWorker, data_connection, open_snapshot, snapshot_provenance
from tap_pgcopy.coverage import Relation, Skipped, check_extractable
from tap_pgcopy.parallel import ParallelExtract
from tap_pgcopy.ranges import (
    CONNECTIONS_SETTING,
    DEFAULT_RANGE_PAGES,
    PageRange,
    Size,
    connections_of,
    range_pages_of,
    split,
    table_sizes,
    tid_range_scans,
)
from tap_pgcopy.streams import TableStream


class TapPgCopy(BatchTap):
    """Full-table snapshots of a PostgreSQL schema, exact types, COPY speed."""

    name = "tap-pgcopy"
    package_name = "northwind-elt"
    # CATALOG and DISCOVER: Meltano's `select` rules reach the tap as catalog metadata.
    capabilities = (PluginCapabilities.BATCH, PluginCapabilities.ABOUT, TapCapabilities.CATALOG,
                    TapCapabilities.DISCOVER)
    config_jsonschema = th.PropertiesList(
        *pgconn.CONNECTION_PROPERTIES,
        th.Property("schemas", th.ArrayType(th.StringType), default=[DEFAULT_SCHEMA],
                    description="Schemas to extract; tables outside public are streams named "
                                "<schema>.<table>"),
        th.Property("tables", th.ArrayType(th.StringType),
                    description="Extract only these streams (default: every table of the schemas)"),
        th.Property("relation_kinds", th.ArrayType(th.StringType), default=["table"],
                    description="Kinds of relation to snapshot: table (ordinary and partitioned), "
                                "view, materialized_view, foreign_table; the others are listed "
                                "as skipped in the log and the step's marker"),
        th.Property("connections", th.CustomType({"type": ["integer", "string", "null"]}),
                    description="Connections reading the snapshot in parallel (default: the cores "
                                f"this process may use); {CONNECTIONS_SETTING}"),
        th.Property("range_pages", th.CustomType({"type": ["integer", "string", "null"]}),
                    description="Cut a table of more pages than this into page ranges, at most one "
                                f"per connection (default {DEFAULT_RANGE_PAGES}: 8 MB)"),
        th.Property("enable_row_security", th.BooleanType, default=False,
                    description="Extract tables that row-level security filters for the source "
                                "role, with only the rows its policies let through (default: "
                                "refuse them, as pg_dump does)"),
    ).to_dict()

    @functools.cached_property
    def snapshot(self) -> tuple[psycopg.Connection, str]:
        """The catalog's connection in its read-only transaction, and the exported snapshot id."""
        conn, snapshot = open_snapshot(self.config)
        self.source_state = snapshot_provenance(conn)
        return conn, snapshot

    @functools.cached_property
    def digests(self) -> DigestWorker | None:
        """Computes each table's content digest in the snapshot (None when NORTHWIND_CONTENT_DIGEST=off)."""
        return DigestWorker(self.snapshot[0]) if digests_enabled("postgres") else None

    def content_digests(self) -> dict[str, dict]:
        """Every table's content digest, for the completion message."""
        if self.digests is None:
            return {}
        started = time.perf_counter()
        results = self.digests.results()
        self.logger.info("content digests of %d tables computed (%.2f s waited after the last "
                         "COPY)", len(results), time.perf_counter() - started)
        return results

    def provenance(self) -> dict:
        """The source snapshot every manifest of the run records, and each stream's table."""
        return self.source_state | {"streams": {
            name: {"schema": stream.table.schema, "table": stream.table.name}
            for name, stream in self.streams.items() if stream.selected}}

    @functools.cached_property
    def parallelism(self) -> tuple[int, int]:
        """The ``connections`` and ``range_pages`` settings (a bad value raises, naming it)."""
        return connections_of(self.config), range_pages_of(self.config)

    def _data_connection(self) -> contextlib.AbstractContextManager:
        """A new ADBC connection reading in the catalog's snapshot."""
        return data_connection(self.config, self.snapshot[1],
                               bool(self.config.get("enable_row_security")))

    @functools.cached_property
    def extraction(self) -> ParallelExtract:
        """Every selected table queued on the connections, large ones cut into page ranges.

        Made on the first stream's turn to hand its file over; each stream then waits for its own.
        """
        conn = self.snapshot[0]
        connections, range_pages = self.parallelism
        selected = [s for s in self.streams.values() if s.selected]
        sizes = table_sizes(conn, [(s.table.schema, s.table.name) for s in selected])
        cut = connections > 1 and tid_range_scans(conn)
        if connections > 1 and not cut:
            self.logger.info("the source predates PostgreSQL 14 (no TID Range Scan): each table "
                             "is read whole, on one connection")
        extraction = ParallelExtract(self._data_connection, connections)
        self._closing.callback(extraction.close)
        jobs = []
        for stream in selected:
            size = sizes.get((stream.table.schema, stream.table.name), Size(0, False))
            ranges = split(size.pages, connections, range_pages) if cut else [PageRange()]
            if len(ranges) > 1:
                self.logger.info("%s: %d pages read in %d ranges", stream.name, size.pages,
                                 len(ranges))
            batch_config = stream.get_batch_config(self.config)
            jobs.append(stream.job(stream.selected_columns, ranges, size, batch_config))
            if self.digests is not None:  # queued now: they run while the rows are copied out
                self.digests.submit(stream.name, stream.source_table, jobs[-1].columns)
        extraction.jobs = {job.stream: job for job in jobs}
        self.logger.info("extracting %d tables on %d connections in one snapshot", len(jobs),
                         connections)
        extraction.submit(jobs)
        return extraction

    @functools.cached_property
    def _closing(self) -> contextlib.ExitStack:
        return contextlib.ExitStack()

    def discover_streams(self) -> list[TableStream]:
        """One stream per table of the schemas (or of the ``tables`` setting)."""
        # self.skipped: the relations not extracted, with their reasons (for the marker).
        tables, self.skipped = discover_configured(self.snapshot[0], self.config, self.logger)
        return [TableStream(self, table) for table in tables]

    def check_before_sync(self) -> None:
        """Refuse, before reading any row, what cannot be extracted whole (see coverage.py)."""
        self.parallelism  # noqa: B018 (a bad setting fails here, before any row is read)
        selected = [s for s in self.streams.values() if s.selected]
        if not selected:
            raise SettingError("no table is selected for extraction (meltano select, or the "
                               "tables setting): an extract of nothing is never published")
        for stream in self.streams.values():
            if not stream.selected:
                self.skipped.append(Skipped(stream.table.qualified, "table",
                                            "deselected (meltano select)"))
                self.logger.info("not extracted: %s: deselected", stream.name)
        tables = {s.table.qualified: s for s in selected}
        relations = [Relation(s.table.schema, s.table.name, "r", 0, s.table.row_security)
                     for s in selected]
        filtered = check_extractable(
            relations, {name: len(s.selected_columns) for name, s in tables.items()},
            bool(self.config.get("enable_row_security")))
        if filtered:
            self.logger.warning("row-level security filters %s: extracting only the rows its "
                                "policies show the source role (enable_row_security)",
                                ", ".join(filtered))
            self.extra_details["row_security_filtered"] = filtered

    def record_failure(self, error: BaseException) -> None:
        """Stop every connection's work first: its open files hold disk space the marker needs."""
        if "extraction" in self.__dict__:  # started (cached_property)
            self.extraction.close()
        super().record_failure(error)

    def completion_details(self) -> dict:
        """Skipped relations (and tables read under row-level security) for the step's marker."""
        return {**self.extra_details, "skipped": [s.as_dict() for s in self.skipped]}

    def run_discovery(self) -> str:
        """Discover the tables, then end the catalog's snapshot."""
        try:
            return super().run_discovery()
        finally:
            self.close()

    def sync_all(self) -> None:
        """Extract every table in one snapshot, announce completion, end the snapshot."""
        try:
            super().sync_all()
        finally:
            self.close()

    def close(self) -> None:
        """End the digests' thread, close the data and catalog connections that were opened."""
        if self.__dict__.get("digests") is not None:  # started (cached_property)
            self.digests.close()
        self._closing.close()
        if "snapshot" in self.__dict__:  # opened (cached_property)
            self.snapshot[0].close()


if __name__ == "__main__":
    TapPgCopy.cli()

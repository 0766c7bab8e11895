"""The warehouse's data parts without start-up: the load and the report run in this process.

The load is :func:`northwind_elt.warehouse_load.load_day`, the sequence target-pgcopy runs, on
the partitions the step run published; the report is :func:`northwind_elt.report.write_report`.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
from northwind_elt.commits import committed_partitions
from northwind_elt.layout import DataTree
from northwind_elt.manifest import read_manifest
from northwind_elt.pgtypes import columns_of
from northwind_elt.report import write_report
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES
from northwind_elt.warehouse_load import DayPartition, LoadOptions, load_day
from psycopg import sql

from .meltano_steps import FS_SIDE
from .settings import LOAD_RUNS, RETENTION_DAYS, RETENTION_KEEP, RUN_DATE
from .source import Server


def day_partitions(tree: DataTree, extracted: dt.date) -> list[DayPartition]:
    """The partitions both extracts committed for ``extracted``, as the load takes them."""
    found = []
    for step in (EXTRACT_POSTGRES, EXTRACT_CSV):
        for partition in committed_partitions(tree, step, extracted)[1]:
            manifest = read_manifest(partition)
            found.append(DayPartition(partition.stream,
                                      columns_of(pq.read_schema(partition.data_file)),
                                      list(manifest.key_properties), partition.data_file,
                                      manifest.content_digest, manifest.sha256))
    return found


def load_in_process(conn: psycopg.Connection, tree: DataTree, extracted: dt.date, day: dt.date,
                    keep: int | None, history: bool = True) -> float:
    """Load ``extracted``'s partitions as ``day`` with :func:`load_day`, as target-pgcopy does.

    The step's sequence (the history on unless ``history`` is False, retention ``keep``) without
    Meltano's start-up or the Singer messages, so the data part is measured directly. Returns the
    seconds taken.
    """
    partitions = day_partitions(tree, extracted)
    started = time.perf_counter()
    load_day(conn, day, partitions, LoadOptions(keep_days=keep, history=history))
    return time.perf_counter() - started


def snapshots_bytes(conn: psycopg.Connection) -> int:
    """Total size of the warehouse's partitions (tables, indexes, TOAST)."""
    (size,) = conn.execute(
        """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'snapshot_days' AND c.relkind = 'r' AND c.relispartition""").fetchone()
    return int(size)



def warehouse_in_process(server: Server, source: str, data_root: Path, folder: Path) -> dict:
    """The warehouse's data parts without start-up, on the step run's data tree and warehouse.

    A first load into an empty warehouse followed by a rerun of the day, and a first load with
    the history off (as the load was before it existed), LOAD_RUNS times (medians),
    then RETENTION_DAYS - 1 more days
    with NORTHWIND_KEEP_DAYS=RETENTION_KEEP (the same files under later dates), with the size of
    the partitions after each day; and the report written into a folder, on two connections.
    """
    tree, extracted = DataTree(data_root), dt.date.fromisoformat(RUN_DATE)
    database = f"{source}_keep"
    result: dict = {"sizes": []}
    server.checkpoint()
    with server.connect(FS_SIDE.warehouse(source)) as conn, \
            server.connect(FS_SIDE.warehouse(source)) as second:
        started = time.perf_counter()
        write_report(conn, extracted, folder / "report", second)
        result["report"] = time.perf_counter() - started
    firsts, reruns, plain = [], [], []
    for _ in range(LOAD_RUNS):  # each first load into an empty warehouse, then its rerun
        server.create_database(database)
        with server.connect(database) as conn:
            server.checkpoint()
            plain.append(load_in_process(conn, tree, extracted, extracted, RETENTION_KEEP,
                                         history=False))
        server.create_database(database)
        with server.connect(database) as conn:
            server.checkpoint()
            firsts.append(load_in_process(conn, tree, extracted, extracted, RETENTION_KEEP))
            server.checkpoint()
            reruns.append(load_in_process(conn, tree, extracted, extracted, RETENTION_KEEP))
    result["first"], result["rerun"] = statistics.median(firsts), statistics.median(reruns)
    result["first_no_history"] = statistics.median(plain)
    with server.connect(database) as conn:
        result["sizes"].append(snapshots_bytes(conn))
        for n in range(1, RETENTION_DAYS):
            load_in_process(conn, tree, extracted, extracted + dt.timedelta(days=n), RETENTION_KEEP)
            result["sizes"].append(snapshots_bytes(conn))
        (result["partitions_per_table"],) = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'snapshots.orders'::regclass"
        ).fetchone()
    with server.connect("postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))
    return result

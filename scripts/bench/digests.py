"""What content digests cost: the extracts and the load with each ``NORTHWIND_CONTENT_DIGEST``."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
from northwind_elt import warehouse_layout
from northwind_elt.commits import committed_partitions
from northwind_elt.content_digest import (
    DIGEST_VARIABLE,
    METHOD,
    ArrowDigest,
    Digest,
    source_expression,
    table_digest,
    warehouse_expression,
)
from northwind_elt.layout import DataTree
from northwind_elt.manifest import read_manifest
from northwind_elt.pgtypes import columns_of
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE
from psycopg import sql

from .measure import Measurement, median_of
from .meltano_steps import run_meltano, step_environment, step_rows
from .settings import DIGEST_MODES, DIGEST_STEPS, RUN_DATE, STEP_RUNS
from .source import Server


def digest_cost(server: Server, source: str, counts: dict[str, int], csv_path: Path,
                folder: Path, runs: int = STEP_RUNS) -> dict[str, dict]:
    """Each extract and the (first) load with each of :data:`DIGEST_MODES`, medians.

    Each mode has its own data tree and warehouse (the load checks what its extract recorded);
    the modes' runs alternate, so a drift of the machine moves them alike. ``work`` holds the
    digests' own work, timed alone (:func:`digest_work`).
    """
    envs = {}
    for mode in DIGEST_MODES:
        warehouse_db = f"{source}_digests_{mode}"
        server.create_database(warehouse_db)
        envs[mode] = step_environment(server, source, warehouse_db, folder / f"digests-{mode}",
                                      csv_path) | {DIGEST_VARIABLE: mode}
    measured: dict[str, dict] = {mode: {} for mode in DIGEST_MODES}
    for step in DIGEST_STEPS:
        found: dict[str, list[Measurement]] = {mode: [] for mode in DIGEST_MODES}
        for n in range(runs):
            for mode in DIGEST_MODES:
                if step == LOAD_WAREHOUSE:  # a first load each time
                    server.create_database(envs[mode]["WAREHOUSE_PGDATABASE"])
                server.checkpoint()
                found[mode].append(run_meltano(f"{step}-digests-{mode}-{n}", [step],
                                               step_rows(step, counts), envs[mode],
                                               folder / "logs"))
        for mode in found:
            measured[mode][step] = median_of(found[mode])
    measured["work"] = digest_work(server, source, envs["all"]["WAREHOUSE_PGDATABASE"],
                                   folder / "digests-all")
    for mode in envs:
        shutil.rmtree(folder / f"digests-{mode}", ignore_errors=True)
        with server.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(envs[mode]["WAREHOUSE_PGDATABASE"])))
    return measured



def digest_work(server: Server, source: str, warehouse_db: str, data_root: Path) -> dict:
    """The digests' own work, timed in this process (seconds, and the rows each covered).

    The source's scans, the CSV's hashing and the warehouse's check, without any step's start-up.
    """
    tree = DataTree.from_setting(str(data_root))
    day = dt.date.fromisoformat(RUN_DATE)
    work = {}
    with server.connect(source) as src, server.connect(warehouse_db) as wh, \
            src.cursor() as src_cur, wh.cursor() as wh_cur:
        for label in ("source scan", "CSV hashing", "warehouse check (postgres tables)",
                      "warehouse check (CSV)"):
            work[label] = {"seconds": 0.0, "rows": 0}
        postgres = committed_partitions(tree, EXTRACT_POSTGRES, day)[1]
        csv = committed_partitions(tree, EXTRACT_CSV, day)[1]
        for partition in postgres:
            columns = columns_of(pq.read_schema(partition.data_file))
            started = time.perf_counter()
            found = table_digest(src_cur, sql.Identifier(partition.stream),
                                 [source_expression(c) for c in columns],
                                 method=manifest_method(partition), columns=columns)
            work["source scan"]["seconds"] += time.perf_counter() - started
            work["source scan"]["rows"] += found.rows
        for partition in [*postgres, *csv]:
            columns = columns_of(pq.read_schema(partition.data_file))
            started = time.perf_counter()
            found = table_digest(wh_cur, warehouse_layout.snapshot_table(partition.stream),
                                 [warehouse_expression(c) for c in columns],
                                 sql.SQL("snapshot_date = {}").format(sql.Literal(day)),
                                 method=manifest_method(partition), columns=columns)
            kind = "CSV" if partition.source == "csv" else "postgres tables"
            checked = work[f"warehouse check ({kind})"]
            checked["seconds"] += time.perf_counter() - started
            checked["rows"] += found.rows
            if partition.source == "csv":
                hashing = ArrowDigest(columns)
                started = time.perf_counter()
                for batch in pq.ParquetFile(partition.data_file).iter_batches():
                    hashing.add(batch)
                work["CSV hashing"]["seconds"] += time.perf_counter() - started
                work["CSV hashing"]["rows"] += hashing.rows
    return work


def manifest_method(partition) -> str:
    """The digest method the partition's manifest names (the one its extract and load use)."""
    found = Digest.from_json(read_manifest(partition).content_digest)
    return found.method if found else METHOD

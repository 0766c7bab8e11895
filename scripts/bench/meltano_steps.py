"""Each step as a pod runs it: ``meltano run --no-state-update <job>`` with a private system DB.

The load is measured as pairs of a first load into an empty warehouse and its rerun; with an S3
side, each run alternates with the file-system run of the same step. The stock tap's comparison
runs here too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
from northwind_elt import localdb
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT

from scripts import seaweed

from .measure import BenchmarkError, Measurement, measure, median_of
from .settings import DETAILS, LOAD_RUNS, MELTANO_PROJECT, RERUN, RUN_DATE, STEP_RUNS
from .source import CSV_COLUMNS, Server, build_source, empty_source


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
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            # Every run reads the sources: a rerun would keep the day's succeeded extract and
            # time nothing but its start-up.
            "NORTHWIND_REEXTRACT": "1"}
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
    return {EXTRACT_POSTGRES: tables, EXTRACT_CSV: counts[DETAILS],
            LOAD_WAREHOUSE: tables + counts[DETAILS], PUBLISH_REPORT: counts[DETAILS]}[step]



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
        return run(f"load-warehouse-{n}", LOAD_WAREHOUSE, side)

    measured: list[dict[str, Measurement]] = [{} for _ in sides]
    for step in steps:
        if step == LOAD_WAREHOUSE:
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

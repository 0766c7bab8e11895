"""A step's fixed start-up under two (or more) settings, runs alternating: medians of wall and CPU.

Each run is ``meltano run --no-state-update <step>`` as a pod runs it: a run folder of its own,
Meltano's system database opened read-only, every extract reading its source again
(``NORTHWIND_REEXTRACT=1``), on an empty source (the Northwind tables, no rows) and a one-row CSV,
so the time is the start-up and not the data. CPU seconds are the step's whole process tree
(Meltano, the discovery, the tap and the target), from the children's resource usage.

The variants take turns run by run, so a drift of a shared machine moves them alike. The default
compares ``tap-pgcopy --discover`` answered by the SDK (``NORTHWIND_DISCOVER=sdk``) with the
light path (tap_pgcopy/discover_light.py).

Usage::

    uv run --frozen python -m scripts.startup_compare [--runs 7] [--step extract-postgres]
        [--variant sdk:NORTHWIND_DISCOVER=sdk --variant light:] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from northwind_elt import localdb
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
MELTANO_PROJECT = ROOT / "images" / "meltano"
SOURCE_DUMP = ROOT / "sources" / "northwind.sql"
ORDER_DETAILS_CSV = ROOT / "sources" / "order_details.csv"
EMPTY_SOURCE = "northwind_empty"
DAY = "2024-01-02"
STEPS = ("extract-postgres", "extract-csv")
DEFAULT_VARIANTS = ("sdk:NORTHWIND_DISCOVER=sdk", "light:")

sys.path.insert(0, str(ROOT / "dags"))
from northwind.meltano_local import own_run_folder  # noqa: E402 (the DAG folder's package)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:VAR=value,VAR=value`` -> (name, environment overrides)."""
    name, _, settings = text.partition(":")
    pairs = [item.split("=", 1) for item in settings.split(",") if item]
    if not name or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--variant {text!r}: expected NAME:VAR=value[,VAR=value...]")
    return name, dict(pairs)


def empty_source(state_dir: Path) -> dict[str, str]:
    """Start (or reuse) a local server in ``state_dir``; an empty Northwind; the step environment."""
    env = localdb.ensure_local_databases(state_dir, SOURCE_DUMP)
    admin = {"host": env["SOURCE_PGHOST"], "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        localdb.ensure_database(conn, EMPTY_SOURCE)
    if localdb.seed_source({**admin, "dbname": EMPTY_SOURCE}, SOURCE_DUMP):
        with psycopg.connect(**{**admin, "dbname": EMPTY_SOURCE}) as conn:
            tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    csv = state_dir / "order_details.csv"
    with open(ORDER_DETAILS_CSV, encoding="utf-8") as seed:  # the CSV tap refuses a file of no rows
        csv.write_text(seed.readline() + seed.readline(), encoding="utf-8")
    return env | {"SOURCE_PGDATABASE": EMPTY_SOURCE, "ORDER_DETAILS_CSV": str(csv)}


def children_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(step: str, env: dict[str, str], log: Path) -> tuple[float, float]:
    """One ``meltano run`` of ``step`` in a run folder and data tree of its own: (wall, CPU)."""
    database = MELTANO_PROJECT / ".meltano" / "meltano.db"
    with tempfile.TemporaryDirectory(prefix="startup-data-") as data, \
            own_run_folder(MELTANO_PROJECT, {**os.environ, **env}) as run_folder:
        full = {**os.environ, **env, **run_folder, "RUN_DATE": DAY, "NORTHWIND_REEXTRACT": "1",
                "NORTHWIND_DATA_ROOT": data, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                "MELTANO_DATABASE_URI": f"sqlite:///file:{database}?mode=ro&immutable=1&uri=true"}
        cpu, started = children_cpu(), time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            done = subprocess.run(["meltano", "run", "--no-state-update", step],
                                  cwd=MELTANO_PROJECT, env=full, stdout=out,
                                  stderr=subprocess.STDOUT, check=False)
        wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{step} failed (exit {done.returncode}): see {log}")
    return wall, cpu


def main() -> None:
    """Run the comparison and print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--step", choices=STEPS, default="extract-postgres")
    parser.add_argument("--variant", action="append", metavar="NAME:VAR=value,...")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local" / "startup-compare")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant or DEFAULT_VARIANTS]
    env = empty_source(args.state_dir)
    logs = args.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for n in range(args.runs):
        for name, overrides in variants:
            wall, cpu = run_once(args.step, env | overrides, logs / f"{name}-{n}.log")
            found[name].append((wall, cpu))
            print(f"run {n + 1} {name:>10}: {wall:5.2f} s wall, {cpu:5.2f} s CPU", flush=True)
    print(f"{args.step}, medians of {args.runs} runs (load average {os.getloadavg()[0]:.1f}):")
    for name, runs in found.items():
        print(f"  {name:>10}: {statistics.median(w for w, _ in runs):5.2f} s wall, "
              f"{statistics.median(c for _, c in runs):5.2f} s CPU")


if __name__ == "__main__":
    main()

r"""The history's part of a real day's load, with its fast paths and without (issue 26).

Builds the benchmark's scaled Northwind source (``--scale``, as ``scripts.bench``), runs the two
extract steps once, then loads the day in this process (:func:`northwind_elt.warehouse_load.
load_day`, as the benchmark's in-process figures) into fresh warehouses, taking turns between:

* ``general``: every table spliced the general way, no stamps (the history before issue 26);
* ``bulk, key kept``: a table's first day inserted from its partition into a history table that
  keeps its primary key row by row;
* ``fast``: the first day in bulk with the key built after the rows, and the stamps (the files'
  SHA-256 from their manifests) that skip a day the history holds.

Each turn times a first load into an empty warehouse, its rerun, and the next date with the same
files (a new day equal to the day before), each whole and its history part alone, beside raw
``COPY (FORMAT binary)`` of the same tables. Usage: ``uv run --frozen python -m
scripts.bench_history_day --scale 1000 --runs 3``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from northwind_elt import history
from northwind_elt.layout import DataTree
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES
from northwind_elt.warehouse_load import LoadOptions, load_day

from scripts.bench.baselines import raw_copy_in, raw_copy_out
from scripts.bench.inprocess import day_partitions
from scripts.bench.meltano_steps import private_meltano_dir, run_steps
from scripts.bench.settings import BENCH_SCHEMA, DETAILS, RUN_DATE
from scripts.bench.source import Server, build_source, public_tables

MODES = ("general", "bulk, key kept", "fast")
LOADS = ("first load", "rerun", "next day, same files")


class Timed:
    """Times :func:`history.record_day` (the history part of a load)."""

    def __init__(self):
        self.seconds = 0.0
        self.real = history.record_day

    def __call__(self, *args, **kwargs):
        """Run :func:`history.record_day`, adding its seconds."""
        started = time.perf_counter()
        try:
            return self.real(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def set_mode(mode: str) -> None:
    """Point the history module at ``mode``'s paths."""
    history.BULK_FIRST_DAY = mode != "general"
    history.KEY_AFTER_ROWS = mode == "fast"


def turn(server: Server, mode: str, tree: DataTree, timed: Timed) -> dict[str, tuple[float, float]]:
    """One warehouse in ``mode``: each of :data:`LOADS`, (whole seconds, history seconds)."""
    set_mode(mode)
    day = dt.date.fromisoformat(RUN_DATE)
    partitions = day_partitions(tree, day)
    if mode == "general":
        partitions = [dataclasses.replace(p, sha256=None) for p in partitions]
    server.create_database("history_day_bench")
    found = {}
    with server.connect("history_day_bench") as conn:
        for name, as_day in zip(LOADS, (day, day, day + dt.timedelta(days=1)), strict=True):
            server.checkpoint()
            timed.seconds, started = 0.0, time.perf_counter()
            load_day(conn, as_day, partitions, LoadOptions())
            found[name] = (time.perf_counter() - started, timed.seconds)
    return found


def main(argv: list[str] | None = None) -> int:
    """Build, extract, load in turns; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="history-day-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    server = None
    try:
        private_meltano_dir(workdir)
        server = Server(workdir)
        source, folder = f"northwind_x{args.scale}", workdir / "x"
        folder.mkdir()
        csv_path = folder / "order_details.csv"
        counts = build_source(server, source, args.scale, csv_path)
        with server.connect(source) as conn:
            tables = {t: f"public.{t}" for t in public_tables(conn)}
        tables[DETAILS] = f"{BENCH_SCHEMA}.{DETAILS}"
        rows = sum(counts.values())
        raw_copy_out(server, source, tables, folder / "raw", rows, "raw out")
        raw = raw_copy_in(server, source, tables, folder / "raw", rows, "raw in").wall
        run_steps(server, source, counts, csv_path, folder, (EXTRACT_POSTGRES, EXTRACT_CSV),
                  runs=1)
        timed = Timed()
        history.record_day = timed
        found: dict[str, dict[str, list[tuple[float, float]]]] = {m: {n: [] for n in LOADS}
                                                                 for m in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                for name, seconds in turn(server, mode, DataTree(folder / "data"), timed).items():
                    found[mode][name].append(seconds)
        print(f"scale {args.scale}: {rows:,} rows; raw COPY in {raw:.2f} s; medians of "
              f"{args.runs} (load s / x raw COPY / history s)")
        for mode in MODES:
            cells = []
            for name, runs in found[mode].items():
                whole = statistics.median(w for w, _ in runs)
                part = statistics.median(h for _, h in runs)
                cells.append(f"{name} {whole:5.2f} s {whole / raw:4.2f}x, history {part:5.2f} s")
            print(f"  {mode:15} " + " | ".join(cells))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

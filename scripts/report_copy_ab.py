"""The report in-process, its COPY read by ``copy_out`` (libpq's row loop) or by psycopg's iterator.

Both on the same warehouse (scale 1000 by default: the benchmark's source, both extracts through
``meltano run``, the load in-process), taking turns; prints each run's wall and client CPU and the
medians. Usage: ``uv run --frozen python -m scripts.report_copy_ab [--scale N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from northwind_elt import report
from northwind_elt.layout import DataTree

from scripts.bench.inprocess import load_in_process
from scripts.bench.meltano_steps import private_meltano_dir, run_meltano, step_environment
from scripts.bench.settings import RUN_DATE
from scripts.bench.source import Server, build_source


def psycopg_copy_to_file(cur, statement, outbox, name, started=None) -> int:
    """``report.copy_to_file`` as it was: psycopg's ``Copy`` iterator, one row per chunk."""
    rows = 0
    with outbox.file(name) as staged:
        with open(staged.path, "wb") as out, cur.copy(statement) as copy:
            if started is not None:
                started(staged)
            for chunk in copy:
                out.write(chunk)
                rows += 1
                if rows % report.FOLLOW_ROWS == 0:
                    out.flush()
                    staged.grew()
    return rows


def client_cpu() -> float:
    """This process's CPU seconds (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Build the warehouse, then time the report both ways, taking turns."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="report-ab-", dir="/tmp"))
    work.chmod(0o755)  # the server runs as its own user
    private_meltano_dir(work)
    server = Server(work)
    try:
        csv = work / "order_details.csv"
        build_source(server, "source", args.scale, csv)
        server.create_database("warehouse")
        env = step_environment(server, "source", "warehouse", work / "data", csv)
        for step in ("extract-postgres", "extract-csv"):
            run_meltano(step, [step], 0, env, work / "logs")
        day = dt.date.fromisoformat(RUN_DATE)
        with server.connect("warehouse") as conn:
            load_in_process(conn, DataTree.from_setting(str(work / "data")), day, day, None)
        ways = {"copy_out": report.copy_to_file, "psycopg": psycopg_copy_to_file}
        walls: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.runs):
            for way, function in ways.items():
                report.copy_to_file = function
                out = work / f"out-{way}"
                out.mkdir(exist_ok=True)
                with server.connect("warehouse") as conn:
                    started, cpu = time.perf_counter(), client_cpu()
                    rows = report.write_report(conn, day, out)
                    wall = time.perf_counter() - started
                walls[way].append(wall)
                print(f"{way:<9} {rows:,} rows  {wall:.2f} s wall  {client_cpu() - cpu:.2f} s "
                      "client CPU", flush=True)
        print("medians: " + ", ".join(f"{w} {statistics.median(v):.2f} s" for w, v in walls.items()))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

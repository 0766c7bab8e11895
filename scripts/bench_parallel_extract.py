r"""How extract-postgres scales with the tap's connections, against single-stream raw COPY.

On the benchmark's scaled Northwind source (scripts/bench builds it), in the same run:
raw ``\copy (SELECT * FROM t) TO <file> (FORMAT binary)`` of every public table (one stream,
median of 3), then ``meltano run extract-postgres`` with ``TAP_PGCOPY_CONNECTIONS`` = each N,
the Ns taking turns round after round so a drift of the machine moves them alike. The data part
is the step's wall time minus its start-up (the same step on an empty source, same N).

``--in-process`` times the tap alone in this process instead (no Meltano, no start-up), with and
without content digests, and counts CPU seconds: the tap's own and its server backends' (sampled
every 20 ms), so that on a machine shared with other work the cost of each N can still be
compared (wall time there measures the neighbours as much as the extract).

Usage::

    uv run --frozen python -m scripts.bench_parallel_extract [--scale 100] [--runs 3]
        [--connections 1,2,4] [--in-process] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
from northwind_elt.content_digest import DIGEST_VARIABLE
from tap_pgcopy.tap import TapPgCopy

from scripts.bench.baselines import raw_copy_out
from scripts.bench.measure import Measurement, median_of
from scripts.bench.meltano_steps import private_meltano_dir, run_meltano, step_environment
from scripts.bench.source import Server, build_source, empty_source, public_tables

EXTRACT = "extract-postgres"
#: The tap's own log lines that open and close its reading of the snapshot.
_STARTS, _ENDS = re.compile(r"tap-pgcopy +extracting \d+ tables on"), "tap-pgcopy   content digests of "
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z")


def tap_read_seconds(log: Path) -> float:
    """From the tap's first queued range to its last digest (no Meltano or Python start-up)."""
    stamps = {}
    for line in log.read_text(errors="replace").splitlines():
        key = "start" if _STARTS.search(line) else "end" if _ENDS in line else None
        if key and (found := _STAMP.match(line)):
            stamps[key] = dt.datetime.fromisoformat(found.group(1))
    return (stamps["end"] - stamps["start"]).total_seconds()


def extract_runs(server: Server, source: str, folder: Path, connections: list[int],
                 runs: int, rows: int) -> tuple[dict[int, Measurement], dict[int, float]]:
    """The median extract of ``source`` for each N, and the tap's median reading time.

    Each run writes a fresh data tree; the reading time is :func:`tap_read_seconds`.
    """
    found: dict[int, list[Measurement]] = {n: [] for n in connections}
    for run in range(runs):
        for n in connections:
            root = folder / f"data-{source}-{n}-{run}"
            env = step_environment(server, source, f"{source}_wh", root,
                                         folder / "order_details.csv")
            env["TAP_PGCOPY_CONNECTIONS"] = str(n)
            found[n].append(run_meltano(f"{source}-n{n}-{run}", [EXTRACT], rows, env,
                                              folder / "logs"))
            shutil.rmtree(root, ignore_errors=True)
    reads = {n: statistics.median(tap_read_seconds(Path(m.log)) for m in found[n])
             for n in connections}
    return {n: median_of(found[n]) for n in connections}, reads


class BackendCpu(threading.Thread):
    """Sum the CPU seconds of the server's processes started after this (the backends of a run)."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        pid = (server.state / "postgres" / "postmaster.pid").read_text().split()[0]
        self.postmaster = psutil.Process(int(pid))
        self.before = {p.pid for p in self.postmaster.children()}
        self.stop, self.seen = threading.Event(), {}
        self.start()

    def run(self) -> None:  # noqa: D102 (threading.Thread protocol)
        while not self.stop.is_set():
            for child in self.postmaster.children():
                if child.pid not in self.before:
                    with contextlib.suppress(psutil.Error):
                        times = child.cpu_times()
                        self.seen[child.pid] = times.user + times.system
            self.stop.wait(0.02)

    def total(self) -> float:
        """CPU seconds of every backend seen."""
        self.stop.set()
        self.join()
        return sum(self.seen.values())


def tap_in_process(server: Server, source: str, folder: Path, connections: int,
                   digests: str) -> tuple[float, float, float]:
    """One tap run in this process: wall, the process's CPU and its backends' CPU (seconds)."""
    os.environ[DIGEST_VARIABLE] = digests
    folder.mkdir(parents=True)
    info = server.conninfo(source)
    config = {**info, "connections": connections, "batch_config": {
        "encoding": {"format": "parquet"}, "storage": {"root": folder.as_uri()}}}
    backends = BackendCpu(server)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        TapPgCopy(config=config).sync_all()
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    shutil.rmtree(folder)
    own = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, own, backends.total()


def raw_in_process(server: Server, source: str, tables: list[str], folder: Path
                   ) -> tuple[float, float, float]:
    r"""Raw ``\copy ... (FORMAT binary)`` of ``tables`` by psql: wall, psql's CPU, the server's."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "raw.sql"
    script.write_text("".join(f"\\copy (SELECT * FROM public.{t}) TO '{folder / t}.bin' "  # noqa: S608
                              "WITH (FORMAT binary)\n" for t in tables))
    backends = BackendCpu(server)
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(server.psql_command(source, script), check=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, own, backends.total()


def in_process(server: Server, source: str, folder: Path, connections: list[int],
               runs: int, tables: list[str]) -> None:
    """Print the in-process table: median wall and CPU per N, digests off and on."""
    found: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for run in range(runs):
        found.setdefault((0, "raw"), []).append(raw_in_process(server, source, tables,
                                                               folder / "raw"))
        for n in connections:
            for digests in ("off", "postgres"):
                found.setdefault((n, digests), []).append(tap_in_process(
                    server, source, folder / f"tap-{n}-{digests}-{run}", n, digests))
    raw = statistics.median(r[0] for r in found[0, "raw"])
    print(f"in process, medians of {runs}; N 0 = raw COPY (psql); CPU = the client's + its server "
          "backends'; cpu/2 = the wall of two free cores")
    print(f"{'N':>3} {'digests':>8} {'wall s':>7} {'min s':>6} {'wall/raw':>9} {'tap cpu':>8} "
          f"{'server cpu':>11} {'cpu/2 / raw':>12}")
    for (n, digests), runs_found in found.items():
        wall = statistics.median(r[0] for r in runs_found)
        low = min(r[0] for r in runs_found)
        own = statistics.median(r[1] for r in runs_found)
        backend = statistics.median(r[2] for r in runs_found)
        print(f"{n:>3} {digests:>8} {wall:>7.2f} {low:>6.2f} {wall / raw:>8.2f}x "
              f"{own:>8.2f} {backend:>11.2f} {(own + backend) / 2 / raw:>11.2f}x")


def main() -> None:
    """Build the source, measure raw COPY and the extract for each N, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", default="1,2,4")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--in-process", action="store_true",
                        help="time the tap alone in this process, with its CPU and its server's")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the in-process tap's log lines
    connections = [int(n) for n in args.connections.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    server = Server(workdir)
    try:
        private_meltano_dir(workdir)
        source = f"northwind_x{args.scale}"
        counts = build_source(server, source, args.scale, workdir / "order_details.csv")
        with server.connect(source) as conn:
            tables = public_tables(conn)
        rows = sum(counts[t] for t in tables)
        if args.in_process:
            in_process(server, source, workdir / "in-process", connections, args.runs, tables)
            return
        raw = raw_copy_out(server, source, {t: f"public.{t}" for t in tables},
                                 workdir / "raw", rows, "raw out (public tables)")
        empty_source(server, "northwind_empty", workdir / "empty.csv")
        start, empty_reads = extract_runs(server, "northwind_empty", workdir, connections,
                                          args.runs, 0)
        steps, reads = extract_runs(server, source, workdir, connections, args.runs, rows)
        print(f"scale {args.scale}: {rows:,} rows in {len(tables)} public tables; raw COPY "
              f"(FORMAT binary, one stream) {raw.wall:.2f} s; medians of {args.runs}")
        print("data s = wall - start-up (empty source); tap read s = the tap's log from its first "
              "range to its last digest, minus the same on the empty source")
        print(f"{'N':>3} {'wall s':>8} {'start s':>8} {'data s':>8} {'data/raw':>9} "
              f"{'tap read s':>11} {'read/raw':>9} {'max proc MB':>12} {'tree MB':>8}")
        for n in connections:
            step, fixed = steps[n], start[n]
            data, read = step.wall - fixed.wall, reads[n] - empty_reads[n]
            print(f"{n:>3} {step.wall:>8.2f} {fixed.wall:>8.2f} {data:>8.2f} "
                  f"{data / raw.wall:>8.2f}x {read:>11.2f} {read / raw.wall:>8.2f}x "
                  f"{step.rss_process_mb:>12.0f} {step.rss_tree_mb:>8.0f}")
    finally:
        server.stop()
        if args.keep:
            print(f"logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

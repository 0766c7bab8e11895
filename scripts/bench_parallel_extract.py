r"""How extract-postgres scales with the tap's connections, against single-stream raw COPY.

On the benchmark's scaled Northwind source (scripts/benchmark.py builds it), in the same run:
raw ``\copy (SELECT * FROM t) TO <file> (FORMAT binary)`` of every public table (one stream,
median of 3), then ``meltano run extract-postgres`` with ``TAP_PGCOPY_CONNECTIONS`` = each N,
the Ns taking turns round after round so a drift of the machine moves them alike. The data part
is the step's wall time minus its start-up (the same step on an empty source, same N).

Usage::

    uv run --frozen python scripts/bench_parallel_extract.py [--scale 100] [--runs 3]
                                                             [--connections 1,2,4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import statistics
import tempfile
from pathlib import Path

import benchmark as bench

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


def extract_runs(server: bench.Server, source: str, folder: Path, connections: list[int],
                 runs: int, rows: int) -> tuple[dict[int, bench.Measurement], dict[int, float]]:
    """The median extract of ``source`` for each N, and the tap's median reading time.

    Each run writes a fresh data tree; the reading time is :func:`tap_read_seconds`.
    """
    found: dict[int, list[bench.Measurement]] = {n: [] for n in connections}
    for run in range(runs):
        for n in connections:
            root = folder / f"data-{source}-{n}-{run}"
            env = bench.step_environment(server, source, f"{source}_wh", root,
                                         folder / "order_details.csv")
            env["TAP_PGCOPY_CONNECTIONS"] = str(n)
            found[n].append(bench.run_meltano(f"{source}-n{n}-{run}", [EXTRACT], rows, env,
                                              folder / "logs"))
            shutil.rmtree(root, ignore_errors=True)
    reads = {n: statistics.median(tap_read_seconds(Path(m.log)) for m in found[n])
             for n in connections}
    return {n: bench.median_of(found[n]) for n in connections}, reads


def main() -> None:
    """Build the source, measure raw COPY and the extract for each N, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", default="1,2,4")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    connections = [int(n) for n in args.connections.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    server = bench.Server(workdir)
    try:
        bench.private_meltano_dir(workdir)
        source = f"northwind_x{args.scale}"
        counts = bench.build_source(server, source, args.scale, workdir / "order_details.csv")
        with server.connect(source) as conn:
            tables = bench.public_tables(conn)
        rows = sum(counts[t] for t in tables)
        raw = bench.raw_copy_out(server, source, {t: f"public.{t}" for t in tables},
                                 workdir / "raw", rows, "raw out (public tables)")
        bench.empty_source(server, "northwind_empty", workdir / "empty.csv")
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

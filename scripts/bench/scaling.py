"""The scaling table (issue 26): extract-postgres and load-warehouse on 1, 2 and 4 connections.

``python -m scripts.bench --scaling`` (``make bench-scaling``). At each scale (``--scaling-scales``,
default 1000 and 10000) the source is built as the main benchmark builds it, raw ``COPY`` out and
in are measured, then each step runs as a pod runs it (``meltano run``) with N connections:
extract-postgres with ``NORTHWIND_EXTRACT_CONNECTIONS=N`` (threads sharing the exported snapshot,
large tables cut into page ranges), load-warehouse with ``NORTHWIND_LOAD_CONNECTIONS=N`` (fresh
tables filled on N connections, one swap), each load into an empty warehouse. The runs of the N
take turns, so a drift of the machine moves them alike. Each N's fixed start-up is measured on an
empty source, as the main table's; the data part is wall minus it.

CPU is counted on both sides of the socket: the step's processes (``ru_utime + ru_stime`` of the
waited-for tree) and the whole server's during the step (:meth:`Server.cpu_seconds`: backends,
checkpointer, WAL writer), so a reader sees when the two cores, not the connections, are the limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE
from psycopg import sql

from .baselines import raw_copy_in, raw_copy_out
from .measure import Measurement, median_of
from .meltano_steps import FS_SIDE, run_meltano, step_environment, step_rows
from .settings import BASELINE_OF, BENCH_SCHEMA, DETAILS, RAW_IN_SCHEMA, STARTUP_RUNS
from .source import Server, build_source, empty_source, public_tables

SCALING_SCALES = (1000, 10000)
CONNECTIONS = (1, 2, 4)
#: The variable each measured step takes its connection count from (images/meltano/meltano.yml).
CONNECTION_VARIABLE = {EXTRACT_POSTGRES: "NORTHWIND_EXTRACT_CONNECTIONS",
                       LOAD_WAREHOUSE: "NORTHWIND_LOAD_CONNECTIONS"}
#: Above this scale a step run takes minutes: one run per N instead of the median of three.
MEDIAN_UP_TO_SCALE = 1000


def runs_at(scale: int) -> int:
    """Runs of each measurement at ``scale``: 3 (median) up to MEDIAN_UP_TO_SCALE, else 1."""
    return 3 if scale <= MEDIAN_UP_TO_SCALE else 1



def with_server_cpu(server: Server, run: Callable[[], Measurement]) -> Measurement:
    """``run()``, after a checkpoint, with the server's CPU seconds during it recorded."""
    server.checkpoint()
    before = server.cpu_seconds()
    measured = run()
    measured.server_cpu = server.cpu_seconds() - before
    return measured



def step_runs(server: Server, source: str, counts: dict[str, int], csv_path: Path, folder: Path,
              connections: Sequence[int], runs: int) -> dict[str, dict[int, Measurement]]:
    """Each step with each N, ``runs`` times taking turns; the median run per step and N."""
    data_root, warehouse = folder / "data", FS_SIDE.warehouse(source)
    shutil.rmtree(data_root, ignore_errors=True)
    server.create_database(warehouse)
    env = step_environment(server, source, warehouse, data_root, csv_path)
    logs = folder / "logs"
    # The load reads both extracts' partitions; the CSV extract is not measured here.
    run_meltano("extract-csv", [EXTRACT_CSV], counts[DETAILS], env, logs)
    found: dict[str, dict[int, list[Measurement]]] = {s: {n: [] for n in connections}
                                                      for s in CONNECTION_VARIABLE}
    for step, variable in CONNECTION_VARIABLE.items():  # the extracts first: the load reads them
        for run in range(runs):
            for n in connections:
                if step == LOAD_WAREHOUSE:
                    server.create_database(warehouse)  # every run a first load
                found[step][n].append(with_server_cpu(server, functools.partial(
                    run_meltano, f"{step}-n{n}-{run}", [step], step_rows(step, counts),
                    env | {variable: str(n)}, logs)))
    return {step: {n: median_of(ms) for n, ms in by_n.items()} for step, by_n in found.items()}



def raw_baselines(server: Server, source: str, counts: dict[str, int], folder: Path, runs: int
                  ) -> dict[str, Measurement]:
    """Raw COPY out of the public tables, and in of every table, with the server's CPU."""
    with server.connect(source) as conn:
        tables = public_tables(conn)
    public = {t: f"public.{t}" for t in tables}
    everything = public | {DETAILS: f"{BENCH_SCHEMA}.{DETAILS}"}
    rows_public = sum(counts[t] for t in tables)
    out_name, in_name = BASELINE_OF[EXTRACT_POSTGRES], BASELINE_OF[LOAD_WAREHOUSE]
    # Every file the raw COPY in reads (the details' only once, untimed).
    raw_copy_out(server, source, {DETAILS: everything[DETAILS]}, folder, counts[DETAILS],
                 "raw out (details)", runs=1)
    outs = [with_server_cpu(server, lambda: raw_copy_out(
        server, source, public, folder, rows_public, out_name, runs=1)) for _ in range(runs)]
    ins = [with_server_cpu(server, lambda: raw_copy_in(
        server, source, everything, folder, rows_public + counts[DETAILS], in_name, runs=1))
        for _ in range(runs)]
    with server.connect(source, autocommit=True) as conn:  # gigabytes at scale 10000
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(RAW_IN_SCHEMA)))
    return {out_name: median_of(outs), in_name: median_of(ins)}



@dataclasses.dataclass
class ScalingResult:
    """One scale's figures: rows, raw COPY, each step per N, and the start-ups per N."""

    scale: int
    rows: int
    runs: int
    raw: dict[str, Measurement]
    steps: dict[str, dict[int, Measurement]]
    start: dict[str, dict[int, Measurement]]



def measure_scale(server: Server, scale: int, folder: Path, connections: Sequence[int],
                  start: dict[str, dict[int, Measurement]]) -> ScalingResult:
    """Build the source at ``scale``, measure the raw COPYs and each step per N; drop it."""
    folder.mkdir(parents=True, exist_ok=True)
    source, csv_path, runs = f"northwind_x{scale}", folder / "order_details.csv", runs_at(scale)
    started = time.perf_counter()
    counts = build_source(server, source, scale, csv_path)
    print(f"  scale {scale}: source built in {time.perf_counter() - started:.1f} s "
          f"({sum(counts.values()):,} rows); load average {os.getloadavg()[0]:.1f}", flush=True)
    raw = raw_baselines(server, source, counts, folder / "raw", runs)
    shutil.rmtree(folder / "raw", ignore_errors=True)
    steps = step_runs(server, source, counts, csv_path, folder, connections, runs)
    shutil.rmtree(folder, ignore_errors=True)
    for name in (source, FS_SIDE.warehouse(source)):
        server.drop_database(name)
    return ScalingResult(scale, sum(counts.values()), runs, raw, steps, start)



def startups(server: Server, folder: Path, connections: Sequence[int], runs: int
             ) -> dict[str, dict[int, Measurement]]:
    """Each step's fixed start-up with each N: the empty source and its one-row CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "order_details.csv"
    empty_source(server, "northwind_empty", csv_path)
    return step_runs(server, "northwind_empty", {DETAILS: 1}, csv_path, folder, connections, runs)



HEADER = (f"{'step':<20}{'N':>3}{'wall s':>9}{'start s':>9}{'data s':>9}{'data/raw':>10}"
          f"{'step CPU':>10}{'server CPU':>12}{'RSS MB':>8}{'tree MB':>9}")


def _cpu(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"



def scaling_lines(results: Sequence[ScalingResult], loads: tuple[float, float]) -> list[str]:
    """The printed scaling table: per scale, the raw COPYs, then each step per N (pure)."""
    lines = [f"Scaling (issue 26): connections N per step, {os.cpu_count()} cores; load average "
             f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end",
             "data s = wall - the same N's start-up (empty source); data/raw = data s / the raw "
             "COPY (single stream); CPU s = the step's processes, the server's backends and "
             "helpers during the step"]
    for result in results:
        lines += ["", f"scale {result.scale} ({result.rows:,} rows; "
                  + ("median of 3 runs" if result.runs > 1 else "one run") + " each):",
                  HEADER, "-" * len(HEADER)]
        for name, raw in result.raw.items():
            lines.append(f"{name:<23}{raw.wall:>9.2f}{'':>18}{'':>10}{_cpu(raw.cpu):>10}"
                         f"{_cpu(raw.server_cpu):>12}{raw.rss_process_mb:>8.0f}"
                         f"{raw.rss_tree_mb:>9.0f}")
        for step, by_n in result.steps.items():
            raw = result.raw.get(BASELINE_OF[step])
            for n, m in by_n.items():
                start = result.start.get(step, {}).get(n)
                data = max(m.wall - start.wall, 0.0) if start else None
                ratio = f"{data / raw.wall:.2f}x" if data is not None and raw else "-"
                failed = "" if m.returncode == 0 else f"  FAILED (exit {m.returncode}, {m.log})"
                lines.append(f"{step:<20}{n:>3}{m.wall:>9.2f}"
                             f"{(f'{start.wall:.2f}' if start else '-'):>9}"
                             f"{(f'{data:.2f}' if data is not None else '-'):>9}{ratio:>10}"
                             f"{_cpu(m.cpu):>10}{_cpu(m.server_cpu):>12}"
                             f"{m.rss_process_mb:>8.0f}{m.rss_tree_mb:>9.0f}{failed}")
    return lines



def to_json(results: Sequence[ScalingResult], loads: tuple[float, float]) -> dict:
    """Everything the scaling run measured, for bench-results/."""
    return {"measured_at": dt.datetime.now(dt.UTC).isoformat(), "cores": os.cpu_count(),
            "load_average": {"start": loads[0], "end": loads[1]},
            "scales": [{"scale": r.scale, "rows": r.rows, "runs": r.runs,
                        "raw": {k: dataclasses.asdict(m) for k, m in r.raw.items()},
                        "steps": {s: {str(n): dataclasses.asdict(m) for n, m in by_n.items()}
                                  for s, by_n in r.steps.items()},
                        "start": {s: {str(n): dataclasses.asdict(m) for n, m in by_n.items()}
                                  for s, by_n in r.start.items()}}
                       for r in results]}



def run_scaling(server: Server, workdir: Path, scales: Sequence[int], output: Path,
                connections: Sequence[int] = CONNECTIONS, startup_runs: int = STARTUP_RUNS
                ) -> list[ScalingResult]:
    """Measure, print and write the scaling table; return its results."""
    load_start = os.getloadavg()[0]
    print(f"scaling: load average {load_start:.1f} at the start", flush=True)
    start = startups(server, workdir / "startup", connections, startup_runs)
    results = [measure_scale(server, s, workdir / f"x{s}", connections, start) for s in scales]
    loads = (load_start, os.getloadavg()[0])
    print("\n" + "\n".join(scaling_lines(results, loads)))
    output.mkdir(parents=True, exist_ok=True)
    out = output / f"bench-scaling-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(to_json(results, loads), indent=2) + "\n")
    print(f"\nscaling: results in {out}")
    return results

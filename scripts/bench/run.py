"""The benchmark's run: the scales, the start-ups, the stock comparison, the printed table, the JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from northwind_elt.content_digest import DIGEST_VARIABLE
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT
from psycopg import sql

from scripts import bench_history, seaweed

from . import __doc__ as PACKAGE_DOC
from .baselines import raw_copy_in, raw_copy_out, raw_report_out
from .digests import digest_cost
from .inprocess import warehouse_in_process
from .measure import ScaleResult
from .meltano_steps import FS_SIDE, Side, private_meltano_dir, run_steps, stock_comparison
from .output import report, to_json
from .scaling import CONNECTIONS, SCALING_SCALES, run_scaling
from .settings import (
    BENCH_SCHEMA,
    DEFAULT_SCALE,
    DEFAULT_STOCK_SLICE,
    DETAILS,
    DIGEST_STEPS,
    GROWTH_SCALES,
    MEASURED_STEPS,
    RESULTS,
    STARTUP_RUNS,
    STEP_RUNS,
)
from .source import Server, build_source, public_tables
from .startup import startup, startup_breakdown


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
    if EXTRACT_CSV in steps or LOAD_WAREHOUSE in steps:
        raw["raw out (details)"] = raw_copy_out(server, source, details, raw_folder,
                                                counts[DETAILS], "raw out (details)")
    if LOAD_WAREHOUSE in steps:
        raw["raw in (all tables)"] = raw_copy_in(server, source, public | details, raw_folder,
                                                 rows_public + counts[DETAILS],
                                                 "raw in (all tables)")
    runs = STEP_RUNS if in_process else 1  # the main scale's figures are medians; growth's not
    sides = [FS_SIDE, Side("-s3", s3)] if s3 else [FS_SIDE]
    measured, *on_s3 = run_steps(server, source, counts, csv_path, folder, steps, sides, runs)
    if PUBLISH_REPORT in steps:
        raw["raw report query out"] = raw_report_out(server, FS_SIDE.warehouse(source), raw_folder,
                                                     counts[DETAILS])
    found = None
    if in_process and PUBLISH_REPORT in steps:
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



def positive_list(text: str) -> tuple[int, ...]:
    """``1000,10000`` -> (1000, 10000): whole numbers, each at least 1 (an argparse type)."""
    try:
        numbers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, comma-separated: {text!r}")
    return numbers



def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON; return 0 (1 if a step failed)."""
    parser = argparse.ArgumentParser(prog="python -m scripts.bench",
                                     description=PACKAGE_DOC.split("\n")[0])
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
    parser.add_argument("--scaling", action="store_true",
                        help="only the scaling table: extract-postgres and load-warehouse on "
                             + ", ".join(map(str, CONNECTIONS)) + " connections")
    parser.add_argument("--scaling-scales", type=positive_list, default=SCALING_SCALES,
                        help="the scales of --scaling, comma-separated (default "
                             + ",".join(map(str, SCALING_SCALES)) + ")")
    parser.add_argument("--scaling-connections", type=positive_list, default=CONNECTIONS,
                        help="the connection counts N of --scaling, comma-separated (default "
                             + ",".join(map(str, CONNECTIONS)) + ")")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    steps = (EXTRACT_POSTGRES,) if args.quick else DIGEST_STEPS if args.digests_only else MEASURED_STEPS

    # Outside /root: the server runs as its own system user, which must reach its folder.
    workdir = Path(tempfile.mkdtemp(prefix="northwind-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    server = s3 = None
    try:
        print(f"benchmark: work folder {workdir}", flush=True)
        private_meltano_dir(workdir)
        server = Server(workdir)
        if args.scaling:
            results = run_scaling(server, workdir, args.scaling_scales, args.output,
                                  args.scaling_connections, args.startup_runs)
            return 1 if any(m.returncode for r in results for by_n in r.steps.values()
                            for m in by_n.values()) else 0
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

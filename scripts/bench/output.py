"""The printed report and the JSON document (pure: figures in, lines or a dict out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import os
from pathlib import Path

from northwind_elt.content_digest import DIGEST_VARIABLE

from .goals import goal_lines, in_process_lines, issue26_lines, s3_lines, warehouse_goal_lines
from .measure import Measurement, ScaleResult
from .settings import (
    BASELINE_OF,
    DETAILS,
    DIGEST_MODES,
    DIGEST_STEPS,
    MEASURED_STEPS,
    RERUN,
    RUN_DATE,
    STARTUP_OF,
)
from .startup import MELTANO_CLI, MIGRATION, PLUGIN_MODULES, STEP_PLUGINS, has_bytecode
from .table import HEADER, rate, raw_line, step_line


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
              "rows.", "", "Goals (#N: the issue that set the goal):"]
    lines += issue26_lines(main, start)
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
                     f"{rate(theirs['slice'].rows, theirs['slice'].wall)}")
        if data_ours > 0:
            lines.append(f"  data part: stock {data_theirs:.2f} s vs ours {data_ours:.2f} s "
                         f"= {data_theirs / data_ours:.1f}x slower")
        if theirs["slice"].returncode != 0:
            lines.append("  (the stock pairing exits 1: target-datatree refuses to publish without "
                         "our taps' completion message, after staging every record)")
    if growth:
        lines += ["", "How cost grows (wall s / largest-process RSS MB per step):"]
        header = f"{'scale':>6}{'rows':>12}" + "".join(f"{s:>22}" for s in MEASURED_STEPS)
        lines += [header, "-" * len(header)]
        for result in [*growth, main]:
            cells = "".join(
                f"{(f'{m.wall:.2f} s / {m.rss_process_mb:.0f} MB' if m else '-'):>22}"
                for m in (result.steps.get(s) for s in MEASURED_STEPS))
            lines.append(f"{result.scale:>6}{sum(result.counts.values()):>12,}{cells}")
    return lines



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



def breakdown_lines(parts: dict[str, Measurement], start: dict[str, Measurement]) -> list[str]:
    """The start-up breakdown, then each step's start-up split into Meltano, plugins and the rest."""
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

"""``northwind``: the operator's command line.

northwind status [--date D] [--json]   which steps succeeded for which days, with row counts
                 [--html PATH]        ... also drawn as one HTML page (northwind_elt.status_html)
northwind report                       the publish-report step (RUN_DATE, WAREHOUSE_PG*)
northwind verify --date D [--source]   re-check a loaded day against its manifests (and the source)
northwind prune [--keep-days N]        remove data-tree days beyond NORTHWIND_KEEP_DAYS loaded days
northwind seed-source [--dump FILE]    load the Northwind dump into the source (once)
northwind local-env [--shell]          start the embedded PostgreSQL; print the step settings
"""

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from northwind_elt import faults, logger, pgconn, steps
from northwind_elt.commits import (
    Commit,
    Superseded,
    remove_attempt,
    remove_superseded,
    write_commit,
)
from northwind_elt.entry import is_user_error
from northwind_elt.errors import PrerequisiteError, SettingError, StorageError, one_line
from northwind_elt.layout import REPORT_NAME, DataTree
from northwind_elt.prune import prune
from northwind_elt.report import write_report
from northwind_elt.run_date import RUN_DATE_VARIABLE, parse_run_date
from northwind_elt.treefs import Outbox
from northwind_elt.warehouse_load import KEEP_DAYS_VARIABLE, keep_days_setting

#: The repository (for local defaults); in the image this is /project.
REPOSITORY = Path(__file__).resolve().parents[5]


def settings_from_env(prefix: str) -> dict[str, str]:
    """Connection settings from ``<prefix>HOST``, ``PORT``, ``DATABASE``, ``USER``, ``PASSWORD``."""
    names = {"host": "HOST", "port": "PORT", "dbname": "DATABASE", "user": "USER",
             "password": "PASSWORD"}
    return {key: os.environ.get(prefix + suffix, "") for key, suffix in names.items()}


def command_status(args: argparse.Namespace) -> int:
    """Print the markers of every day (or one day), one line per step, with derived states.

    ``dead``: the marker says running, but its process is gone or its lease expired. ``stale``:
    a success whose prerequisites have been rerun since (their current success is not what it
    read); rerunning the step refreshes it.
    """
    tree = DataTree.from_setting(args.data_root)
    days = [parse_run_date(args.date, "--date")] if args.date else tree.status_days()
    markers = [m for day in days for step in steps.STEPS
               if (m := steps.read_marker(tree, step, day)) is not None]
    states = [marker_state(tree, marker) for marker in markers]
    if args.html:  # imported only here: plain ``status`` never pays for the page
        from northwind_elt.status_html import write_page
        print(write_page(args.html, markers, states, tree.url))
        return 0
    if args.json:
        print(json.dumps([asdict(m) | {"state": state, "state_detail": why}
                          for m, (state, why) in zip(markers, states, strict=True)],
                         indent=2, sort_keys=True))
        return 0
    if not markers:
        print(f"no step has run yet under {tree.url}" + (f" for {args.date}" if args.date else ""))
        return 0
    print(f"{'date':<12}{'step':<18}{'status':<9}{'rows':>10}  detail")
    for marker, (state, why) in zip(markers, states, strict=True):
        detail = why or marker.error or ", ".join(
            f"{s}={n}" for s, n in sorted(marker.rows.items()))
        if not args.date and len(detail) > 80:
            detail = f"{len(marker.rows)} streams"
        print(f"{marker.run_date:<12}{marker.step:<18}{state:<9}"
              f"{sum(marker.rows.values()):>10}  {detail}")
    return 0


def marker_state(tree: DataTree, marker: steps.StepMarker) -> tuple[str, str]:
    """The state ``status`` shows for ``marker`` (dead and stale derived), and why, if derived."""
    state = steps.state_of(tree, marker)
    if state == steps.DEAD:
        return state, (f"attempt {marker.attempt} ended without a result (killed?): rerun "
                       f"{marker.step}")
    if state == steps.SUCCESS and (changed := steps.stale_inputs(tree, marker)):
        return steps.STALE, (f"{' and '.join(changed)} changed since it ran: rerun "
                             f"{marker.step}")
    return state, ""


def command_report(args: argparse.Namespace) -> int:
    """Run the publish-report step for RUN_DATE: evidence in an attempt folder, then its commit."""
    day = parse_run_date(args.date or os.environ.get(RUN_DATE_VARIABLE))
    tree = DataTree.from_setting(args.data_root)
    (load_marker,) = steps.require_prerequisites(tree, steps.PUBLISH_REPORT, day)
    marker, heartbeat = steps.start_attempt(tree, steps.PUBLISH_REPORT, day)
    folder = tree.report_folder(day, marker.commit)
    try:
        settings = settings_from_env("WAREHOUSE_PG")
        # Two connections: the CSV and the JSON stream at once, in one snapshot.
        with pgconn.connect(settings, "warehouse") as conn, \
                pgconn.connect(settings, "warehouse") as second:
            rows, names, load = write_evidence(conn, second, tree, day, folder)
        if load["attempt"] != load_marker.commit:
            raise PrerequisiteError(
                f"the warehouse holds load {load['attempt']} of {day} (loaded at "
                f"{load['loaded_at']}), its load-warehouse marker vouches for "
                f"{load_marker.commit}: rerun load-warehouse for {day}")
        faults.point("before-commit")
        write_commit(tree, Commit(step=steps.PUBLISH_REPORT, run_date=day.isoformat(),
                                  attempt=marker.commit, committed_at=steps.now(),
                                  rows={REPORT_NAME: rows},
                                  details={"files": names, "load": load},
                                  inputs={steps.LOAD_WAREHOUSE: load["attempt"] or ""}))
    except Superseded as superseded:  # a later run's evidence and marker stand
        heartbeat.stop()
        remove_attempt(tree, steps.PUBLISH_REPORT, day, marker.commit)
        print(f"publish-report for {day}: {superseded}")
        return 0
    except BaseException as error:
        heartbeat.stop()
        remove_attempt(tree, steps.PUBLISH_REPORT, day, marker.commit)  # uncommitted: unread
        try:
            steps.finish(tree, marker, error=one_line(error))
        except (OSError, StorageError) as unrecorded:  # the lease shows the attempt dead
            logger.error("could not record the failure in its marker: %s", one_line(unrecorded))
        raise
    faults.point("after-commit")
    heartbeat.stop()
    marker.rows = {REPORT_NAME: rows}
    marker.details = {"files": [tree.fs.url(folder / name) for name in names], "load": load}
    marker.inputs = {steps.LOAD_WAREHOUSE: load["attempt"] or ""}
    steps.finish(tree, marker)
    remove_superseded(tree, steps.PUBLISH_REPORT, day, marker.commit)
    print(f"publish-report for {day}: {rows} rows -> {tree.fs.url(folder)}")
    return 0


def write_evidence(conn, second, tree: DataTree, day: dt.date, folder: PurePosixPath
                   ) -> tuple[int, list[str], dict]:
    """Write the day's evidence into ``folder``; return its rows, file names and load read.

    Locally the report writes straight into the tree. For object storage it writes each file on
    local disk while a thread uploads it as it grows, so writing and uploading overlap instead of
    adding up (docs/benchmark.md, "Figures behind the code"). A failed report leaves no partial
    object (see treefs.Outbox).
    """
    outbox = Outbox(tree.fs, folder, tree.staging)
    load: dict = {}
    rows = write_report(conn, day, outbox, second, load)
    return rows, sorted(outbox.published), load


def command_verify(args: argparse.Namespace) -> int:
    """Re-check a loaded day's partitions against their manifests (and the live source)."""
    from northwind_elt.verify import verify_day

    day = parse_run_date(args.date, "--date")
    tree = DataTree.from_setting(args.data_root)
    with pgconn.connect(settings_from_env("WAREHOUSE_PG"), "warehouse") as conn:
        if args.source:
            with pgconn.connect(settings_from_env("SOURCE_PG"), "source") as source:
                findings = verify_day(tree, day, conn, source)
        else:
            findings = verify_day(tree, day, conn)
    for finding in findings:
        print(finding)
    wrong = [f.stream for f in findings if f.status == "mismatch"]
    drift = [f.stream for f in findings if f.status == "drift"]
    summary = (f"verify {day}: " + (f"MISMATCH in {', '.join(wrong)}" if wrong else
                                    "the warehouse holds exactly what was extracted"))
    if args.source:
        summary += "; source drift in " + ", ".join(drift) if drift else "; no source drift"
    print(summary)
    return 1 if wrong else 0


def command_prune(args: argparse.Namespace) -> int:
    """Remove the data-tree days older than the newest N successfully loaded days."""
    keep = keep_days_setting(args.keep_days or os.environ.get(KEEP_DAYS_VARIABLE))
    if keep is None:
        raise SettingError(f"prune needs --keep-days or {KEEP_DAYS_VARIABLE}")
    tree = DataTree.from_setting(args.data_root)
    days = prune(tree, keep)
    for day in days:
        logger.info("pruned %s from %s", day, tree.url)
    print(f"prune (keep {keep} loaded days): removed "
          + (", ".join(map(str, days)) if days else "no day") + f" from {tree.url}")
    return 0


def command_seed_source(args: argparse.Namespace) -> int:
    """Load the dump into the source database unless it is already there."""
    from northwind_elt.localdb import seed_source

    kwargs = pgconn.connection_kwargs(settings_from_env("SOURCE_PG"), "source")
    loaded = seed_source(kwargs, Path(args.dump))
    print(f"source {pgconn.describe(kwargs)}: " + ("seeded" if loaded else "already seeded"))
    return 0


def command_local_env(args: argparse.Namespace) -> int:
    """Start or reuse the embedded PostgreSQL and print the settings that point the steps at it."""
    from northwind_elt.localdb import ensure_local_databases

    env = ensure_local_databases(Path(args.state_dir), Path(args.dump))
    for key, value in sorted(env.items()):
        print(f"export {key}={value!r}" if args.shell else f"{key}={value}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="northwind", description=__doc__.split("\n")[0])
    top.add_argument("--data-root", default=None,
                     help="data tree root (default: $NORTHWIND_DATA_ROOT)")
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="which steps succeeded for which days")
    status.add_argument("--date", help="one day (YYYY-MM-DD), with rows per table")
    status.add_argument("--json", action="store_true", help="print the markers as JSON")
    status.add_argument("--html", metavar="PATH", help="write the days as one HTML page to PATH")
    status.set_defaults(run=command_status)
    report = sub.add_parser("report", help="write the day's evidence files (publish-report)")
    report.add_argument("--date", help="the day (default: $RUN_DATE)")
    report.set_defaults(run=command_report)
    verifying = sub.add_parser("verify", help="re-check a loaded day against its manifests")
    verifying.add_argument("--date", required=True, help="the loaded day (YYYY-MM-DD)")
    verifying.add_argument("--source", action="store_true",
                           help="also compare the live source (SOURCE_PG*) with the extract")
    verifying.set_defaults(run=command_verify)
    pruning = sub.add_parser("prune", help="remove days beyond the newest N loaded days")
    pruning.add_argument("--keep-days", help=f"N (default: ${KEEP_DAYS_VARIABLE})")
    pruning.set_defaults(run=command_prune)
    seed = sub.add_parser("seed-source", help="load the Northwind dump into SOURCE_PG* once")
    seed.add_argument("--dump", default=os.environ.get(
        "NORTHWIND_SOURCE_SQL", str(REPOSITORY / "sources" / "northwind.sql")))
    seed.set_defaults(run=command_seed_source)
    local = sub.add_parser("local-env", help="start the embedded PostgreSQL, print its settings")
    local.add_argument("--state-dir", default=os.environ.get(
        "NORTHWIND_LOCAL_DIR", str(REPOSITORY / ".local")))
    local.add_argument("--dump", default=str(REPOSITORY / "sources" / "northwind.sql"))
    local.add_argument("--shell", action="store_true", help="print as shell export lines")
    local.set_defaults(run=command_local_env)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a pipeline error is one line on stderr and exit code 1."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        if not is_user_error(error):  # a bug keeps its traceback
            raise
        logger.debug("failed", exc_info=True)
        print(f"northwind {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

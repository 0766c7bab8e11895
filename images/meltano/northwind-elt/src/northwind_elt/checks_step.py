"""The check-warehouse step: run the data checks on a loaded day, keep the results, judge.

It runs after load-warehouse (and refuses to run unless that day's load succeeded), reads the
day in one snapshot as the warehouse's read-only role, stores every result in
``northwind.check_results`` (:mod:`northwind_elt.checks_store`) and in its marker, then fails if
a check of severity ``error`` failed, naming each one (table, check, observed and expected). A
``warn`` is logged and recorded only. It never changes a loaded row: a failed check does not undo
the load or the views.
"""

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from northwind_elt import logger, pgconn, steps
from northwind_elt.checks_config import WARN, load_checks
from northwind_elt.checks_run import failures, run_checks, validate_against
from northwind_elt.checks_store import ensure_store, record_results
from northwind_elt.errors import PipelineError, PrerequisiteError, StorageError, one_line
from northwind_elt.layout import DataTree
from northwind_elt.warehouse import loaded_days, loads_table


class ChecksFailed(PipelineError):
    """A check of severity error failed: the data is loaded, but not as declared."""


def check_day(tree: DataTree, day: dt.date, settings: Mapping[str, str], checks_path: Path
              ) -> str:
    """Run the step for ``day``; return its summary line.

    Raises:
        ChecksFailed: After every result is stored, when an ``error`` check failed.
        PipelineError: The load has not succeeded, the checks file is wrong, the warehouse
            cannot be read.
    """
    (load_marker,) = steps.require_prerequisites(tree, steps.CHECK_WAREHOUSE, day)
    marker, heartbeat = steps.start_attempt(tree, steps.CHECK_WAREHOUSE, day)
    try:
        checks = load_checks(checks_path)
        with pgconn.connect(settings, "warehouse", autocommit=True) as conn:
            ensure_store(conn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
            with conn.transaction(), conn.cursor() as cur:
                days = loaded_days(cur)
                if day not in days:
                    raise PrerequisiteError(f"the warehouse has no snapshot of {day}: run "
                                            "load-warehouse for that day first")
                load = _load_of(cur, day)
                if load["attempt"] != load_marker.commit:
                    raise PrerequisiteError(
                        f"the warehouse holds load {load['attempt']} of {day}, its "
                        f"load-warehouse marker vouches for {load_marker.commit}: rerun "
                        f"load-warehouse for {day}")
                validate_against(cur, checks, day, str(checks_path), set(days[day]))
                results = run_checks(cur, checks, day)
                record_results(conn, day, marker.commit, [r.as_dict() for r in results])
    except BaseException as error:
        heartbeat.stop()
        try:
            steps.finish(tree, marker, error=one_line(error))
        except (OSError, StorageError) as unrecorded:  # the lease shows the attempt dead
            logger.error("could not record the failure in its marker: %s", one_line(unrecorded))
        raise
    heartbeat.stop()
    failed, warned = failures(results), failures(results, WARN)
    for result in warned:
        logger.warning("check-warehouse for %s: warning: %s", day, result.line())
    marker.rows = {"passed": sum(r.passed for r in results), "warned": len(warned),
                   "failed": len(failed)}
    marker.details = {"checks_file": str(checks_path), "load": load,
                      "failed": [r.line() for r in failed], "warned": [r.line() for r in warned]}
    marker.inputs = {steps.LOAD_WAREHOUSE: load["attempt"]}
    summary = (f"check-warehouse for {day}: {len(results)} checks, {marker.rows['passed']} "
               f"passed, {len(warned)} warned, {len(failed)} failed "
               "(northwind.check_results)")
    if failed:
        reason = (f"{len(failed)} data check{'s' if len(failed) > 1 else ''} failed for {day}: "
                  + "; ".join(r.line() for r in failed))
        steps.finish(tree, marker, error=reason)
        raise ChecksFailed(reason + " (the load stays published)")
    steps.finish(tree, marker)
    return summary


def _load_of(cur: psycopg.Cursor, day: dt.date) -> dict[str, str]:
    """The load of ``day`` the warehouse holds: its id and ``loaded_at`` (ISO)."""
    cur.execute(sql.SQL("SELECT attempt, loaded_at FROM {} WHERE snapshot_date = %s").format(
        loads_table()), (day,))
    attempt, loaded_at = cur.fetchone()
    return {"attempt": attempt, "loaded_at": loaded_at.isoformat()}

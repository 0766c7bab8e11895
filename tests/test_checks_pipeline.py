"""check-warehouse through real `meltano run` steps on a real warehouse: results, failures, warnings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline import assert_ok, output, run_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2 = "2024-01-02", "2024-01-03"
CHECK = "check-warehouse"
#: Checks the shipped Northwind file declares (checks.yml): keys, references, row counts.
SHIPPED_CHECKS = 48


def load(day: str, env: dict[str, str]) -> None:
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, day, env))


def marker(env: dict[str, str], day: str) -> dict:
    return json.loads((Path(env["NORTHWIND_DATA_ROOT"]) / "_status" / day / f"{CHECK}.json"
                       ).read_text())


def results(databases, day: str) -> dict[tuple[str, str], tuple]:
    with databases.warehouse() as wh:
        return {(t, c): (sev, passed, observed) for t, c, sev, passed, observed in wh.execute(
            "SELECT table_name, check_name, severity, passed, observed "
            "FROM northwind.check_results WHERE snapshot_date = %s", (day,))}


def northwind(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "northwind_elt.cli", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, check=False)


def status(env: dict[str, str], day: str | None = None) -> str:
    found = northwind(env, "status", *(("--date", day) if day else ()))
    assert found.returncode == 0, found.stderr
    return found.stdout


def test_the_shipped_checks_pass_on_northwind_and_their_results_are_kept(databases):
    env = databases.env
    refused = run_step(CHECK, DAY1, env)
    assert refused.returncode != 0
    assert f"check-warehouse refuses to run for {DAY1}: load-warehouse has not run" in \
        output(refused)
    load(DAY1, env)
    assert_ok(run_step(CHECK, DAY1, env))

    found = results(databases, DAY1)
    assert len(found) == SHIPPED_CHECKS and all(passed for _, passed, _ in found.values())
    assert found[("order_details", "references(order_id -> orders(order_id))")] == (
        "error", True, "0 rows without a match")
    assert found[("orders", "row_count_change")][2] == "830 rows, no earlier loaded day"
    written = marker(env, DAY1)
    assert written["status"] == "success"
    assert written["rows"] == {"passed": SHIPPED_CHECKS, "warned": 0, "failed": 0}
    assert written["inputs"]["load-warehouse"] == written["details"]["load"]["attempt"]
    assert "check-warehouse" in status(env, DAY1)

    # A rerun replaces the day's results, it does not add to them.
    assert_ok(run_step(CHECK, DAY1, env))
    assert len(results(databases, DAY1)) == SHIPPED_CHECKS


def test_an_error_check_fails_the_step_names_the_figures_and_keeps_the_load(databases):
    env = databases.env
    load(DAY1, env)
    assert_ok(run_step(CHECK, DAY1, env))
    with databases.source(autocommit=True) as src:  # the source lost most of its orders
        src.execute("DELETE FROM orders WHERE order_id >= 10600")
    load(DAY2, env)
    failed = run_step(CHECK, DAY2, env)

    assert failed.returncode != 0
    text = output(failed)
    assert (f"orders: row_count_change: 352 rows, -57.6% from 830 on {DAY1} "
            "(expected a change of at most 20%)") in text
    # The CSV's details of the deleted orders now have no order: a broken reference.
    assert "order_details: references(order_id -> orders(order_id)): " in text
    assert "Traceback" not in text
    written = marker(env, DAY2)
    assert written["status"] == "failed" and "2 data checks failed" in written["error"]
    found = results(databases, DAY2)
    assert found[("orders", "row_count_change")][:2] == ("error", False)
    assert found[("order_details", "references(order_id -> orders(order_id))")][:2] == (
        "error", False)
    assert found[("orders", "unique(order_id)")][:2] == ("error", True)
    assert "failed: orders: row_count_change: 352 rows" in status(env, DAY2)
    assert "2 failed, 0 warned checks (status --date lists them)" in status(env)
    # Never a rollback: the day stays loaded and current; day 1's results stay as they were.
    with databases.warehouse() as wh:
        assert wh.execute("SELECT count(*) FROM orders").fetchone() == (352,)
        assert wh.execute("SELECT snapshot_date::text FROM northwind.loads ORDER BY 1"
                          ).fetchall() == [(DAY1,), (DAY2,)]
    assert all(passed for _, passed, _ in results(databases, DAY1).values())


def test_warnings_are_recorded_and_the_step_succeeds(databases, tmp_path):
    env = databases.env
    checks = tmp_path / "checks.yml"
    # Freshness against the logical date: Northwind's newest order is of 1998, a warning here.
    checks.write_text("tables:\n  orders:\n"
                      "    fresh: {column: order_date, max_age_days: 3, severity: warn}\n"
                      "    unique: [order_id]\n")
    env = {**env, "NORTHWIND_CHECKS_FILE": str(checks)}
    load(DAY1, env)
    assert_ok(run_step(CHECK, DAY1, env))

    line = (f"orders: fresh(order_date): newest order_date 1998-05-06, 9372 days old "
            f"(expected order_date within 3 days of {DAY1})")
    written = marker(env, DAY1)
    assert written["status"] == "success" and written["details"]["warned"] == [line]
    assert written["rows"] == {"passed": 1, "warned": 1, "failed": 0}
    assert f"warned: {line}" in status(env, DAY1)
    assert results(databases, DAY1)[("orders", "fresh(order_date)")][:2] == ("warn", False)


def test_a_check_of_a_column_the_table_lacks_is_one_line_and_stores_nothing(databases, tmp_path):
    checks = tmp_path / "checks.yml"
    checks.write_text("tables:\n  orders:\n    not_null: [order_id, shipped_by]\n")
    env = {**databases.env, "NORTHWIND_CHECKS_FILE": str(checks)}
    load(DAY1, env)
    failed = run_step(CHECK, DAY1, env)

    assert failed.returncode != 0
    reason = (f"checks file {checks}: table orders: not_null(shipped_by): table orders has no "
              "column shipped_by")
    assert reason in output(failed) and "Traceback" not in output(failed)
    assert marker(env, DAY1)["error"] == reason
    assert results(databases, DAY1) == {}

    # Fixed, in a file of its own for one run: the day's checks pass.
    fixed = tmp_path / "fixed.yml"
    fixed.write_text("tables:\n  orders:\n    not_null: [order_id, ship_via]\n"
                     "  order_details:\n    references: {column: [order_id, product_id], "
                     "table: order_details, to: [order_id, product_id]}\n")
    rerun = northwind(env, "check", "--date", DAY1, "--checks-file", str(fixed))
    assert rerun.returncode == 0, rerun.stderr
    assert marker(env, DAY1)["status"] == "success"
    composite = "references(order_id, product_id -> order_details(order_id, product_id))"
    assert results(databases, DAY1) == {
        ("orders", "not_null(order_id)"): ("error", True, "0 rows with order_id NULL"),
        ("orders", "not_null(ship_via)"): ("error", True, "0 rows with ship_via NULL"),
        ("order_details", composite): ("error", True, "0 rows without a match")}


def test_an_orphan_csv_detail_fails_its_reference_read_from_the_history(databases):
    """With no partition kept (NORTHWIND_KEEP_DAYS=0) the checks read the history as of the day."""
    csv_file = Path(databases.env["ORDER_DETAILS_CSV"])
    csv_file.write_text(csv_file.read_text() + "30000,11,14,1,0\n")  # no order 30000
    env = {**databases.env, "NORTHWIND_KEEP_DAYS": "0"}
    load(DAY1, env)
    with databases.warehouse() as wh:  # the day is in the history only
        assert wh.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'snapshot_days'"
                          ).fetchone() == (0,)
    failed = run_step(CHECK, DAY1, env)

    assert failed.returncode != 0
    assert ("1 data check failed for 2024-01-02: order_details: references(order_id -> "
            "orders(order_id)): 1 rows without a match, e.g. 30000 (expected every value in "
            "orders)") in output(failed)
    found = results(databases, DAY1)
    assert found[("order_details", "unique(order_id, product_id)")] == (
        "error", True, "0 duplicated keys in 0 rows")
    assert found[("order_details", "row_count_change")][2] == "2156 rows, no earlier loaded day"
    assert sum(not passed for _, passed, _ in found.values()) == 1

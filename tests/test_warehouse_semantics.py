"""What users of the warehouse can rely on across days: deletes, older days, one current view."""

import pytest
from pipeline import assert_ok, committed, output, run_day, run_step, warehouse_digest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3 = "2024-01-02", "2024-01-03", "2024-01-04"


def test_days_snapshots_deletes_no_regression_and_rollback(databases):
    env = databases.env
    for result in run_day(DAY1, env).values():
        assert_ok(result)
    with databases.source(autocommit=True) as src:
        src.execute("DELETE FROM us_states WHERE state_id = 51")
        src.execute("UPDATE customers SET company_name = 'Renamed' WHERE customer_id = 'ALFKI'")
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY2, env))
    assert_ok(run_step("extract-csv", DAY3, env))

    with databases.warehouse() as wh:
        # The plain names show the newest day: the deleted row is gone, the update is visible.
        assert wh.execute("SELECT count(*) FROM us_states").fetchone() == (50,)
        assert wh.execute("SELECT company_name FROM customers WHERE customer_id = 'ALFKI'"
                          ).fetchone() == ("Renamed",)
        # Each day keeps its own snapshot.
        assert wh.execute("SELECT snapshot_date::text, count(*) FROM snapshots.us_states "
                          "GROUP BY 1 ORDER BY 1").fetchall() == [(DAY1, 51), (DAY2, 50)]
        # The plain join has no duplicates although two days are loaded.
        assert wh.execute("SELECT count(*) FROM orders JOIN order_details USING (order_id)"
                          ).fetchone() == (2155,)
        current = warehouse_digest(wh)

    # Loading the older day again changes nothing users see as current.
    assert_ok(run_step("load-warehouse", DAY1, env))
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == current
        assert wh.execute("SELECT count(*) FROM snapshots.us_states WHERE snapshot_date = %s",
                          (DAY1,)).fetchone() == (51,)

    # The evidence of a day reflects that day's files, not the newest day.
    assert_ok(run_step("publish-report", DAY1, env))
    report = committed(databases.data_root, "reports", DAY1, "orders_with_details.csv").read_text()
    assert report.count("\n") == 2156

    # A column whose type changed at the source cannot load into the existing snapshot table:
    # the load fails after other tables were already copied, and must roll all of them back.
    with databases.source(autocommit=True) as src:
        src.execute("ALTER TABLE us_states ALTER COLUMN state_name TYPE varchar(50)")
    assert_ok(run_step("extract-postgres", DAY3, env))
    failed = run_step("load-warehouse", DAY3, env)
    assert failed.returncode != 0
    assert "table us_states, column state_name: the warehouse has type character varying(100)" \
        in output(failed)
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == current
        assert wh.execute("SELECT count(*) FROM northwind.loads").fetchone() == (2,)
    marker = (databases.data_root / "_status" / DAY3 / "load-warehouse.json").read_text()
    assert '"status": "failed"' in marker and "state_name" in marker


"""check_warehouse in the DAG run by the local Airflow (``northwind_local.day_run``, as ``make run``).

A failed error check fails its task and the run; the report of the same load still publishes.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import pytest

from dag_support import run_dag
from pipeline import committed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("meltano_project", "airflow_db"),
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
]

DAY = "2024-01-02"


@pytest.fixture(scope="module")
def airflow_db():
    dag_support.migrate_metadata_db()


def test_a_failed_check_fails_its_task_but_not_the_load_or_the_evidence(databases, tmp_path):
    checks = tmp_path / "checks.yml"
    checks.write_text("tables:\n  orders:\n    not_null: [ship_region]\n"
                      "    unique: {columns: [ship_country], severity: warn}\n")
    run = run_dag(DAY, {**databases.env, "NORTHWIND_CHECKS_FILE": str(checks)})

    assert run.state == "failed"
    assert run.task_states == {"extract_postgres": "success", "extract_csv": "success",
                               "load_warehouse": "success", "publish_report": "success",
                               "check_warehouse": "failed"}
    assert run.outcomes["check_warehouse"].error == (
        f"step check-warehouse (RUN_DATE={DAY}): northwind check: 1 data check failed "
        f"for {DAY}: orders: not_null(ship_region): 507 rows with ship_region NULL (expected "
        "none) (the load stays published)")
    assert committed(databases.data_root, "reports", DAY, "orders_with_details.csv").is_file()
    with databases.warehouse() as wh:
        assert wh.execute("SELECT count(*) FROM orders").fetchone() == (830,)
        assert wh.execute(
            "SELECT check_name, severity, passed FROM northwind.check_results ORDER BY 1"
        ).fetchall() == [("not_null(ship_region)", "error", False),
                         ("unique(ship_country)", "warn", False)]

"""check-warehouse with the chart's roles: it logs in as the read-only role, as its pod does.

The reader records the day's results through ``northwind.record_check_results`` (created by the
databases chart's init SQL, the login role owning it) and can write nothing else.
"""


import pytest
from northwind_elt.checks_store import DDL
from pipeline import assert_ok, run_step
from test_db_roles import INITDB, cluster, login_env, refused  # noqa: F401 (the chart's roles fixture)

DAY = "1996-07-04"


def test_the_init_sql_holds_the_results_statements_verbatim():
    assert DDL in (INITDB / "warehouse.sql").read_text()


@pytest.mark.slow
def test_the_reader_runs_the_checks_and_records_results_but_writes_nothing_else(
        cluster, meltano_project, tmp_path):  # noqa: F811
    env = login_env(cluster, tmp_path)
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, env))
    assert_ok(run_step("check-warehouse", DAY, {**env, "WAREHOUSE_PGUSER": cluster.reader}))

    with cluster.connect("warehouse", cluster.reader, autocommit=True) as conn:
        results = conn.execute("SELECT count(*), bool_and(passed) FROM northwind.check_results "
                               "WHERE snapshot_date = %s", (DAY,)).fetchone()
        assert results == (48, True)
        for statement in (
                "DELETE FROM northwind.check_results",
                "INSERT INTO northwind.check_results VALUES "
                "('2000-01-01', 't', 'c', 'warn', true, '', '', 'a')",
                "UPDATE northwind.check_results SET passed = true",
                "DELETE FROM snapshots.orders", "DELETE FROM northwind.loads",
                "CREATE OR REPLACE FUNCTION northwind.record_check_results(day date, "
                "attempt text, results jsonb) RETURNS integer LANGUAGE sql AS 'SELECT 1'"):
            assert refused(conn, statement), statement
    with cluster.connect("warehouse", autocommit=True) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'northwind' "
                             "AND tablename = 'check_results'").fetchone()
        assert owner == (cluster.roles["warehouse"],)

"""An extract that holds less than the source must fail or say so, through real `meltano run` steps.

`schemas` that match nothing, row-level security, relations that are not tables, tables too wide for
the warehouse and Meltano's own `select`; and a rerun of a past day keeps that day's extract unless
re-extraction is asked for.
"""

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from northwind_elt import localdb
from pipeline import assert_ok, committed, output, run_step, tree_digest
from psycopg import sql
from settings import MELTANO_PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
EXTRACT = "extract-postgres"


def marker(env: dict[str, str], step: str = EXTRACT) -> dict:
    return json.loads((Path(env["NORTHWIND_DATA_ROOT"]) / "_status" / DAY / f"{step}.json")
                      .read_text())


def published(env: dict[str, str]) -> list[str]:
    root = Path(env["NORTHWIND_DATA_ROOT"])  # the committed partitions of DAY
    return sorted(Path(key).parent.parent.name for key in tree_digest(root)
                  if key.startswith("postgres/") and f"/{DAY}/" in key) if root.exists() else []


def source_sql(databases, statement: str) -> None:
    with databases.source(autocommit=True) as conn:
        conn.execute(statement)


def failed_with(result, env: dict[str, str], *fragments: str) -> str:
    """Assert the extract failed, published nothing, and its marker names every fragment."""
    assert result.returncode != 0, output(result)[-3000:]
    found = marker(env)
    assert found["status"] == "failed"
    for fragment in fragments:
        assert fragment in found["error"], found["error"]
        assert fragment in output(result)
    assert published(env) == []
    return found["error"]


@pytest.mark.parametrize(("schemas", "fragments"), [
    (["Sales"], ["schema 'Sales' does not exist", "did you mean 'sales'"]),
    (["public", "nowhere"], ["schema 'nowhere' does not exist"]),
    (["empty"], ["schema 'empty' has nothing to extract", "it holds no table"]),
    (["only_views"], ["schema 'only_views' has nothing to extract", "view only_views.v"]),
])
def test_schemas_that_match_nothing_fail_naming_them(databases, schemas, fragments):
    source_sql(databases, "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY);"
                          "CREATE SCHEMA empty; CREATE SCHEMA only_views;"
                          "CREATE VIEW only_views.v AS SELECT 1 AS one")
    env = {**databases.env, "TAP_PGCOPY_SCHEMAS": json.dumps(schemas)}
    failed_with(run_step(EXTRACT, DAY, env), env, *fragments)


def test_a_day_with_zero_streams_is_never_published(databases):
    """Every table deselected: nothing to publish, so the step fails rather than publish nothing."""
    env = {**databases.env, "TAP_PGCOPY__SELECT": json.dumps(["nothing_matches.*"])}
    failed_with(run_step(EXTRACT, DAY, env), env, "no table is selected")


RLS = """
CREATE TABLE secret (id int PRIMARY KEY, owner_name text);
INSERT INTO secret VALUES (1, 'rls_reader'), (2, 'someone'), (3, 'else');
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON secret USING (owner_name = current_user);
GRANT USAGE ON SCHEMA public TO rls_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO rls_reader;
"""


@pytest.fixture
def rls_reader(pg_socket):
    """A login role that owns nothing and has no BYPASSRLS (cluster-wide: dropped afterwards)."""
    admin = {"host": str(pg_socket), "user": localdb.SUPERUSER, "autocommit": True}
    with psycopg.connect(dbname="postgres", **admin) as conn:
        conn.execute("CREATE ROLE rls_reader LOGIN")
    yield "rls_reader"
    with psycopg.connect(dbname="postgres", **admin) as conn:
        for (database,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                                        "'source_%'").fetchall():
            with psycopg.connect(dbname=database, **admin) as db:
                db.execute("DROP OWNED BY rls_reader")
        conn.execute("DROP ROLE rls_reader")


@pytest.mark.usefixtures("rls_reader")
def test_row_level_security_is_refused_unless_enabled(databases):
    source_sql(databases, RLS)
    env = {**databases.env, "SOURCE_PGUSER": "rls_reader"}
    failed_with(run_step(EXTRACT, DAY, env), env, "row-level security", "public.secret",
                "enable_row_security")

    allowed = {**env, "TAP_PGCOPY_ENABLE_ROW_SECURITY": "true"}
    assert_ok(run_step(EXTRACT, DAY, allowed))
    found = marker(allowed)
    assert found["rows"]["secret"] == 1  # what the policy shows the role, and the marker says so
    assert found["details"]["row_security_filtered"] == ["public.secret"]


@pytest.mark.usefixtures("rls_reader")
def test_the_owner_reads_every_row_without_the_setting(databases):
    source_sql(databases, RLS)
    assert_ok(run_step(EXTRACT, DAY, databases.env))  # the superuser bypasses row security
    assert marker(databases.env)["rows"]["secret"] == 3


OTHER_RELATIONS = """
CREATE VIEW expensive AS SELECT product_id, product_name FROM products WHERE unit_price > 50;
CREATE MATERIALIZED VIEW order_totals AS
    SELECT customer_id, count(*)::int AS orders FROM orders GROUP BY customer_id;
CREATE FOREIGN DATA WRAPPER nowhere_fdw;
CREATE SERVER nowhere FOREIGN DATA WRAPPER nowhere_fdw;
CREATE FOREIGN TABLE remote_orders (id int) SERVER nowhere;
CREATE TABLE no_columns ();
"""


def test_every_relation_left_out_is_listed_with_its_reason(databases):
    source_sql(databases, OTHER_RELATIONS)
    result = run_step(EXTRACT, DAY, databases.env)
    assert_ok(result)
    skipped = {s["relation"]: s for s in marker(databases.env)["details"]["skipped"]}
    assert set(skipped) == {"public.expensive", "public.order_totals", "public.remote_orders",
                            "public.no_columns"}
    assert skipped["public.expensive"]["kind"] == "view"
    assert "relation_kinds" in skipped["public.order_totals"]["reason"]
    assert skipped["public.remote_orders"]["kind"] == "foreign table"
    assert "no columns" in skipped["public.no_columns"]["reason"]
    for name in skipped:
        assert f"not extracted: {skipped[name]['kind']} {name}" in output(result)


def test_views_and_materialized_views_are_snapshotted_when_asked(databases):
    source_sql(databases, OTHER_RELATIONS)
    env = {**databases.env, "TAP_PGCOPY_RELATION_KINDS": '["table", "view", "materialized_view"]'}
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, env))
    with databases.source() as source, databases.warehouse() as warehouse:
        for name in ("expensive", "order_totals"):
            query = sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(name))
            assert warehouse.execute(query).fetchall() == source.execute(query).fetchall()
            assert warehouse.execute(query).fetchall()
    skipped = [s["relation"] for s in marker(env)["details"]["skipped"]]
    assert skipped == ["public.no_columns", "public.remote_orders"]


def test_a_table_too_wide_for_the_warehouse_fails_naming_it_and_select_excludes_it(databases):
    columns = ", ".join(f"c{i} int" for i in range(1600))
    source_sql(databases, f"CREATE TABLE wide ({columns}); INSERT INTO wide (c0) VALUES (1)")
    failed_with(run_step(EXTRACT, DAY, databases.env), databases.env, "public.wide (1600)",
                "1599")

    # Meltano's select, as for any Singer tap: all but one column of it loads.
    env = {**databases.env, "TAP_PGCOPY__SELECT": json.dumps(["*.*", "!wide.c1599"])}
    assert_ok(run_step(EXTRACT, DAY, env))
    data = committed(Path(env["NORTHWIND_DATA_ROOT"]), "postgres", "wide", DAY, "wide.parquet")
    assert pq.read_schema(data).names == [f"c{i}" for i in range(1599)]


def test_meltano_select_picks_tables_and_columns_through_meltano_run(databases):
    env = {**databases.env,
           "TAP_PGCOPY__SELECT": json.dumps(["orders.*", "!orders.ship_address", "customers.*"])}
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, env))
    found = marker(env)
    assert sorted(found["rows"]) == ["customers", "orders"]
    deselected = {s["relation"] for s in found["details"]["skipped"]
                  if s["reason"].startswith("deselected")}
    assert "public.products" in deselected and "public.employees" in deselected
    with databases.warehouse() as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'orders' ORDER BY ordinal_position")]
        assert columns and "ship_address" not in columns and "ship_city" in columns
        (rows,) = conn.execute("SELECT count(*) FROM orders").fetchone()
    with databases.source() as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (rows,)


def test_a_rerun_keeps_a_succeeded_extract_unless_reextract(databases):
    env = databases.env
    root = Path(env["NORTHWIND_DATA_ROOT"])
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, DAY, env))
    before, first = tree_digest(root), marker(env)
    source_sql(databases, "UPDATE customers SET company_name = 'Changed later'")
    Path(env["ORDER_DETAILS_CSV"]).write_text(
        Path(env["ORDER_DETAILS_CSV"]).read_text().splitlines()[0] + "\n10248,11,14,1,0\n")

    for step in ("extract-postgres", "extract-csv"):
        result = run_step(step, DAY, env)
        assert_ok(result)
        assert f"{step} for {DAY}: kept the extract of" in output(result)
    assert tree_digest(root) == before
    assert marker(env) == first

    again = {**env, "NORTHWIND_REEXTRACT": "1"}
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, DAY, again))
    after = tree_digest(root)
    assert after["postgres/customers/2024-01-02/customers.parquet"] != \
        before["postgres/customers/2024-01-02/customers.parquet"]
    assert pq.read_table(committed(root, "csv", DAY, "order_details.parquet")).num_rows == 1


def test_a_bad_reextract_value_is_one_line(databases):
    env = {**databases.env, "NORTHWIND_REEXTRACT": "maybe"}
    result = run_step(EXTRACT, DAY, env)
    assert result.returncode != 0
    assert "reextract setting: 'maybe' is not true or false" in output(result)


def test_meltano_select_lists_the_tables_and_columns(databases):
    """`meltano select tap-pgcopy --list` is how users see what they can pick."""
    full = {**os.environ, **databases.env}
    full.pop("RUN_DATE", None)
    result = subprocess.run(["meltano", "select", "tap-pgcopy", "--list", "--all"],
                            cwd=MELTANO_PROJECT, env=full, text=True, capture_output=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "orders.ship_address" in result.stdout
    assert "customers.company_name" in result.stdout


def test_the_load_refuses_an_extract_that_published_no_table(databases):
    """An extract marker of an earlier version, or edited by hand, that lists no table."""
    env = databases.env
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, env))
    path = Path(env["NORTHWIND_DATA_ROOT"]) / "_status" / DAY / f"{EXTRACT}.json"
    empty = {**marker(env), "rows": {}, "details": {"source": "postgres", "streams": []}}
    path.write_text(json.dumps(empty))
    with databases.warehouse() as conn:
        before = conn.execute("SELECT count(*) FROM orders").fetchone()
    result = run_step("load-warehouse", DAY, env)
    assert result.returncode != 0
    assert f"extract-postgres published no table for {DAY}" in output(result)
    with databases.warehouse() as conn:  # every current view still stands
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == before

"""NORTHWIND_KEEP_DAYS=0 with the history: no full day stays, the history keeps every one.

Three days extracted from a changing source are loaded out of order with KEEP_DAYS=0 through real
`meltano run` steps, and, from a copy of the same data tree, in date order into a second warehouse
that keeps every partition. The first keeps no partition; its views, its history as of each day and
the report of each day equal (rows; bytes for the report) what the second has from its partitions.
"""

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from history_support import history_digest
from northwind_elt import localdb
from pipeline import Databases, assert_ok, committed, output, run_step
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3 = "2024-01-02", "2024-01-03", "2024-01-04"
REPORT_FILES = ("orders_with_details.csv", "orders_with_details.json")


def extract(day: str, env: dict[str, str]) -> None:
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, day, env))


def load_and_report(day: str, env: dict[str, str]) -> None:
    for step in ("load-warehouse", "publish-report"):
        assert_ok(run_step(step, day, env))


def snapshot_tables(conn: psycopg.Connection) -> list[str]:
    return [t for (t,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'snapshots' AND c.relkind = 'p' ORDER BY 1")]


def rows(conn: psycopg.Connection, query: sql.Composable, *params) -> list[str]:
    """The rows of ``query`` as text, sorted (a multiset)."""
    return sorted(r[0] for r in conn.execute(
        sql.SQL("SELECT q::text FROM ({}) AS q").format(query), params))


def second_warehouse(pg_socket: Path, env: dict[str, str], root: Path) -> dict[str, str]:
    """An empty warehouse database beside the test's, and the environment of its steps."""
    name = env["WAREHOUSE_PGDATABASE"] + "_kept"
    admin = {"host": str(pg_socket), "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return {**env, "WAREHOUSE_PGDATABASE": name, "NORTHWIND_DATA_ROOT": str(root)}


def test_keep_days_0_keeps_no_partition_and_the_same_views_history_and_reports(
        databases: Databases, pg_socket: Path, tmp_path: Path):
    env = databases.env
    csv = Path(env["ORDER_DETAILS_CSV"])
    extract(DAY1, env)
    with databases.source(autocommit=True) as src:  # DAY2: updates, a delete, an insert
        src.execute("UPDATE orders SET ship_name = 'Renamed' WHERE order_id = 10249")
        src.execute("UPDATE customers SET company_name = 'Renamed' WHERE customer_id = 'ALFKI'")
        src.execute("DELETE FROM us_states WHERE state_id = 51")
    csv.write_text(csv.read_text().replace("\n10248,11,14,12,0\n", "\n10248,11,14,13,0\n"))
    extract(DAY2, env)
    with databases.source(autocommit=True) as src:  # DAY3: back, and other changes
        src.execute("UPDATE customers SET company_name = 'Alfreds Futterkiste' "
                    "WHERE customer_id = 'ALFKI'")
        src.execute("UPDATE orders SET freight = freight + 1 WHERE order_id < 10260")
        src.execute("INSERT INTO us_states (state_id, state_name, state_abbr, state_region) "
                    "VALUES (51, 'Back', 'BK', 'east')")
    csv.write_text(csv.read_text().replace("\n10248,11,14,13,0\n", "\n"))
    extract(DAY3, env)
    kept_root = tmp_path / "kept-data"
    shutil.copytree(databases.data_root, kept_root)
    kept_env = second_warehouse(pg_socket, env, kept_root)

    # Without the history KEEP_DAYS=0 would keep nothing: refused in one line, nothing loaded.
    refused = run_step("load-warehouse", DAY3, {**env, "NORTHWIND_KEEP_DAYS": "0",
                                                "NORTHWIND_HISTORY": "off"})
    assert refused.returncode != 0 and "Traceback" not in output(refused)
    assert "NORTHWIND_KEEP_DAYS=0 keeps no full day: it needs the history" in output(refused)

    none_kept = {**env, "NORTHWIND_KEEP_DAYS": "0"}
    for day in (DAY3, DAY1, DAY2):  # out of order
        load_and_report(day, none_kept)
    for day in (DAY1, DAY2, DAY3):
        load_and_report(day, kept_env)

    with databases.warehouse() as wh, psycopg.connect(**{
            "host": env["WAREHOUSE_PGHOST"], "port": env["WAREHOUSE_PGPORT"],
            "dbname": kept_env["WAREHOUSE_PGDATABASE"], "user": env["WAREHOUSE_PGUSER"]}) as kept:
        assert wh.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                          "ON n.oid = c.relnamespace WHERE n.nspname = 'snapshot_days'"
                          ).fetchone() == (0,)
        assert [d.isoformat() for (d,) in wh.execute(
            "SELECT snapshot_date FROM northwind.loads ORDER BY 1")] == [DAY1, DAY2, DAY3]
        assert kept.execute("SELECT count(DISTINCT snapshot_date) FROM snapshots.orders"
                            ).fetchone() == (3,)
        tables = snapshot_tables(wh)
        assert tables == snapshot_tables(kept) and len(tables) >= 14
        for table in tables:
            name = sql.Identifier(table)
            view = sql.SQL("SELECT * FROM public.{}").format(name)
            assert rows(wh, view) == rows(kept, view), table
            for day in (DAY1, DAY2, DAY3):
                as_of = rows(wh, sql.SQL("SELECT * FROM history.{}(%s)").format(name), day)
                partition = rows(kept, sql.SQL(
                    "SELECT * FROM snapshots.{} WHERE snapshot_date = %s").format(name), day)
                assert as_of == partition, (table, day)
        assert wh.execute("SELECT ship_name FROM orders WHERE order_id = 10249").fetchone() == (
            "Renamed",)
        assert wh.execute("SELECT count(*) FROM us_states WHERE state_name = 'Back'"
                          ).fetchone() == (1,)
        assert history_digest(wh) == history_digest(kept)

    for day in (DAY1, DAY2, DAY3):
        for name in REPORT_FILES:
            ours = committed(databases.data_root, "reports", day, name).read_bytes()
            theirs = committed(kept_root, "reports", day, name).read_bytes()
            assert ours == theirs, (day, name)
    for day in (DAY1, DAY2, DAY3):  # verify re-checks the manifests' digests on the history
        verified = subprocess.run(["northwind", "--data-root", str(databases.data_root), "verify",
                                   "--date", day], env={**os.environ, **env}, capture_output=True,
                                  text=True, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "the warehouse holds exactly what was extracted" in verified.stdout
        checked = [line for line in verified.stdout.splitlines() if line.split()[1:2] == ["ok"]]
        assert len(checked) >= 10, verified.stdout  # digests compared, not row counts only
    csvs = [committed(databases.data_root, "reports", day, REPORT_FILES[0]).read_text()
            for day in (DAY1, DAY2, DAY3)]
    assert len(set(csvs)) == 3 and "Renamed" in csvs[1] and "Renamed" not in csvs[0]

"""A day through the four steps, exactly as pods run them (`meltano run <job>`), on a real server."""

import csv
import json

import pyarrow.parquet as pq
import pytest
from pipeline import (
    assert_ok,
    committed,
    output,
    run_day,
    run_step,
    tree_digest,
    warehouse_digest,
)
from settings import ORDER_DETAILS_ROWS, SOURCE_ROWS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"


def source_types(conn) -> dict[tuple[str, str], str]:
    return dict(((t, c), ty) for t, c, ty in conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'snapshot_date'""",
        ("public" if conn.info.dbname.startswith("source") else "snapshots",)))


def test_a_day_lands_exactly_and_a_rerun_changes_nothing(databases):
    results = run_day(DAY, databases.env)
    for result in results.values():
        assert_ok(result)
    root = databases.data_root

    # 13 postgres partitions (empty tables included) and 1 csv partition, named by the date.
    tables = sorted(p.name for p in (root / "postgres").iterdir())
    assert tables == sorted(SOURCE_ROWS)
    for table, rows in SOURCE_ROWS.items():
        data = committed(root, "postgres", table, DAY, f"{table}.parquet")
        assert pq.read_metadata(data).num_rows == rows
        manifest = json.loads((data.parent / f"{table}.manifest.json").read_text())
        assert manifest["rows"] == rows and manifest["run_date"] == DAY
    assert pq.read_metadata(committed(root, "csv", DAY, "order_details.parquet")).num_rows == \
        ORDER_DETAILS_ROWS

    with databases.source() as src, databases.warehouse() as wh:
        # Every column keeps its exact source type (smallint, bpchar, bytea, real, varchar(n)).
        expected = source_types(src)
        loaded = source_types(wh)
        assert {k: v for k, v in loaded.items() if k[0] not in ("order_details", "_loads")} == expected
        assert loaded[("order_details", "quantity")] == "smallint"
        assert loaded[("order_details", "unit_price")] == "real"
        # NULL stays NULL; the plain query needs no snapshot filter and has no duplicates.
        assert wh.execute("SELECT count(*) FROM orders WHERE ship_region IS NULL").fetchone() == (507,)
        assert wh.execute("SELECT count(*) FROM orders JOIN order_details USING (order_id)"
                          ).fetchone() == (ORDER_DETAILS_ROWS,)
        (total,) = wh.execute("SELECT sum(unit_price::numeric * quantity * (1 - discount::numeric))"
                              " FROM order_details").fetchone()
        assert str(round(total, 2)) == "1265793.04"
        # Source text with a literal backslash-n and non-ASCII letters arrives unchanged.
        assert wh.execute("SELECT address FROM employees WHERE employee_id = 1").fetchone() == \
            src.execute("SELECT address FROM employees WHERE employee_id = 1").fetchone()
        assert wh.execute("SELECT count(*) FROM customers WHERE company_name = 'Königlich Essen'"
                          ).fetchone() == (1,)
        assert wh.execute("SELECT count(*) FROM employees WHERE photo = ''::bytea").fetchone() == (9,)

    evidence = committed(root, "reports", DAY, "orders_with_details.csv").parent
    with open(evidence / "orders_with_details.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == ORDER_DETAILS_ROWS
    assert {"order_id", "customer_id", "product_id", "quantity", "discount"} <= set(rows[0])
    document = json.loads((evidence / "orders_with_details.json").read_text())
    assert len(document) == ORDER_DETAILS_ROWS
    assert sum(1 for r in document if r["ship_region"] is None) == sum(
        1 for r in rows if r["ship_region"] == "")

    # Rerunning the day: same data files, same evidence, same warehouse.
    files = tree_digest(root) | tree_digest(root, "reports/**/*")
    with databases.warehouse() as wh:
        before = warehouse_digest(wh)
    for result in run_day(DAY, databases.env).values():
        assert_ok(result)
    assert tree_digest(root) | tree_digest(root, "reports/**/*") == files
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == before
        assert wh.execute("SELECT count(*) FROM snapshots.orders").fetchone() == (830,)


def test_load_refuses_until_both_extracts_succeeded(databases):
    env = databases.env
    assert_ok(run_step("extract-postgres", DAY, env))
    refused = run_step("load-warehouse", DAY, env)
    assert refused.returncode != 0
    assert "extract-csv has not run for 2024-01-02" in output(refused)
    with databases.warehouse() as wh:
        assert wh.execute("SELECT to_regnamespace('snapshots')").fetchone() == (None,)

    # A failed extract blocks the load too, and the message carries the extract's own reason.
    (databases.data_root.parent / "order_details.csv").write_text("order_id,product_id\n1,2\n")
    failed = run_step("extract-csv", DAY, env)
    assert failed.returncode != 0
    refused = run_step("load-warehouse", DAY, env)
    assert refused.returncode != 0
    assert "extract-csv is failed for 2024-01-02" in output(refused)
    assert "header" in output(refused)
    assert not (databases.data_root / "_status" / DAY / "load-warehouse.json").exists()


@pytest.mark.parametrize("value, message, steps", [
    (None, "RUN_DATE is not set", ("extract-postgres", "extract-csv", "load-warehouse",
                                   "publish-report")),
    ("2024-13-01", "is not a real day", ("extract-csv", "publish-report")),
    ("../../etc", "is not a date of the form YYYY-MM-DD", ("extract-postgres", "load-warehouse")),
])
def test_a_step_without_a_valid_date_touches_nothing(databases, value, message, steps):
    for step in steps:
        result = run_step(step, value, databases.env)
        assert result.returncode != 0, step
        assert message in output(result), step
    assert not databases.data_root.exists() or not any(
        p for p in databases.data_root.rglob("*") if p.is_file())

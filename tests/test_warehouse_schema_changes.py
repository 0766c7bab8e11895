"""Schema changes between days, one case each (the policy is in northwind_elt.warehouse), keyless
tables with duplicate rows, and the in-place migration of an unpartitioned warehouse."""

import json

import pytest
from pipeline import assert_ok, output, run_step, warehouse_digest
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3 = "2024-01-02", "2024-01-03", "2024-01-04"


def extract_and_load(day: str, env: dict[str, str]):
    # These days are extracted again after the source changed: re-extraction is asked for.
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, day, {**env, "NORTHWIND_REEXTRACT": "1"}))
    return run_step("load-warehouse", day, env)


def types(wh, table: str, schema: str = "snapshots") -> dict[str, str]:
    return dict(wh.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (schema, table)).fetchall())


def test_each_schema_change_between_days_and_keyless_duplicates(databases):
    env = databases.env
    with databases.source(autocommit=True) as src:
        src.execute("CREATE TABLE measures (id integer, label varchar(40), amount numeric(10,2))")
        src.execute("INSERT INTO measures VALUES (1, 'a', 1.50), (1, 'a', 1.50), (2, NULL, NULL)")
    assert_ok(extract_and_load(DAY1, env))
    with databases.warehouse() as wh:
        # Keyless: every row, the duplicate too; an index on snapshot_date, no key.
        assert wh.execute("SELECT count(*), count(DISTINCT (id, label, amount)) FROM measures"
                          ).fetchone() == (3, 2)
        assert wh.execute("""SELECT indexdef FROM pg_indexes WHERE schemaname = 'snapshots'
                             AND tablename = 'measures'""").fetchall() == [
            ("CREATE INDEX measures_snapshot_date_idx ON ONLY snapshots.measures "
             "USING btree (snapshot_date)",)]

    with databases.source(autocommit=True) as src:
        (faxes,) = src.execute("SELECT count(fax) FROM customers").fetchone()
        src.execute("ALTER TABLE measures ALTER COLUMN id TYPE bigint, "
                    "ALTER COLUMN label TYPE varchar(80), ALTER COLUMN amount TYPE numeric(12,2)")
        src.execute("INSERT INTO measures VALUES (9000000000, repeat('x', 80), 1234567890.12)")
        src.execute("ALTER TABLE customers DROP COLUMN fax")
        src.execute("ALTER TABLE orders ADD COLUMN note text DEFAULT 'new'")
        src.execute("CREATE TABLE added (id integer PRIMARY KEY, name text)")
        src.execute("INSERT INTO added VALUES (1, 'one')")
        src.execute("DROP TABLE customer_customer_demo")
    assert_ok(extract_and_load(DAY2, env))
    with databases.warehouse() as wh:
        # Widened: applied to the table (and every day of it); old rows unchanged.
        assert types(wh, "measures") == {"id": "bigint", "label": "character varying(80)",
                                         "amount": "numeric(12,2)", "snapshot_date": "date"}
        assert wh.execute("SELECT snapshot_date::text, count(*) FROM snapshots.measures "
                          "GROUP BY 1 ORDER BY 1").fetchall() == [(DAY1, 3), (DAY2, 4)]
        assert wh.execute("SELECT max(id), max(amount)::text FROM measures").fetchone() == (
            9000000000, "1234567890.12")
        # Dropped column: older days keep it, the new day is NULL there, the view follows DAY2.
        assert "fax" in types(wh, "customers") and "fax" not in types(wh, "customers", "public")
        assert wh.execute("SELECT snapshot_date::text, count(fax) FROM snapshots.customers "
                          "GROUP BY 1 ORDER BY 1").fetchall() == [(DAY1, faxes), (DAY2, 0)]
        assert faxes > 0
        # Added column: NULL on the older day.
        assert wh.execute("SELECT snapshot_date::text, count(note) FROM snapshots.orders "
                          "GROUP BY 1 ORDER BY 1").fetchall() == [(DAY1, 0), (DAY2, 830)]
        # Added table: a snapshot table and a view. Dropped table: no view, its history stays.
        assert wh.execute("SELECT name FROM added").fetchall() == [("one",)]
        assert wh.execute("SELECT to_regclass('public.customer_customer_demo')").fetchone() == (
            None,)
        assert wh.execute("SELECT to_regclass('snapshots.customer_customer_demo') IS NOT NULL"
                          ).fetchone() == (True,)
        current = warehouse_digest(wh)

    # The rerun of DAY2 keeps the keyless duplicates exactly.
    assert_ok(run_step("load-warehouse", DAY2, env))
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == current

    # Narrowed and incompatible changes are refused, naming table, column and both types.
    for change, message in [
        ("ALTER TABLE measures ALTER COLUMN amount TYPE numeric(14,1)",
         "table measures, column amount: the warehouse has type numeric(12,2), the partition has "
         "numeric(14,1)"),
        ("ALTER TABLE measures ALTER COLUMN amount TYPE numeric(12,2), "
         "ALTER COLUMN id TYPE text",
         "table measures, column id: the warehouse has type bigint, the partition has text"),
    ]:
        with databases.source(autocommit=True) as src:
            src.execute(change)
        failed = extract_and_load(DAY3, {**env, "NORTHWIND_REEXTRACT": "1"})  # DAY3 again
        assert failed.returncode != 0
        assert message.split(":")[0] in output(failed)
        marker = json.loads((databases.data_root / "_status" / DAY3 / "load-warehouse.json"
                             ).read_text())
        assert message in marker["error"]
        with databases.warehouse() as wh:
            assert warehouse_digest(wh) == current


def test_an_unpartitioned_warehouse_of_earlier_versions_is_migrated_by_the_next_load(databases):
    """The layout the earlier load created: one table with (snapshot_date, key), a view on max."""
    with databases.warehouse(autocommit=True) as wh:
        wh.execute("CREATE SCHEMA snapshots")
        wh.execute("CREATE TABLE snapshots._loads (snapshot_date date PRIMARY KEY, loaded_at "
                   "timestamptz NOT NULL DEFAULT now(), rows jsonb NOT NULL)")
        wh.execute("""CREATE TABLE snapshots.region (region_id smallint, region_description
                      bpchar, snapshot_date date NOT NULL, PRIMARY KEY (snapshot_date, region_id))""")
        wh.execute("""INSERT INTO snapshots.region VALUES (1, 'Old east', '2023-12-30'),
                      (2, 'Old west', '2023-12-30'), (1, 'Older east', '2023-12-29')""")
        wh.execute("""INSERT INTO snapshots._loads (snapshot_date, rows) VALUES
                      ('2023-12-29', '{"region": 1}'), ('2023-12-30', '{"region": 2}')""")
        wh.execute("""CREATE VIEW public.region AS SELECT region_id, region_description
                      FROM snapshots.region WHERE snapshot_date =
                      (SELECT max(snapshot_date) FROM snapshots._loads)""")
        history = wh.execute("SELECT region_id, region_description::text, snapshot_date::text "
                             "FROM snapshots.region ORDER BY 3, 1").fetchall()

    result = extract_and_load(DAY1, databases.env)
    assert_ok(result)
    assert "migrated to the current layout: snapshots._loads, region" in output(result)
    with databases.warehouse() as wh:
        # The log moved out of snapshots, with its history; the partitions live apart too.
        assert [d for (d,) in wh.execute("SELECT snapshot_date::text FROM northwind.loads "
                                         "ORDER BY 1")] == ["2023-12-29", "2023-12-30", DAY1]
        assert wh.execute("SELECT to_regclass('snapshots._loads')").fetchone() == (None,)
        assert wh.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                          "'snapshot_days'::regnamespace AND relkind = 'r'").fetchone()[0] > 3
        assert wh.execute("SELECT relkind FROM pg_class WHERE oid = 'snapshots.region'::regclass"
                          ).fetchone() == ("p",)
        assert wh.execute(sql.SQL(
            "SELECT region_id, region_description::text, snapshot_date::text FROM snapshots.region "
            "WHERE snapshot_date < %s ORDER BY 3, 1"), (DAY1,)).fetchall() == history
        assert sorted(name for (name,) in wh.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'snapshots.region'::regclass")) == [
            "region@2023-12-29", "region@2023-12-30", f"region@{DAY1}"]
        assert wh.execute("SELECT count(*) FROM region").fetchone() == (4,)
        assert wh.execute("SELECT count(*) FROM snapshots.region WHERE snapshot_date = %s",
                          (DAY1,)).fetchone() == (4,)

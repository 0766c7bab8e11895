"""Schema evolution that must load, and names the warehouse reserves, through real `meltano run`.

A multi-day sequence on the source: enum labels added (used and unused), a new column of a
``NOT NULL`` domain (AdventureWorks' ``"Flag"``), widened types and an older day reloaded after
them; then refusals that name what they refuse (a renamed label, narrowed columns, a source column
named ``snapshot_date``). Source tables named like the warehouse's own objects load as any other.
"""

import json

import psycopg
import pytest
from pipeline import assert_ok, output, run_step, warehouse_digest
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3 = "2024-01-02", "2024-01-03", "2024-01-04"

ENUM_DAY1 = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE feelings (id integer PRIMARY KEY, feeling mood, tags mood[]);
INSERT INTO feelings VALUES (1, 'sad', '{sad,happy}'), (2, 'happy', NULL), (3, NULL, '{}');
"""
#: Run one by one: a label is usable once committed. 'ecstatic' stays unused.
ENUM_DAY2 = ["ALTER TYPE mood ADD VALUE 'ok' BEFORE 'happy'", "ALTER TYPE mood ADD VALUE 'ecstatic'",
             "INSERT INTO feelings VALUES (4, 'ok', '{ok,sad}')"]

DOMAIN_DAY1 = """
CREATE DOMAIN "Flag" AS boolean NOT NULL;
CREATE TABLE product (id integer PRIMARY KEY, name text);
INSERT INTO product VALUES (1, 'bolt'), (2, 'nut');
"""
DOMAIN_DAY2 = """
ALTER TABLE product ADD COLUMN "MakeFlag" "Flag" DEFAULT true;
INSERT INTO product VALUES (3, 'washer', false);
"""

#: Only binary-encodable columns: the older day is copied in the binary format, widened.
WIDEN_DAY1 = """
CREATE TABLE widened (id integer PRIMARY KEY, small smallint, qty integer, ratio real,
                      name varchar(50), amount numeric(10,2));
INSERT INTO widened VALUES (1, 7, 2147483647, 0.1, repeat('n', 50), 12345678.91),
                           (2, NULL, -5, 3.4e38, '', NULL);
"""
WIDEN_DAY2 = """
ALTER TABLE widened ALTER COLUMN small TYPE integer, ALTER COLUMN qty TYPE bigint,
    ALTER COLUMN ratio TYPE double precision, ALTER COLUMN name TYPE varchar(80),
    ALTER COLUMN amount TYPE numeric(14,2);
INSERT INTO widened VALUES (3, 70000, 9000000000, 0.1, repeat('w', 80), 123456789012.34);
"""


def extract_and_load(day: str, env: dict[str, str]):
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, day, env))
    return run_step("load-warehouse", day, env)


def day_rows(wh, table: str, day: str) -> list[tuple]:
    return wh.execute(sql.SQL("SELECT t::text FROM snapshots.{} AS t WHERE snapshot_date = %s "
                              "ORDER BY 1").format(sql.Identifier(table)), (day,)).fetchall()


def labels(conn) -> list[str]:
    return conn.execute("SELECT enum_range(NULL::mood)::text[]").fetchone()[0]


def not_null_in_partition(wh, table: str, day: str, column: str) -> bool:
    return wh.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass("
                      "format('snapshot_days.%%I', %s::text)) AND attname = %s",
                      (f"{table}@{day}", column)).fetchone()[0]


def assert_refused(databases, day: str, message: str, unchanged: dict) -> None:
    failed = extract_and_load(day, databases.env)
    assert failed.returncode != 0
    assert message in output(failed) and "Traceback" not in output(failed)
    marker = json.loads((databases.data_root / "_status" / day / "load-warehouse.json"
                         ).read_text())
    assert message in marker["error"]
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == unchanged


def test_enum_labels_added_at_the_source_load_and_a_renamed_one_is_refused(databases):
    env = databases.env
    with databases.source(autocommit=True) as src:
        src.execute(ENUM_DAY1)
    assert_ok(extract_and_load(DAY1, env))
    with databases.source(autocommit=True) as src:
        for change in ENUM_DAY2:
            src.execute(change)
        source_labels = labels(src)
    result = extract_and_load(DAY2, env)
    assert_ok(result)
    assert "enum labels added: mood: ok; mood: ecstatic" in output(result)
    with databases.warehouse() as wh:
        # New labels in their source order, the unused one too; rows using them load.
        assert labels(wh) == source_labels == ["sad", "ok", "happy", "ecstatic"]
        assert wh.execute("SELECT feeling::text, tags::text FROM feelings WHERE id = 4"
                          ).fetchone() == ("ok", "{ok,sad}")
        current = warehouse_digest(wh)
    # The older day (without the new labels) reloads as it was.
    assert_ok(run_step("load-warehouse", DAY1, env))
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == current

    # A renamed label is refused naming the type and the labels; nothing is added.
    with databases.source(autocommit=True) as src:
        src.execute("ALTER TYPE mood RENAME VALUE 'ecstatic' TO 'elated'")
    assert_refused(databases, DAY3,
                   "enum type mood: the warehouse has labels ('sad', 'ok', 'happy', 'ecstatic'), "
                   "the day's source ('sad', 'ok', 'happy', 'elated'): 'ecstatic' removed or "
                   "renamed", current)
    with databases.warehouse() as wh:
        assert labels(wh) == source_labels


def test_a_new_column_of_a_not_null_domain_loads_null_on_older_days(databases):
    env = databases.env
    with databases.source(autocommit=True) as src:
        src.execute(DOMAIN_DAY1)
    assert_ok(extract_and_load(DAY1, env))
    with databases.source(autocommit=True) as src:
        src.execute(DOMAIN_DAY2)
    assert_ok(extract_and_load(DAY2, env))
    assert_ok(run_step("load-warehouse", DAY1, env))  # and the older day reloads
    with databases.warehouse() as wh:
        # NULL on the day before the column existed, the day's values after.
        assert wh.execute('SELECT snapshot_date::text, count(*), count("MakeFlag") FROM '
                          "snapshots.product GROUP BY 1 ORDER BY 1").fetchall() == [
            (DAY1, 2, 0), (DAY2, 3, 3)]
        assert wh.execute('SELECT id, "MakeFlag" FROM product ORDER BY 1').fetchall() == [
            (1, True), (2, True), (3, False)]
        assert wh.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                          "attrelid = 'public.product'::regclass AND attname = 'MakeFlag'"
                          ).fetchone() == ('"Flag"',)
        # The partition of a day that has the column refuses NULL there, as the domain did.
        assert not_null_in_partition(wh, "product", DAY2, "MakeFlag")
        assert not not_null_in_partition(wh, "product", DAY1, "MakeFlag")
        with pytest.raises(psycopg.errors.NotNullViolation):
            wh.execute("UPDATE snapshots.product SET \"MakeFlag\" = NULL WHERE snapshot_date = %s",
                       (DAY2,))


def test_an_older_day_is_widened_on_its_way_in_and_narrowing_names_every_column(databases):
    env = databases.env
    with databases.source(autocommit=True) as src:
        src.execute(WIDEN_DAY1)
    assert_ok(extract_and_load(DAY1, env))
    with databases.warehouse() as wh:
        as_loaded = day_rows(wh, "widened", DAY1)
    with databases.source(autocommit=True) as src:
        src.execute(WIDEN_DAY2)
    assert_ok(extract_and_load(DAY2, env))
    with databases.warehouse() as wh:
        # The table widens: every day of it holds the wider types.
        assert wh.execute("SELECT max(qty), max(small) FROM widened").fetchone() == (
            9000000000, 70000)
        current = warehouse_digest(wh)
        widened_day1 = day_rows(wh, "widened", DAY1)
        assert widened_day1 != as_loaded  # the same values in wider types (0.1 as real)

    # Reloading the older, narrower day widens its values on the way in, binary COPY included
    # (int2/int4 -> int4/int8, real -> double precision are other sizes of bytes).
    result = run_step("load-warehouse", DAY1, env)
    assert_ok(result)
    assert ("widened: widening this older day's amount to numeric(14,2), name to character "
            "varying(80), qty to bigint, ratio to double precision, small to integer") \
        in output(result)
    with databases.warehouse() as wh:
        assert day_rows(wh, "widened", DAY1) == widened_day1
        assert wh.execute("SELECT ratio FROM snapshots.widened WHERE id = 1 AND snapshot_date = "
                          "%s", (DAY1,)).fetchone() == (float.fromhex("0x1.99999a0000000p-4"),)
        assert warehouse_digest(wh) == current

    # Narrowing the newest day is refused naming every narrowed column.
    with databases.source(autocommit=True) as src:
        src.execute("DELETE FROM widened WHERE id = 3; ALTER TABLE widened "
                    "ALTER COLUMN qty TYPE integer, ALTER COLUMN name TYPE varchar(60)")
    assert_refused(databases, DAY3,
                   "table widened, column qty: the warehouse has type bigint, the partition has "
                   "integer; column name: the warehouse has type character varying(80), the "
                   "partition has character varying(60)", current)


def test_a_not_null_domain_made_by_an_earlier_version_is_relaxed(databases):
    with databases.source(autocommit=True) as src:
        src.execute('CREATE DOMAIN "Flag" AS boolean NOT NULL; '
                    'CREATE TABLE flagged (id integer PRIMARY KEY, "Flag" "Flag")')
        src.execute("INSERT INTO flagged VALUES (1, true)")
    with databases.warehouse(autocommit=True) as wh:
        wh.execute('CREATE DOMAIN "Flag" AS boolean NOT NULL')
    assert_ok(extract_and_load(DAY1, databases.env))
    with databases.warehouse() as wh:
        assert wh.execute("""SELECT typnotnull FROM pg_type WHERE typname = 'Flag'""").fetchone() \
            == (False,)
        assert not_null_in_partition(wh, "flagged", DAY1, "Flag")
        assert wh.execute('SELECT "Flag" FROM flagged').fetchall() == [(True,)]


def test_source_names_like_the_warehouses_own_objects_load_and_snapshot_date_is_refused(
        databases):
    env = databases.env
    with databases.source(autocommit=True) as src:
        src.execute(f"""CREATE TABLE _loads (snapshot_date_text text, n integer);
                        INSERT INTO _loads VALUES ('not the log', 1);
                        CREATE TABLE "region@{DAY1}" (id integer PRIMARY KEY, name text);
                        INSERT INTO "region@{DAY1}" VALUES (1, 'a table, not a partition');
                        CREATE TABLE "region@{DAY1}~loading" (id integer);
                        INSERT INTO "region@{DAY1}~loading" VALUES (7)""")
    assert_ok(extract_and_load(DAY1, env))
    assert_ok(run_step("load-warehouse", DAY1, env))  # the rerun replaces them like any table
    with databases.warehouse() as wh:
        assert wh.execute("SELECT * FROM _loads").fetchall() == [("not the log", 1)]
        assert wh.execute(f'SELECT name FROM "region@{DAY1}"').fetchall() == [
            ("a table, not a partition",)]
        assert wh.execute(f'SELECT id FROM "region@{DAY1}~loading"').fetchall() == [(7,)]
        assert wh.execute("SELECT count(*) FROM region").fetchone() == (4,)
        assert wh.execute("SELECT snapshot_date::text, rows->>'_loads' FROM northwind.loads"
                          ).fetchall() == [(DAY1, "1")]
        assert wh.execute("SELECT relkind::text FROM pg_class WHERE oid = 'snapshots._loads'"
                          "::regclass").fetchone() == ("p",)
        # Each snapshot table's partitions, and nothing else, live in snapshot_days.
        assert wh.execute(
            "SELECT i.inhparent::regclass::text FROM pg_inherits i JOIN pg_class c ON "
            "c.oid = i.inhrelid WHERE c.relname = %s", (f"region@{DAY1}@{DAY1}",)).fetchone() \
            == (f'snapshots."region@{DAY1}"',)
        current = warehouse_digest(wh)

    # A source column named like the day column: refused naming the table, nothing loaded.
    with databases.source(autocommit=True) as src:
        src.execute("CREATE TABLE clash (id integer, snapshot_date date); "
                    "INSERT INTO clash VALUES (1, '2020-01-01')")
    assert_refused(databases, DAY2, "table clash: a source column is named snapshot_date, which "
                   "the warehouse reserves for the day of each snapshot", current)


def test_an_earlier_versions_log_and_partitions_in_snapshots_are_moved_by_the_next_load(
        databases):
    """The layout before this one: snapshots._loads and snapshots."<table>@<day>"."""
    with databases.warehouse(autocommit=True) as wh:
        wh.execute("""CREATE SCHEMA snapshots;
            CREATE TABLE snapshots._loads (snapshot_date date PRIMARY KEY, loaded_at timestamptz
                NOT NULL DEFAULT now(), rows jsonb NOT NULL, columns jsonb);
            INSERT INTO snapshots._loads (snapshot_date, rows) VALUES ('2023-12-30',
                '{"region": 1}');
            CREATE TABLE snapshots.region (region_id smallint, region_description bpchar,
                snapshot_date date NOT NULL, PRIMARY KEY (snapshot_date, region_id))
                PARTITION BY LIST (snapshot_date);
            CREATE TABLE snapshots."region@2023-12-30" PARTITION OF snapshots.region
                FOR VALUES IN ('2023-12-30');
            INSERT INTO snapshots.region VALUES (1, 'Old east', '2023-12-30')""")
    result = extract_and_load(DAY1, databases.env)
    assert_ok(result)
    assert "migrated to the current layout: snapshots._loads, snapshots.region@2023-12-30" \
        in output(result)
    with databases.warehouse() as wh:
        assert [d for (d,) in wh.execute("SELECT snapshot_date::text FROM northwind.loads "
                                         "ORDER BY 1")] == ["2023-12-30", DAY1]
        assert wh.execute('SELECT region_description::text FROM snapshot_days."region@2023-12-30"'
                          ).fetchall() == [("Old east",)]
        assert wh.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                          "'snapshots'::regnamespace AND relkind = 'r'").fetchone() == (0,)
        assert wh.execute("SELECT count(*) FROM region").fetchone() == (4,)


def test_a_role_that_may_not_create_the_new_schemas_is_told_what_to_run(databases):
    """A cluster warehouse initialised before snapshot_days and northwind existed."""
    role = f"writer_of_{databases.env['WAREHOUSE_PGDATABASE']}"
    with databases.warehouse(autocommit=True) as wh:
        wh.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        wh.execute(sql.SQL("CREATE SCHEMA snapshots AUTHORIZATION {}; GRANT USAGE, CREATE ON "
                           "SCHEMA public TO {}").format(sql.Identifier(role), sql.Identifier(role)))
    env = {**databases.env, "WAREHOUSE_PGUSER": role}
    failed = extract_and_load(DAY1, env)
    assert failed.returncode != 0 and "Traceback" not in output(failed)
    assert (f"the warehouse has no schema snapshot_days and role {role} may not create it: run "
            f"CREATE SCHEMA snapshot_days AUTHORIZATION {role} as the database owner") \
        in output(failed)
    with databases.warehouse(autocommit=True) as wh:
        for schema in ("snapshot_days", "northwind", "history"):
            wh.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(role)))
    assert_ok(run_step("load-warehouse", DAY1, env))

"""A source with every kind of PostgreSQL column loads exactly, through `meltano run` of the steps.

One source holds domains, composite, range and multirange types, money, bit strings, xml, text
search types, geometric and network types, intervals with fields, multi-dimensional arrays with
NULLs of these, stored and virtual generated columns, a partitioned table with sub-partitions,
tables in three schemas and names that need quoting, beside Northwind. One run of
``extract-postgres`` + ``extract-csv`` + ``load-warehouse`` loads it, and every warehouse view
equals its source table: types by ``format_type()``, cells by ``::text``.
"""

import json

import psycopg
import pyarrow.parquet as pq
import pytest
from northwind_elt.errors import SettingError
from pipeline import assert_ok, committed, output, run_step
from psycopg import sql
from tap_pgcopy.tap import TapPgCopy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
SCHEMAS = ["public", "sales", "Odd \"Schema\""]

SOURCE = r'''
CREATE SCHEMA sales;
CREATE SCHEMA "Odd ""Schema""";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s "fine"');
CREATE DOMAIN year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
CREATE DOMAIN "Short Text" AS varchar(20) NOT NULL CHECK (VALUE <> '');
CREATE DOMAIN recent_year AS year CHECK (VALUE > 1999);
CREATE TYPE address AS (street text, "Zip Code" varchar(10), at point, tags text[], feeling mood,
                        built year);
CREATE TYPE sales.floatrange AS RANGE (subtype = float8,
                                       multirange_type_name = sales.floatmultirange);
CREATE TYPE "Pair" AS (a recent_year, "b c" numeric(5,2), r sales.floatrange);

CREATE TABLE everything (
    id integer PRIMARY KEY,
    built year, built_years year[], label "Short Text", newer recent_year[],
    home address, homes address[], pair "Pair",
    fr sales.floatrange, frm sales.floatmultirange, i4r int4range, tsr tstzrange, dr daterange,
    nr numrange, i8mr int8multirange, dmr datemultirange, ranges int4range[],
    price money, prices money[],
    b bit(5), vb bit varying(12), bits bit(3)[],
    x xml, tv tsvector, tq tsquery,
    pt point, ln line, ls lseg, bx box, pth path, pg polygon, ci circle, boxes box[],
    ip inet, net cidr, mac macaddr, mac8 macaddr8, ips inet[],
    iv interval, ivs interval[], ivym interval year to month, ivds interval day to second(3),
    grid integer[], cube text[], tm time(2), ttz time with time zone, ch "char", js json,
    total bigint GENERATED ALWAYS AS (id * 1000 + "semi;colon") STORED,
    virt text GENERATED ALWAYS AS (upper("Mixed Case")) VIRTUAL,
    "Mixed Case" text, "with space" text, "quo""te" text, "semi;colon" integer,
    "dot.ted" integer, "é" text, "select" text
);
INSERT INTO everything VALUES (
    1, 1901, '{{1901,NULL},{NULL,2155}}', 'a, "b"', '{2000,NULL}',
    ROW('Main St. 1, "A"', '0815', '(1.5,-2)', '{x,NULL,"y z"}', 'it''s "fine"', 1999),
    ARRAY[ROW('a', NULL, NULL, '{}', 'sad', NULL)::address, NULL,
          ROW(NULL, NULL, '(0,0)', '{{a,b},{NULL,c}}', NULL, 2000)::address],
    ROW(2024, 123.45, '[1.5,2.5)'),
    '[-1e300,1e-300)', '{[1,2), (3,4]}', '[1,10)', '[2024-01-01 00:00+05:30,infinity)',
    '[-infinity,2024-01-01]', '(,1.5]', '{[1,3),[5,8)}', '{[2024-01-01,2024-02-01)}',
    '{{"[1,2)",NULL},{empty,"(,5)"}}',
    -1234567.89, '{1.5,NULL,-0.01}',
    B'10101', B'1100110011', '{101,NULL,000}',
    NULL, 'a fat:1A cat:2B,3 &', 'fat & (rat | !cat) <-> sat:*',
    '(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(2,2),(0,0)', '[(0,0),(1,1),(2,0)]',
    '((0,0),(1,1),(1,0))', '<(0,0),1.5>', '{(1,1),(0,0);(3,3),(2,2)}',
    '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
    '{{::1,NULL},{10.1.2.3/32,fe80::1/64}}',
    '1 year 2 mons -3 days 04:05:06.789012', '{{"1 day",NULL},{"-00:00:01","3 mons"}}',
    '-1 year 11 months', '4 days 05:06:07.891',
    '{{1,NULL,3},{4,5,NULL}}', '{{{a,NULL},{"",NULL}},{{"\\",","},{"}","NULL"}}}',
    '23:59:59.99', '04:05:06.5+05:30', 'x', '{"a": [1, 2.50], "a": null}',
    DEFAULT, DEFAULT,
    'Ünïcode', ' padded ', '"', 7, 8, 'é', 'select'
), (
    2, NULL, '{}', 'z', NULL, NULL, '{}', NULL, 'empty', '{}', 'empty', NULL, NULL, NULL, NULL,
    NULL, '{}', NULL, '{}', NULL, B'', NULL, NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, '{}', NULL, NULL, NULL, NULL, '{}', '0', '{}', NULL, NULL, '{}', '{}', NULL, NULL,
    NULL, NULL, DEFAULT, DEFAULT, NULL, NULL, NULL, NULL, NULL, NULL, NULL
);

CREATE TABLE measurements (id integer, at date, v double precision, note text,
                           PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2023 PARTITION OF measurements
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') PARTITION BY HASH (id);
CREATE TABLE measurements_2023_a PARTITION OF measurements_2023
    FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE measurements_2023_b PARTITION OF measurements_2023
    FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_rest PARTITION OF measurements DEFAULT;
INSERT INTO measurements SELECT g, date '2023-06-01' + g * 7, g / 3.0, 'n' || g
    FROM generate_series(1, 120) g;
INSERT INTO measurements VALUES (0, 'infinity', 'NaN', NULL), (-1, '0044-03-15 BC', '-Infinity', '');

CREATE TABLE sales.orders (order_id bigint PRIMARY KEY, amount numeric(10,2), at timestamptz,
                           region sales.floatrange);
INSERT INTO sales.orders VALUES (1, 10.5, '2024-01-01 10:00+01', '[0,1)'),
                                (2, 'NaN', '-infinity', NULL);

CREATE TABLE "Odd ""Schema"""."Odd ""Table"".x" ("Key" integer PRIMARY KEY, "Val;ue" mood[]);
INSERT INTO "Odd ""Schema"""."Odd ""Table"".x" VALUES (1, '{sad,"it''s \"fine\"",NULL}');

CREATE TABLE "Weird name; DROP TABLE x --" (id integer PRIMARY KEY, "Ü" year);
INSERT INTO "Weird name; DROP TABLE x --" VALUES (1, 2000), (2, NULL);
'''

#: Source table → the stream (warehouse table, view) it becomes.
STREAMS = {
    ("public", "everything"): "everything",
    ("public", "measurements"): "measurements",
    ("sales", "orders"): "sales.orders",
    ('Odd "Schema"', 'Odd "Table".x'): 'Odd "Schema".Odd "Table".x',
    ("public", "Weird name; DROP TABLE x --"): "Weird name; DROP TABLE x --",
}


def as_text(conn: psycopg.Connection, schema: str, table: str) -> tuple[list, list]:
    """Column types (``format_type()``) and every row as PostgreSQL text, in a fixed order."""
    conn.execute("SET TimeZone = 'America/St_Johns'")  # a half-hour offset, not the server's
    types = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attnum > 0
             AND NOT a.attisdropped AND a.attname <> 'snapshot_date' ORDER BY a.attnum""",
        (schema, table)).fetchall()
    assert types, f"{schema}.{table} does not exist"
    cells = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n, _ in types)
    rows = conn.execute(sql.SQL("SELECT {} FROM {}.{}").format(
        cells, sql.Identifier(schema), sql.Identifier(table))).fetchall()
    return types, sorted(rows, key=lambda row: [(v is None, v or "") for v in row])


def extract_and_load(env: dict[str, str]) -> None:
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, env))


def test_a_source_with_every_kind_of_column_loads_exactly(databases):
    with databases.source(autocommit=True) as src:
        src.execute(SOURCE)
    extract_and_load({**databases.env, "TAP_PGCOPY_SCHEMAS": json.dumps(SCHEMAS)})

    with databases.source() as src, databases.warehouse() as wh:
        for (schema, table), stream in STREAMS.items():
            source_types, source_rows = as_text(src, schema, table)
            loaded_types, loaded_rows = as_text(wh, "public", stream)
            assert loaded_types == source_types, stream
            assert len(loaded_rows) == len(source_rows) > 0, stream
            for expected, found in zip(source_rows, loaded_rows, strict=True):
                for (name, _), left, right in zip(source_types, expected, found, strict=True):
                    assert right == left, f"{stream}, column {name}"
        # The comparison compares what it should: a few cells spelt out.
        assert wh.execute("SELECT built_years::text, (home).street, homes[3].tags[2][1] IS NULL, "
                          "price::numeric::text, \"semi;colon\" FROM everything WHERE id = 1").fetchone() \
            == ("{{1901,NULL},{NULL,2155}}", 'Main St. 1, "A"', True, "-1234567.89", 7)
        # Domains keep their constraints, nested domains included; the parent holds every
        # partition's rows once, and no partition is a table of its own.
        with pytest.raises(psycopg.errors.CheckViolation):
            wh.execute("SELECT 1999::recent_year")
        wh.rollback()
        assert wh.execute("SELECT count(*) FROM measurements").fetchone() == (122,)
        # The snapshot table, its one partition of the day, the view and the history; no source
        # partition.
        assert sorted(wh.execute(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE 'measurements%' "
            "AND c.relkind NOT IN ('i', 'I')").fetchall()) == [
            ("history", "measurements", "r"), ("public", "measurements", "v"),
            ("snapshot_days", f"measurements@{DAY}", "r"), ("snapshots", "measurements", "p")]
        # Northwind still loads as before, beside the new tables.
        assert wh.execute("SELECT count(*) FROM orders").fetchone() == (830,)

    root = databases.data_root / "postgres"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(("Odd", "sales", "meas"))) \
        == ["Odd%20%22Schema%22%2EOdd%20%22Table%22%2Ex", "measurements", "sales%2Eorders"]
    # Native Parquet types stay where the day's values fit them; special values make text.
    schema = pq.read_schema(committed(root.parent, "postgres", "sales%2Eorders", DAY,
                                       "sales%2Eorders.parquet"))
    assert [str(f.type) for f in schema] == ["int64", "string", "string", "string"]
    schema = pq.read_schema(committed(root.parent, "postgres", "everything", DAY, "everything.parquet"))
    assert str(schema.field("id").type) == "int32"


EXTENSION_SOURCE = """
CREATE EXTENSION citext;
CREATE TABLE tagged (id integer PRIMARY KEY, tag citext);
INSERT INTO tagged VALUES (1, 'MiXeD');
"""


def test_a_type_the_warehouse_lacks_fails_the_load_naming_table_column_and_type(databases):
    with databases.source(autocommit=True) as src:
        src.execute(EXTENSION_SOURCE)
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, DAY, databases.env))
    result = run_step("load-warehouse", DAY, databases.env)
    assert result.returncode != 0
    assert ("table tagged, column tag: type citext does not exist in the warehouse and only its "
            "extension citext can create it") in output(result)
    assert "loaded categories" not in output(result)  # refused before the first table was copied
    with databases.warehouse() as wh:
        assert wh.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                          "n.oid = c.relnamespace WHERE n.nspname IN ('snapshots', 'public')"
                          ).fetchone() == (0,)
    marker = json.loads((databases.data_root / "_status" / DAY / "load-warehouse.json").read_text())
    assert marker["status"] == "failed" and "column tag: type citext" in marker["error"]


def test_two_tables_that_would_share_a_stream_name_are_refused_naming_both(databases):
    with databases.source(autocommit=True) as src:
        src.execute('CREATE SCHEMA sales; CREATE TABLE sales.orders (id integer);'
                    'CREATE TABLE "sales.orders" (id integer)')
    env = databases.env
    config = {"host": env["SOURCE_PGHOST"], "port": int(env["SOURCE_PGPORT"]),
              "dbname": env["SOURCE_PGDATABASE"], "user": env["SOURCE_PGUSER"],
              "schemas": ["public", "sales"]}
    with pytest.raises(SettingError, match=r"tables public\.sales\.orders and sales\.orders would "
                                           r"both be stream 'sales\.orders'"):
        TapPgCopy(config=config).discover_streams()
    # Without the second schema the public table keeps its name.
    streams = TapPgCopy(config={**config, "schemas": ["public"]}).discover_streams()
    assert "sales.orders" in [s.name for s in streams]

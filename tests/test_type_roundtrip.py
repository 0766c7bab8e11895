"""Types Northwind lacks survive extract → load exactly, compared cell by cell as PostgreSQL text.

The plugins run in this process, one fed the messages of the other (as ``meltano run`` pipes them):
tap-pgcopy → target-datatree, tap-csvtyped → target-datatree (the load needs both extracts), then
tap-datatree → target-pgcopy.
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline import Databases, committed
from psycopg import sql
from tap_csvtyped.tap import TapCsvTyped
from tap_datatree.tap import TapDataTree
from tap_pgcopy.tap import TapPgCopy
from target_datatree.target import TargetDataTree
from target_pgcopy.target import TargetPgCopy

DAY = "2024-01-02"

EXOTIC = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s "complicated", really');
CREATE TABLE exotic (
    id integer PRIMARY KEY,
    amount numeric(12,4),
    at timestamptz,
    uid uuid,
    doc jsonb,
    ints integer[],
    texts text[],
    feeling mood,
    blob bytea,
    span interval,
    flag boolean
);
INSERT INTO exotic VALUES
 (1, 12345678.1234, '2024-03-10 01:59:59.999999-08', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": {"b": [1, 2.50, {"c": null}], "d": "line\\nbreak, \\"quoted\\""}, "é": "ü"}',
  '{1,NULL,-3}', ARRAY['a,b', 'with "quote"', NULL, '', 'back\\slash', 'NULL'], 'happy',
  '\\x00ff000a0d2c22', '1 year 2 mons 3 days 04:05:06.789', true),
 (2, -99999999.9999, '1999-12-31 23:00:00+05:30', '00000000-0000-0000-0000-000000000000',
  '{}', '{}', '{}', 'it''s "complicated", really', '\\x', '-1 days +02:00:00', false),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0.0001, '2038-01-19 03:14:08 Asia/Kathmandu', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '[1, "two", [3], {"4": false}]', '{{1,2},{3,4}}', '{{"x y","z"},{NULL,"w"}}', 'sad',
  '\\x00', '-00:00:00.000001', NULL),
 (5, -0.0001, '1970-01-01 00:00:00 UTC', NULL, '"just a string"', '{2147483647,-2147483648}',
  '{"multi\nline"}', NULL, decode(repeat('00ff', 5000), 'hex'), '178000000 years', true);
"""

#: Where pgtypes stores a type natively in Parquet; every other column is PostgreSQL's text.
NATIVE = {"id": pa.int32(), "amount": pa.decimal128(12, 4), "at": pa.timestamp("us", tz="UTC"),
          "blob": pa.binary(), "flag": pa.bool_()}


def pipe(tap, target_class, target_config: dict) -> None:
    """Feed everything ``tap`` writes to a ``target_class`` (as ``meltano run`` pipes them)."""
    messages = io.StringIO()
    with contextlib.redirect_stdout(messages):
        tap.sync_all()
    with contextlib.redirect_stdout(io.StringIO()):
        target_class(config=target_config).listen(io.StringIO(messages.getvalue()))


def extract_and_load(databases: Databases, tables: list[str], tmp_path: Path) -> None:
    env, root = databases.env, str(databases.data_root)
    source = {"host": env["SOURCE_PGHOST"], "port": int(env["SOURCE_PGPORT"]),
              "dbname": env["SOURCE_PGDATABASE"], "user": env["SOURCE_PGUSER"]}
    day = {"run_date": DAY, "data_root": root}
    batch = {"encoding": {"format": "parquet"},
             "storage": {"root": (databases.data_root / ".staging").as_uri()}}
    pipe(TapPgCopy(config={**source, **day, "tables": tables, "step": "extract-postgres",
                           "batch_config": batch}),
         TargetDataTree, {**day, "source": "postgres", "step": "extract-postgres"})
    csv_file = tmp_path / "one.csv"
    csv_file.write_text("id\n1\n")
    files = [{"stream": "one", "path": str(csv_file), "columns": [{"name": "id", "type": "int"}]}]
    pipe(TapCsvTyped(config={**day, "files": files, "step": "extract-csv", "batch_config": batch}),
         TargetDataTree, {**day, "source": "csv", "step": "extract-csv"})
    pipe(TapDataTree(config={**day, "step": "load-warehouse"}),
         TargetPgCopy, {**day, **source, "dbname": env["WAREHOUSE_PGDATABASE"]})


def as_text(conn, schema: str, table: str) -> tuple[list[str], list[tuple]]:
    """Column types and every cell as PostgreSQL text, rows by id, in a fixed time zone."""
    conn.execute("SET TimeZone = 'America/St_Johns'")  # a half-hour offset, not the server's
    types = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attnum > 0
             AND NOT a.attisdropped AND a.attname <> 'snapshot_date' ORDER BY a.attnum""",
        (schema, table)).fetchall()
    cells = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n, _ in types)
    rows = conn.execute(sql.SQL("SELECT {} FROM {}.{} ORDER BY id").format(
        cells, sql.Identifier(schema), sql.Identifier(table))).fetchall()
    return types, rows


def test_exotic_types_round_trip_exactly(databases, tmp_path):
    with databases.source(autocommit=True) as src:
        src.execute(EXOTIC)
    extract_and_load(databases, ["exotic"], tmp_path)

    with databases.source() as src, databases.warehouse() as wh:
        source_types, source_rows = as_text(src, "public", "exotic")
        loaded_types, loaded_rows = as_text(wh, "snapshots", "exotic")
        assert loaded_types == source_types
        assert len(loaded_rows) == len(source_rows) == 5
        for source_row, loaded_row in zip(source_rows, loaded_rows, strict=True):
            for (name, _), expected, found in zip(source_types, source_row, loaded_row,
                                                   strict=True):
                assert found == expected, f"row id={source_row[0]}, column {name}"
        assert as_text(wh, "public", "exotic")[1] == source_rows
        # Spot checks that the comparison compares what it should.
        assert src.execute("SELECT octet_length(blob) FROM exotic WHERE id = 5").fetchone() == \
            (10000,)
        assert wh.execute("SELECT doc #>> '{a,b,2}', texts[3] IS NULL, texts[6] FROM "
                          "snapshots.exotic WHERE id = 1").fetchone() == ('{"c": null}', True,
                                                                          "NULL")

    schema = pq.read_schema(committed(databases.data_root, "postgres", "exotic", DAY, "exotic.parquet"))
    for field in schema:
        assert field.type == NATIVE.get(field.name, pa.string()), field.name


ENUM_ARRAY = """
CREATE TYPE "Weekday" AS ENUM ('mon', 'tue', 'wed');
CREATE TABLE schedule (id integer PRIMARY KEY, days "Weekday"[]);
INSERT INTO schedule VALUES (1, '{mon,wed}'), (2, '{}'), (3, NULL);
"""


def test_an_array_of_an_enum_no_column_uses_alone_round_trips(databases, tmp_path):
    """The labels must travel with the array column: no plain column creates the enum type."""
    with databases.source(autocommit=True) as src:
        src.execute(ENUM_ARRAY)
    extract_and_load(databases, ["schedule"], tmp_path)
    with databases.source() as src, databases.warehouse() as wh:
        assert as_text(wh, "snapshots", "schedule") == as_text(src, "public", "schedule")


EDGE_VALUES = {
    "timestamp after 9999": ("timestamp without time zone", "'12345-06-07 08:09:10'"),
    "timestamptz after 9999": ("timestamp with time zone", "'12345-06-07 08:09:10+00'"),
    "date after 9999": ("date", "'12345-06-07'"),
    "unconstrained numeric NaN": ("numeric", "'NaN'"),
    "unconstrained numeric -Infinity": ("numeric", "'-Infinity'"),
    "real NaN": ("real", "'NaN'"),
    "double precision -Infinity": ("double precision", "'-Infinity'"),
}
SPECIAL_VALUES = {
    "numeric(12,4) NaN": ("numeric(12,4)", "'NaN'"),
    "timestamptz -infinity": ("timestamp with time zone", "'-infinity'"),
    "timestamptz BC": ("timestamp with time zone", "'4713-01-01 00:00:00+00 BC'"),
    "timestamp infinity": ("timestamp without time zone", "'infinity'"),
    "date infinity": ("date", "'infinity'"),
    "date BC": ("date", "'0044-03-15 BC'"),
}


def round_trip_one_value(databases, tmp_path, sql_type: str, value: str) -> None:
    with databases.source(autocommit=True) as src:
        src.execute(f"CREATE TABLE special (id integer PRIMARY KEY, v {sql_type});"
                    f"INSERT INTO special VALUES (1, {value}), (2, NULL)")
    extract_and_load(databases, ["special"], tmp_path)
    with databases.source() as src, databases.warehouse() as wh:
        assert as_text(wh, "snapshots", "special") == as_text(src, "public", "special")


@pytest.mark.parametrize("sql_type, value", EDGE_VALUES.values(), ids=EDGE_VALUES.keys())
def test_edge_values_round_trip(databases, tmp_path, sql_type, value):
    round_trip_one_value(databases, tmp_path, sql_type, value)


@pytest.mark.parametrize("sql_type, value", SPECIAL_VALUES.values(), ids=SPECIAL_VALUES.keys())
def test_special_values_round_trip(databases, tmp_path, sql_type, value):
    round_trip_one_value(databases, tmp_path, sql_type, value)


def test_a_column_is_text_only_on_a_day_that_holds_a_special_value(databases, tmp_path):
    """Native types stay wherever they hold the day's values; the others are PostgreSQL text."""
    with databases.source(autocommit=True) as src:
        src.execute("""CREATE TABLE special (id integer PRIMARY KEY, valid_to date, at timestamptz,
                                             amount numeric(8,2), plain date);
                       INSERT INTO special SELECT g, current_date, now(), g, current_date
                       FROM generate_series(1, 200000) g;
                       INSERT INTO special VALUES (200001, 'infinity', '0100-01-01 BC', 'NaN',
                                                   '2024-01-01')""")
    extract_and_load(databases, ["special"], tmp_path)
    path = committed(databases.data_root, "postgres", "special", DAY, "special.parquet")
    types = {f.name: f.type for f in pq.read_schema(path)}
    assert types == {"id": pa.int32(), "valid_to": pa.string(), "at": pa.string(),
                     "amount": pa.string(), "plain": pa.date32()}
    manifest = json.loads(path.with_name("special.manifest.json").read_text())
    assert {c["name"]: (c["sql_type"], c["arrow_type"]) for c in manifest["columns"]} == {
        "id": ("integer", "int32"), "valid_to": ("date", "string"),
        "at": ("timestamp with time zone", "string"), "amount": ("numeric(8,2)", "string"),
        "plain": ("date", "date32[day]")}
    with databases.source() as src, databases.warehouse() as wh:
        assert as_text(wh, "snapshots", "special") == as_text(src, "public", "special")
    with databases.source(autocommit=True) as src:
        src.execute("DELETE FROM special WHERE id = 200001")
    shutil.rmtree(databases.data_root)
    extract_and_load(databases, ["special"], tmp_path)
    path = committed(databases.data_root, "postgres", "special", DAY, "special.parquet")
    assert pq.read_schema(path).field("valid_to").type == pa.date32()

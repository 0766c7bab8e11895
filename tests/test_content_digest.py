"""The content digest: the same on every side, order-independent, counting duplicates."""

import io

import pyarrow as pa
import pyarrow.csv as pacsv
from northwind_elt.arrow_io import csv_convert_options
from northwind_elt.content_digest import (
    ArrowDigest,
    Digest,
    source_expression,
    table_digest,
    warehouse_expression,
)
from northwind_elt.pgtypes import arrow_schema, declared_column
from pipeline import Databases
from psycopg import sql

#: Every type a CSV file can declare, with values whose text PostgreSQL normalises.
CSV_COLUMNS = [("i2", "smallint"), ("i8", "bigint"), ("r", "real"), ("d", "double precision"),
               ("n", "numeric(10,2)"), ("u", "numeric"), ("b", "boolean"), ("day", "date"),
               ("ts", "timestamp"), ("tz", "timestamptz"), ("t", "text"), ("v", "varchar(20)")]
CSV_ROWS = "\n".join([
    "1,-9000000000,1.1,1e14,1.5,1e3,t,2024-01-02,2024-01-02 03:04:05,2024-01-02 03:04:05.12+00,plain,x",
    '-2,0,0.00001,0.1,-0.25,-0.0,f,0001-01-01,2024-01-02 03:04:05.000001,1999-12-31 23:59:59-08,"a,b",""',
    '3,1,3.4e38,1.5e20,0,+1.50,t,9999-12-31,2024-01-02 00:00:00,2024-01-02 00:00:00Z,"say ""hi""",(x)',
    '4,,-0,123456789.123,,NaN,,,,,"back\\slash","tab\tand space"',
    '4,,-0,123456789.123,,NaN,,,,,"back\\slash","tab\tand space"',
    '5,2,16777216,0.30000000000000004,99999999.99,0.000100,f,2000-02-29,1970-01-01 00:00:00,'
    '2038-01-19 03:14:08+05:30,"multi\nline",é ü',
]) + "\n"


def _csv_batch() -> tuple[list, pa.RecordBatch]:
    columns = [declared_column(name, kind) for name, kind in CSV_COLUMNS]
    table = pacsv.read_csv(io.BytesIO(CSV_ROWS.encode()),
                           read_options=pacsv.ReadOptions(column_names=[c.name for c in columns]),
                           convert_options=csv_convert_options(columns))
    return columns, table.cast(arrow_schema(columns)).combine_chunks().to_batches()[0]


def test_csv_digest_equals_the_servers_over_the_same_values(databases: Databases):
    """Arrow renders each declarable type as PostgreSQL does: both digests agree."""
    columns, batch = _csv_batch()
    computed = ArrowDigest(columns)
    computed.add(batch.slice(0, 3))
    computed.add(batch.slice(3))
    in_background = ArrowDigest(columns, background=True)
    for start in range(batch.num_rows):  # more batches than may wait
        in_background.add(batch.slice(start, 1))
    assert in_background.digest() == computed.digest()
    in_background.close()
    with databases.source() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE csv_values ({})").format(sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in columns)))
        with cur.copy("COPY csv_values FROM STDIN (FORMAT csv)") as copy:
            copy.write(CSV_ROWS.encode())
        on_server = table_digest(cur, sql.Identifier("csv_values"),
                                 [source_expression(c) for c in columns])
    assert computed.digest() == on_server
    assert on_server.rows == 6


def test_digest_counts_duplicates_and_ignores_order(databases: Databases):
    """A keyless table's duplicate pair counts; a reordered copy digests the same."""
    with databases.source() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE k (a int, b text); INSERT INTO k VALUES (1, 'x'), (1, 'x'), (2, NULL)")
        columns = [declared_column("a", "integer"), declared_column("b", "text")]
        expressions = [source_expression(c) for c in columns]
        digest = table_digest(cur, sql.Identifier("k"), expressions)
        cur.execute("CREATE TABLE k2 AS SELECT * FROM k ORDER BY a DESC")
        assert table_digest(cur, sql.Identifier("k2"), expressions) == digest
        cur.execute("DELETE FROM k2 WHERE a = 1; INSERT INTO k2 VALUES (2, NULL), (2, NULL)")
        other = table_digest(cur, sql.Identifier("k2"), expressions)
        assert other.rows == digest.rows and other != digest


def test_widened_warehouse_column_digests_as_its_source_type(databases: Databases):
    """numeric(10,2) widened to numeric(12,3) (1.50 -> 1.500), real -> double: the source's text."""
    columns = [declared_column("n", "numeric(10,2)"), declared_column("r", "real"),
               declared_column("v", "varchar(5)")]
    with databases.source() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE src (n numeric(10,2), r real, v varchar(5)); "
                    "INSERT INTO src VALUES (1.5, 1.1, 'abc'), (NULL, -0.3, NULL)")
        source = table_digest(cur, sql.Identifier("src"), [source_expression(c) for c in columns])
        cur.execute("CREATE TABLE wide AS SELECT n::numeric(12,3) n, r::double precision r, "
                    "v::varchar(9) v FROM src")
        assert cur.execute("SELECT n::text FROM wide WHERE n IS NOT NULL").fetchone() == ("1.500",)
        assert table_digest(cur, sql.Identifier("wide"),
                            [warehouse_expression(c) for c in columns]) == source


def test_manifest_form_round_trips():
    digest = Digest(3, -(2**70))
    assert Digest.from_json(digest.to_json()) == digest
    assert Digest.from_json(None) is None

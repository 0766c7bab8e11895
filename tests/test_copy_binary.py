"""The load's binary COPY: every type it encodes lands exactly as the CSV path lands it.

The warehouse loads a partition in PostgreSQL's binary COPY format when every column has an
encoding (northwind_elt.copy_binary), else as CSV. Both are checked against the real server,
cell by cell as PostgreSQL text, on edge values of every encoded type.
"""

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from northwind_elt import arrow_io, copy_binary, warehouse
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, arrow_schema, columns_of
from pipeline import committed
from psycopg import sql
from test_type_roundtrip import DAY, as_text, extract_and_load

EVERY_ENCODED_TYPE = """
CREATE TABLE encoded (
    id integer PRIMARY KEY, small smallint, big bigint, r real, d double precision, b boolean,
    day date, at timestamp, at_tz timestamptz, t text, v varchar(6), c char(3), blob bytea
);
INSERT INTO encoded VALUES
 (-2147483648, -32768, -9223372036854775808, '-Infinity', 'NaN', false, '1999-12-31',
  '1999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', '', '', '', '\\x'),
 (2147483647, 32767, 9223372036854775807, 'NaN', '-0', true, '2000-01-01', '2000-01-01 00:00',
  '2000-01-01 00:00:00.000001+00', 'é ü 漢字 🦆', 'abcdéf', 'a', '\\x00ff00'),
 (0, 0, 0, -0.0, 'Infinity', NULL, '0001-01-01', '0001-01-01 00:00', '1900-06-30 12:00+05:30',
  E'line\\nbreak, "quoted", \\\\ tab\\t', 'x', 'ab ', decode(repeat('00ff', 5000), 'hex')),
 (1, NULL, NULL, 3.4e38, 1.7976931348623157e308, true, '12345-06-07', '12345-06-07 08:09:10',
  '12345-06-07 08:09:10+00', 'NULL', 'NULL', 'N', '\\x5c4e'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 1, -1, 1e-45, 5e-324, false, '1970-01-01', '1969-12-31 23:59:59.999999',
  '2038-01-19 03:14:08 Asia/Kathmandu', repeat('long ', 20000), ' ', '   ', '\\x0a0d2c22');
"""


def test_every_encoded_type_round_trips_exactly_through_binary_copy(databases, tmp_path):
    with databases.source(autocommit=True) as src:
        src.execute(EVERY_ENCODED_TYPE)
    extract_and_load(databases, ["encoded"], tmp_path)
    partition = committed(databases.data_root, "postgres", "encoded", DAY, "encoded.parquet")
    columns = columns_of(pq.read_schema(partition))
    assert copy_binary.encodable(columns), "every column should be stored natively or as text"
    assert b"FORMAT binary" in warehouse.copy_statement("x", columns).as_bytes(None)
    with databases.source() as src, databases.warehouse() as wh:
        assert as_text(wh, "snapshots", "encoded") == as_text(src, "public", "encoded")


def load_both_ways(databases, tmp_path, monkeypatch, batch: pa.RecordBatch) -> tuple[list, list]:
    """Load ``batch`` (via a Parquet file) as binary into one table and as CSV into another."""
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.Table.from_batches([batch]), path)
    columns = columns_of(pq.read_schema(path))
    loaded = []
    with databases.warehouse() as wh, wh.cursor() as cur:
        cur.execute("CREATE SCHEMA snapshot_days")
        for name, binary in (("as_binary", True), ("as_csv", False)):
            monkeypatch.setattr(copy_binary, "encodable", lambda _, binary=binary: binary)
            cur.execute(sql.SQL("CREATE TABLE snapshot_days.{} ({})").format(
                sql.Identifier(name), sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
                    for c in columns)))
            statement = warehouse.copy_statement(name, columns)
            assert (b"binary" in statement.as_bytes(cur)) is binary
            rows = arrow_io.copy_parquet_into(cur, statement, path, columns)
            assert rows == batch.num_rows
        wh.commit()
        loaded = [as_text(wh, "snapshot_days", name)[1] for name in ("as_binary", "as_csv")]
    return loaded[0], loaded[1]


def test_binary_and_csv_loads_of_a_sliced_batch_agree_cell_by_cell(databases, tmp_path,
                                                                    monkeypatch):
    # Written with pgtypes' fields (metadata included), then read back: what a partition holds.
    columns = [Column("id", "integer", "int4"), Column("n", "bigint", "int8"),
               Column("f", "real", "float4"), Column("when", "timestamp with time zone",
                                                      "timestamptz"),
               Column("name", "character varying(10)", "varchar", 14),
               Column("raw", "bytea", "bytea")]
    rows = 70_000  # more than one Parquet batch (arrow_io.LOAD_BATCH_ROWS)
    full = pa.RecordBatch.from_arrays([
        pa.array(range(-5, rows - 5), pa.int32()),
        pa.array([None if i % 7 == 0 else i * 1_000_003 for i in range(rows)], pa.int64()),
        pa.array([None if i % 5 == 0 else i / 3 for i in range(rows)], pa.float32()),
        pa.array([None if i % 11 == 0 else i * 86_400_000_001 - 10**15 for i in range(rows)],
                 pa.timestamp("us", tz="UTC")),
        pa.array([None if i % 3 == 0 else f"ü{i}" if i % 2 else "" for i in range(rows)]),
        pa.array([None if i % 13 == 0 else bytes([i % 256]) * (i % 4) for i in range(rows)],
                 pa.binary()),
    ], schema=arrow_schema(columns))
    as_binary, as_csv = load_both_ways(databases, tmp_path, monkeypatch, full.slice(3, rows - 10))
    assert len(as_binary) == rows - 10
    assert as_binary == as_csv


def test_a_batch_of_another_arrow_type_is_refused_naming_the_column():
    column = Column("order_date", "date", "date")
    batch = pa.RecordBatch.from_pydict({"order_date": pa.array(["2024-01-01"])})
    with pytest.raises(InputError, match="column order_date: the batch holds string"):
        copy_binary.encode(batch, [column])


def test_prefetch_raises_the_producers_error_in_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad row group")

    got = []
    with pytest.raises(ValueError, match="bad row group"):
        for item in arrow_io.prefetched(failing()):
            got.append(item)
    assert got == [1]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = threading.active_count()
    for item in arrow_io.prefetched(endless(), depth=2):
        if item == 5:
            break
    assert threading.active_count() == before
    assert len(produced) <= 5 + 1 + 2 + 1  # the consumed ones, the queue, one in hand


def test_a_warehouse_in_another_encoding_stores_the_characters_not_their_utf8_bytes(
        databases, tmp_path, monkeypatch):
    with databases.source(autocommit=True) as src:
        src.execute("CREATE TABLE latin (id integer PRIMARY KEY, t text, v varchar(8));"
                    "INSERT INTO latin VALUES (1, 'Bólido Comidas, Königlich Essen', 'ñandú'),"
                    " (2, NULL, '')")
        warehouse_db = databases.env["WAREHOUSE_PGDATABASE"] + "_latin1"
        src.execute(sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                            "TEMPLATE template0").format(sql.Identifier(warehouse_db)))
    databases.env["WAREHOUSE_PGDATABASE"] = warehouse_db
    # The hash digest hashes text as UTF-8 bytes: a warehouse in another encoding needs the text
    # method at the extract (without it the load fails in one line saying so).
    monkeypatch.setenv("NORTHWIND_DIGEST_METHOD", "text")  # the extract runs in this process
    extract_and_load(databases, ["latin"], tmp_path)
    with databases.source() as src, databases.warehouse() as wh:
        assert wh.execute("SHOW server_encoding").fetchone() == ("LATIN1",)
        assert as_text(wh, "snapshots", "latin") == as_text(src, "public", "latin")
        # Stored as LATIN1: one byte per character.
        assert wh.execute("SELECT octet_length(v) FROM snapshots.latin WHERE id = 1").fetchone() \
            == (5,)

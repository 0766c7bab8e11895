"""The report's JSON built from its CSV equals the server's ``row_to_json``, byte for byte.

Every comparison is against the real server: the same rows through ``COPY ... (FORMAT csv)`` then
northwind_elt.report_json, and through ``COPY (SELECT row_to_json(r) ...)`` (the report's other
path). Values without a plain JSON form make the converter step aside, and the report falls back.
"""

import datetime as dt
import threading
import time

import pytest
from northwind_elt import report_json
from northwind_elt.report import (
    _VERBATIM_CSV,
    CSV_NAME,
    JSON_NAME,
    copy_json_array,
    copy_to_file,
    csv_then_json,
    result_columns,
)
from northwind_elt.treefs import LOCAL, GrowingFile, Outbox, Staged
from psycopg import sql

#: Every supported type with its edge values: NaN and infinities, -0, exponents, escapes of every
#: kind, non-ASCII, empty string against NULL, padded character(n), infinite dates.
EDGE_ROWS = sql.SQL(r"""SELECT * FROM (VALUES
 (1::int2, 2::int4, 3::int8, 1.5::real, 'NaN'::real, 'Infinity'::float8, '-0'::float8,
  1e-5::float4, 3.4e38::float4, 'NaN'::numeric, 12345678901234567890.12345::numeric,
  'plain'::text, 'q"uo\te'::varchar, E'ctl\x01\x1f\n\r\t\b\f end'::text, ''::text,
  NULL::text, 'é ü 漢 ,;'::text, 'pad'::char(5), true, '2024-01-02'::date, 'infinity'::date),
 (-32768, NULL, -9223372036854775808, NULL, '-Infinity', NULL, 1e300, NULL, NULL, 'Infinity',
  -0.0, NULL, '', 'x,y', ' ', '"', E'a\\b\u007f', NULL, false, NULL, '-infinity')
) AS t("i2", "i4", "i8", "re", "rn", "dinf", "dz", "small", "big", "nn", "num", "t1", "v", "ctl",
       "empty", "nul", "uni", "bp", "bo", "d", "dinf2")""")


def both_ways(conn, query, folder):
    """The JSON of ``query`` from its CSV (None if refused) and from the server."""
    cur, outbox = conn.cursor(), Outbox(LOCAL, folder)
    names, types = result_columns(cur, query)
    assert report_json.supported(types)
    copy_to_file(cur, sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query), outbox,
                 "rows.csv")
    ours = report_json.write_json_from_csv(folder / "rows.csv", names, types, folder / "ours.json")
    copy_json_array(cur, sql.SQL("COPY (SELECT row_to_json(r) FROM ({}) AS r) TO STDOUT ({})")
                    .format(query, _VERBATIM_CSV), outbox, "server.json")
    return ours, (folder / "ours.json").read_bytes(), (folder / "server.json").read_bytes()


def test_edge_values_give_the_servers_bytes(databases, tmp_path):
    with databases.warehouse(autocommit=True) as conn:
        rows, ours, server = both_ways(conn, EDGE_ROWS, tmp_path)

    assert rows == 2
    assert ours == server


def test_many_batches_and_no_rows_give_the_servers_bytes(databases, tmp_path, monkeypatch):
    monkeypatch.setattr(report_json, "BLOCK_SIZE", 4096)  # dozens of batches
    many = sql.SQL("SELECT g::int4 AS n, repeat(chr(65 + g % 26), g % 50) AS s, "
                   "CASE WHEN g % 7 = 0 THEN NULL ELSE g / 3.0 END AS x FROM generate_series(1, 5000) g")
    none = sql.SQL("SELECT 1::int4 AS n WHERE false")
    with databases.warehouse(autocommit=True) as conn:
        rows, ours, server = both_ways(conn, many, tmp_path)
        assert (rows, ours) == (5000, server)
        rows, ours, server = both_ways(conn, none, tmp_path)
        assert (rows, ours) == (0, server) and ours == b"[\n]\n"


@pytest.mark.parametrize("value", ["'0044-03-15 BC'::date", "'10000-01-01'::date"])
def test_a_date_without_its_plain_form_makes_it_step_aside(databases, tmp_path, value):
    query = sql.SQL(f"SELECT 1::int4 AS n, {value} AS d")  # noqa: S608 - fixed test literals
    with databases.warehouse(autocommit=True) as conn:
        rows, _, _ = both_ways(conn, query, tmp_path)

    assert rows is None


def test_unsupported_types_are_left_to_the_server(databases):
    query = sql.SQL("SELECT now()::timestamp AS t, ARRAY[1] AS a, '{}'::jsonb AS j")
    with databases.warehouse(autocommit=True) as conn:
        _, types = result_columns(conn.cursor(), query)

    assert not report_json.supported(types)


def test_the_json_follows_the_csv_while_it_is_written_and_falls_back_when_refused(databases, tmp_path):
    followed, refused = tmp_path / "followed", tmp_path / "refused"
    with databases.warehouse() as conn, conn.transaction():
        cur = conn.cursor()
        names, types = result_columns(cur, EDGE_ROWS)
        copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(EDGE_ROWS)
        rows = csv_then_json(cur, copy, names, types, Outbox(LOCAL, followed))
        assert rows == 2
        ours = (followed / JSON_NAME).read_bytes()
        (tmp_path / "server").mkdir()
        _, _, server = both_ways(conn, EDGE_ROWS, tmp_path / "server")
        assert ours == server

        bc = sql.SQL("SELECT '0044-03-15 BC'::date AS d")
        names, types = result_columns(cur, bc)
        copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(bc)
        outbox = Outbox(LOCAL, refused)
        assert csv_then_json(cur, copy, names, types, outbox) is None
        assert [p.name for p in refused.iterdir()] == [CSV_NAME]  # no JSON, no temporary file
        assert outbox.published == [CSV_NAME]


def test_the_json_is_only_appended_to(databases, tmp_path, monkeypatch):
    """Each batch is written once and never rewritten (an upload may follow the file)."""
    monkeypatch.setattr(report_json, "BLOCK_SIZE", 4096)
    many = sql.SQL("SELECT g::int4 AS n, repeat('x', g % 40) AS s FROM generate_series(1, 3000) g")
    with databases.warehouse(autocommit=True) as conn:
        cur = conn.cursor()
        names, types = result_columns(cur, many)
        copy_to_file(cur, sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(many),
                     Outbox(LOCAL, tmp_path), "rows.csv")
    json_path, seen = tmp_path / "rows.json", []
    rows = report_json.write_json_from_csv(tmp_path / "rows.csv", names, types, json_path,
                                           wrote=lambda: seen.append(json_path.read_bytes()))

    assert rows == 3000 and len(seen) > 10
    for earlier, later in zip(seen, [*seen[1:], json_path.read_bytes()], strict=True):
        assert later.startswith(earlier)


def test_a_growing_file_waits_for_its_writer_and_ends_when_finished(tmp_path):
    staged = Staged(tmp_path / "g.bin")
    staged.path.write_bytes(b"")
    growing = GrowingFile(staged)
    read = []
    reader = threading.Thread(target=lambda: read.append(growing.read()))
    reader.start()
    with open(staged.path, "ab") as out:
        for part in (b"first,", b"second"):
            time.sleep(0.2)
            out.write(part)
            out.flush()
            staged.grew()
    assert reader.is_alive()  # still waiting: the writer has not finished
    staged.finish()
    reader.join(5)

    assert read == [b"first,second"]
    growing.close()


def test_a_growing_file_ends_at_once_when_its_writer_abandons_it(tmp_path):
    staged = Staged(tmp_path / "g.bin")
    staged.path.write_bytes(b"partial")
    with GrowingFile(staged) as growing:
        assert growing.read(4) == b"part"  # a whole buffer is there: no wait
        reader = threading.Thread(target=growing.read, args=(100,))
        reader.start()
        time.sleep(0.2)
        assert reader.is_alive()
        staged.abandon()
        reader.join(5)
        assert not reader.is_alive()


def test_the_report_of_a_day_uses_it(databases, tmp_path, monkeypatch):
    """write_report takes this path for the Northwind columns (the pipeline tests compare bytes)."""
    from northwind_elt import report

    calls = []
    real = report.csv_then_json
    monkeypatch.setattr(report, "csv_then_json", lambda *a: calls.append(a) or real(*a))
    with databases.warehouse() as conn:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA snapshots")
        cur.execute("CREATE TABLE snapshots.orders (order_id int4, snapshot_date date, note text)")
        cur.execute("CREATE TABLE snapshots.order_details (order_id int4, snapshot_date date, "
                    "qty int2)")
        cur.execute("INSERT INTO snapshots.orders VALUES (1, '2024-01-02', 'a\"b')")
        cur.execute("INSERT INTO snapshots.order_details VALUES (1, '2024-01-02', 3)")
        conn.commit()
        monkeypatch.setattr(report, "loaded_days", lambda cur: {dt.date(2024, 1, 2)})
        rows = report.write_report(conn, dt.date(2024, 1, 2), tmp_path)

    assert rows == 1 and len(calls) == 1
    assert (tmp_path / "orders_with_details.json").read_text() == (
        '[\n{"order_id":1,"note":"a\\"b","qty":3}\n]\n')

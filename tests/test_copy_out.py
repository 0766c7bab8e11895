"""copy_out: the same bytes as psycopg's COPY, the server's errors as psycopg's, a usable connection after."""

from __future__ import annotations

import io
import threading
import time

import psycopg
import pytest
from northwind_elt.copy_out import copy_out
from psycopg import errors, sql

ROWS = 20_000
QUERY = sql.SQL("COPY (SELECT g, 'x,' || g, g / 7.0, NULL::text FROM generate_series(1, {}) g) "
                "TO STDOUT (FORMAT csv, HEADER)").format(sql.Literal(ROWS))


def psycopg_copy(cur: psycopg.Cursor, statement: sql.Composable) -> tuple[bytes, int]:
    out, rows = io.BytesIO(), 0
    with cur.copy(statement) as copy:
        for chunk in copy:
            out.write(chunk)
            rows += 1
    return out.getvalue(), rows


def test_same_bytes_and_rows_as_psycopg(databases):
    with databases.source() as conn, conn.cursor() as cur:
        expected, expected_rows = psycopg_copy(cur, QUERY)
        out, marks = io.BytesIO(), []
        rows = copy_out(cur, QUERY, out.write, every=4096, each=marks.append)
        assert (out.getvalue(), rows) == (expected, expected_rows) == (expected, ROWS + 1)
        assert marks == list(range(4096, ROWS + 2, 4096))
        assert cur.execute("SELECT 42").fetchone() == (42,)  # the connection goes on


def test_error_at_start_is_psycopgs_and_rolls_back(databases):
    with databases.source() as conn, conn.cursor() as cur:
        with pytest.raises(errors.UndefinedTable, match="no_such_table"):
            copy_out(cur, sql.SQL("COPY (SELECT * FROM no_such_table) TO STDOUT"), print)
        conn.rollback()
        assert cur.execute("SELECT 1").fetchone() == (1,)


def test_error_in_the_middle_is_raised_after_the_rows_sent(databases):
    statement = sql.SQL("COPY (SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g) "
                        "TO STDOUT")
    with databases.source() as conn, conn.cursor() as cur:
        got = []
        with pytest.raises(errors.DivisionByZero):
            copy_out(cur, statement, got.append)
        assert 0 < len(got) < 5000
        conn.rollback()
        assert cur.execute("SELECT 2").fetchone() == (2,)


def test_a_failing_writer_stops_the_copy_and_leaves_the_connection_usable(databases):
    def full_disk(_chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    with databases.source() as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE kept (n int)")
        conn.commit()
        with pytest.raises(OSError, match="No space"):
            copy_out(cur, QUERY, full_disk)
        conn.rollback()
        cur.execute("INSERT INTO kept VALUES (1)")
        conn.commit()
        assert cur.execute("SELECT count(*) FROM kept").fetchone() == (1,)


def test_waiting_for_the_server_leaves_other_threads_running(databases):
    # The report's JSON thread follows the CSV while the COPY waits for rows: a wait that held
    # the GIL would stop it (the report took 10% longer so).
    slow = sql.SQL("COPY (SELECT g, pg_sleep(0.02) FROM generate_series(1, 40) g) TO STDOUT")
    stop, counted = threading.Event(), []

    def count() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            time.sleep(0.001)
        counted.append(n)

    with databases.source() as conn, conn.cursor() as cur:
        counter = threading.Thread(target=count)
        counter.start()
        started = time.perf_counter()
        assert copy_out(cur, slow, lambda _row: None) == 40
        elapsed = time.perf_counter() - started
        stop.set()
        counter.join()
    # About one tick per 1.1 ms while the COPY waits 0.8 s; none if the wait held the GIL.
    assert counted[0] > 0.25 * elapsed / 0.0011

"""``COPY ... TO STDOUT`` into a file at libpq's speed: one row per call, no Python layer between.

psycopg's ``Copy`` iterator costs about 0.9 us of the client's CPU per row (its generator and
waiting machinery), as much as the server's text output of a narrow row: the report's 2.15M rows
took 1.9 CPU-s through it and 0.9 CPU-s through this loop over ``PQgetCopyData`` (the same bytes;
docs/benchmark.md). The connection stays psycopg's: its lock is held while the COPY runs, errors
are psycopg's own exceptions, and a failure in the middle (a full disk) cancels the COPY and drains
it, so the transaction can still roll back.
"""

from __future__ import annotations

import select
from collections.abc import Callable

import psycopg
from psycopg import errors, pq, sql


def copy_out(cur: psycopg.Cursor, statement: sql.Composable, write: Callable[[bytes], object],
             every: int = 0, each: Callable[[int], object] | None = None) -> int:
    """Run ``statement`` (a ``COPY ... TO STDOUT``), pass each row to ``write``; return the rows.

    Args:
        cur: A cursor of the connection to run it on (its transaction, if any, is used).
        statement: The COPY statement.
        write: Called with each row's bytes (a buffer valid until the call returns).
        every: When > 0, ``each(rows)`` is called after every ``every`` rows.
        each: See ``every``.

    Raises:
        psycopg.Error: The server's error (at the start or in the middle of the COPY).
    """
    conn = cur.connection
    pgconn = conn.pgconn
    with conn.lock:  # no other thread may use the connection while it is in COPY state
        pgconn.send_query(statement.as_bytes(conn))
        while pgconn.flush():  # a non-blocking connection may hold part of the query
            select.select([], [pgconn.socket], [])
        started = _next_result(pgconn)
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            _drain(pgconn)
            raise _error(started, conn)
        rows = 0
        get, socket = pgconn.get_copy_data, pgconn.socket
        try:
            while True:
                # Without waiting: a blocking call would wait for the server holding the GIL,
                # starving the threads that follow the file (the report's JSON).
                size, data = get(1)
                if size > 0:
                    write(data)
                    rows += 1
                    if every and rows % every == 0:
                        each(rows)
                elif size == 0:  # nothing buffered: wait for the socket, the GIL released
                    select.select([socket], [], [])
                    pgconn.consume_input()
                else:  # the end of the rows (an error raises)
                    break
        except BaseException:
            _abandon(conn, pgconn)
            raise
        finished = _next_result(pgconn)
        _drain(pgconn)
        if finished is None or finished.status != pq.ExecStatus.COMMAND_OK:
            raise _error(finished, conn)
    return rows


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """The next result, waited for on the socket: ``PQgetResult`` would wait holding the GIL."""
    while pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    return pgconn.get_result()


def _error(result: pq.abc.PGresult | None, conn: psycopg.Connection) -> psycopg.Error:
    """The psycopg exception of a failed ``result``."""
    if result is None:
        return psycopg.OperationalError("the server returned no result for the COPY")
    return errors.error_from_result(result, encoding=conn.info.encoding)


def _drain(pgconn: pq.abc.PGconn) -> None:
    """Read the results left, so the connection accepts the next command."""
    while pgconn.get_result() is not None:
        pass


def _abandon(conn: psycopg.Connection, pgconn: pq.abc.PGconn) -> None:
    """Stop a COPY cut short on our side: cancel it on the server, read what it still sends."""
    try:
        conn.cancel_safe()
        while pgconn.get_copy_data(0)[0] >= 0:
            pass
    except psycopg.Error:
        pass  # the cancel's error ends the COPY: expected
    _drain(pgconn)

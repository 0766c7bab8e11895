"""The evidence of a load: orders joined with their details, for one day, as CSV and JSON.

It reads the day's snapshots (not the current views), so the evidence for day D reflects D's files
even after a later day was loaded: the day's partition where the warehouse keeps it, else the
history as of the day (``history."<table>"(day)``, the same rows and types), so the evidence is the
same bytes whatever ``NORTHWIND_KEEP_DAYS`` kept. It also reads, in the same snapshot, which
load of the day it reports (``northwind.loads``: the load's id and ``loaded_at``), so its marker can name it.
"""

import concurrent.futures
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import psycopg
import pyarrow as pa
from psycopg import sql

from northwind_elt import faults, report_json
from northwind_elt.copy_out import copy_out
from northwind_elt.errors import PrerequisiteError
from northwind_elt.history_sql import day_relation
from northwind_elt.layout import REPORT_CSV, REPORT_JSON
from northwind_elt.treefs import LOCAL, GrowingFile, Outbox, Staged
from northwind_elt.warehouse import (
    SNAPSHOT_DATE,
    existing_columns,
    loaded_days,
    loads_table,
)

#: The evidence's names, from the layout (the one place for paths).
CSV_NAME, JSON_NAME = REPORT_CSV, REPORT_JSON
ORDERS, DETAILS, JOIN_KEY = "orders", "order_details", "order_id"


def report_query(cur: psycopg.Cursor, day: dt.date) -> sql.Composed:
    """Every order column, then every detail column but the join key, for ``day``, in key order."""
    orders = [c for c in existing_columns(cur, ORDERS) if c != SNAPSHOT_DATE]
    details = [c for c in existing_columns(cur, DETAILS) if c not in (SNAPSHOT_DATE, JOIN_KEY)]
    missing = [t for t, cols in ((ORDERS, orders), (DETAILS, details)) if not cols]
    if missing:
        raise PrerequisiteError(f"the warehouse has no snapshots.{' or snapshots.'.join(missing)}")
    selected = [sql.SQL("o.{}").format(sql.Identifier(c)) for c in orders]
    selected += [sql.SQL("d.{}").format(sql.Identifier(c)) for c in details]
    order_by = [sql.SQL("o.{}").format(sql.Identifier(JOIN_KEY))]
    order_by += [sql.SQL("d.{}").format(sql.Identifier(c)) for c in details]
    return sql.SQL(
        "SELECT {columns} FROM {orders} AS o JOIN {details} AS d "
        "ON d.{key} = o.{key} AND d.{day} = o.{day} WHERE o.{day} = {value} ORDER BY {order}"
    ).format(columns=sql.SQL(", ").join(selected), orders=day_relation(cur, ORDERS, day),
             details=day_relation(cur, DETAILS, day), key=sql.Identifier(JOIN_KEY),
             day=sql.Identifier(SNAPSHOT_DATE), value=sql.Literal(day),
             order=sql.SQL(", ").join(order_by))


#: COPY options that pass ``row_to_json`` text through unchanged: JSON text never holds these raw
#: control bytes (it escapes them), so no field is ever quoted and nothing is escaped.
_VERBATIM_CSV = sql.SQL("FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02'")


def load_of(cur: psycopg.Cursor, day: dt.date) -> dict[str, str | None]:
    """Which load of ``day`` the warehouse holds: its id and ``loaded_at`` (ISO), from its log.

    Every load of this version records its id (``attempt``); the report runs only after one.
    """
    cur.execute(sql.SQL("SELECT attempt, loaded_at FROM {} WHERE snapshot_date = %s").format(
        loads_table()), (day,))
    found = cur.fetchone()
    if found is None:
        return {"attempt": None, "loaded_at": None}
    return {"attempt": found[0], "loaded_at": found[1].isoformat()}


def write_report(conn: psycopg.Connection, day: dt.date, folder: Path | Outbox,
                 second: psycopg.Connection | None = None,
                 load: dict[str, str | None] | None = None) -> int:
    """Write ``orders_with_details.csv`` and ``.json`` for ``day`` into ``folder``; return the rows.

    The CSV streams from the server's ``COPY``; it has a header; NULL is an empty field, an empty
    string is ``""``. The JSON is one array of ``row_to_json`` objects (NULL is ``null``), one
    object per line, in the same order: ``[``, the objects separated by ``,`` at line ends, ``]``.
    When every column has a plain JSON form (:mod:`northwind_elt.report_json`) the JSON is built
    from the CSV just written, for less than the server's rendering costs (docs/benchmark.md,
    "Figures behind the code"); otherwise the server's ``COPY`` of ``row_to_json`` writes it, in
    the same snapshot. Each file is published whole once written
    (:class:`~northwind_elt.treefs.Outbox`: renamed into place, or uploaded as it is written).

    Args:
        conn: A connection to the warehouse, not in a transaction.
        day: The loaded day to report.
        folder: Where the two files go: a local folder, or an outbox (of any backend).
        second: Another connection to the same warehouse, not in a transaction: when the
            server renders the JSON, it does so on this one at the same time as the CSV, in the
            same snapshot (the query runs on two server processes).
        load: When given, filled with the load the evidence reports (:func:`load_of`).

    Returns:
        The rows of the report.
    """
    outbox = folder if isinstance(folder, Outbox) else Outbox(LOCAL, folder)
    # One snapshot for both files (and, with ``second``, for both connections).
    for connection in (conn, second) if second is not None else (conn,):
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with conn.transaction(), conn.cursor() as cur:
        if day not in loaded_days(cur):
            raise PrerequisiteError(f"the warehouse has no snapshot of {day}: run load-warehouse "
                                    "for that day first")
        if load is not None:
            load.update(load_of(cur, day))
        query = report_query(cur, day)
        csv_copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)
        json_copy = sql.SQL("COPY (SELECT row_to_json(r) FROM ({}) AS r) TO STDOUT ({})").format(
            query, _VERBATIM_CSV)
        names, types = result_columns(cur, query)
        if report_json.supported(types) and _plain_session(conn):
            rows = csv_then_json(cur, csv_copy, names, types, outbox)
            if rows is not None:
                return rows
            # A value without a plain JSON form (a BC date...): the server renders every row.
            return copy_json_array(cur, json_copy, outbox, JSON_NAME)
        if second is None:
            copy_to_file(cur, csv_copy, outbox, CSV_NAME)
            return copy_json_array(cur, json_copy, outbox, JSON_NAME)
        (snapshot,) = cur.execute("SELECT pg_export_snapshot()").fetchone()
        with second.transaction(), second.cursor() as other, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            csv_done = pool.submit(copy_to_file, cur, csv_copy, outbox, CSV_NAME)
            rows = copy_json_array(other, json_copy, outbox, JSON_NAME)
            csv_done.result()
        return rows


def result_columns(cur: psycopg.Cursor, query: sql.Composable) -> tuple[list[str], list[int]]:
    """The names and type OIDs of the columns ``query`` returns (planned, not run)."""
    cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query))
    return [c.name for c in cur.description], [c.type_code for c in cur.description]


def _plain_session(conn: psycopg.Connection) -> bool:
    """Whether the session writes text as report_json expects: UTF-8, ISO dates."""
    date_style = conn.info.parameter_status("DateStyle") or ""
    return conn.info.encoding == "utf-8" and date_style.startswith("ISO")


def csv_then_json(cur: psycopg.Cursor, csv_copy: sql.Composable, names: list[str],
                  types: list[int], outbox: Outbox) -> int | None:
    """Write the CSV from the server and, as its bytes arrive, the JSON from it; publish both.

    The JSON is built in a second thread that reads the CSV file while the COPY still writes it
    (Arrow's kernels release the interpreter lock), so the two overlap on two cores. Returns the
    rows, or None, with only the CSV published, when a value has no plain JSON form.
    """
    converted: concurrent.futures.Future | None = None
    with outbox.file(JSON_NAME) as json_file:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:

            def started(csv_file: Staged) -> None:
                nonlocal converted
                # Opened here, not in the thread: a short CSV may be published before it runs.
                growing = GrowingFile(csv_file)
                converted = pool.submit(_json_from, growing, names, types, json_file)

            copy_to_file(cur, csv_copy, outbox, CSV_NAME, started=started)
        try:
            rows = converted.result()
        except pa.ArrowInvalid:
            rows = None  # text Arrow could not read as expected: the server writes the JSON
        if rows is None:
            json_file.abandon()
    return rows


def _json_from(csv: GrowingFile, names: list[str], types: list[int], json_file: Staged
               ) -> int | None:
    """Write the JSON of the CSV that ``csv`` follows into ``json_file``; close ``csv``."""
    with csv:
        return report_json.write_json_from_csv(csv, names, types, json_file.path,
                                               wrote=json_file.grew)


#: How often (rows) a COPY into a file hands what it wrote to the threads that follow the file.
FOLLOW_ROWS = 8192


def copy_to_file(cur: psycopg.Cursor, statement: sql.Composable, outbox: Outbox, name: str,
                 started: Callable[[Staged], None] | None = None) -> int:
    """Stream a ``COPY ... TO STDOUT`` into the file ``name`` of ``outbox``; return the rows.

    Args:
        cur: The cursor the COPY runs on.
        statement: The ``COPY ... TO STDOUT``.
        outbox: Where the file is published, once whole.
        name: The file's name.
        started: Called with the staged file once it exists, to follow it as it grows.
    """
    with outbox.file(name) as staged:
        with open(staged.path, "wb") as out:
            if started is not None:
                started(staged)
            rows = copy_out(cur, statement, out.write, FOLLOW_ROWS,
                            lambda _rows: _hand_over(out, staged))
    faults.point("between-evidence-files")
    return rows


def copy_json_array(cur: psycopg.Cursor, statement: sql.Composable, outbox: Outbox, name: str
                    ) -> int:
    """Stream a COPY of one JSON object per line into the file ``name`` as a JSON array.

    The server sends one row per chunk; each is written once the next one shows it is not the
    last (which ends without a comma). Returns the rows.
    """
    with outbox.file(name) as staged:
        with open(staged.path, "wb") as out:
            out.write(b"[\n")
            previous = b""

            def write(chunk: bytes) -> None:
                nonlocal previous
                if previous:
                    out.write(previous[:-1])
                    out.write(b",\n")
                previous = bytes(chunk)

            rows = copy_out(cur, statement, write, FOLLOW_ROWS,
                            lambda _rows: _hand_over(out, staged))
            out.write(previous)
            out.write(b"]\n")
    return rows


def _hand_over(out: BinaryIO, staged: Staged) -> None:
    """Flush ``out`` and tell the threads that follow the file (every :data:`FOLLOW_ROWS` rows)."""
    out.flush()
    staged.grew()

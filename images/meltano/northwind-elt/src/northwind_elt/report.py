"""The evidence of a load: orders joined with their details, for one day, as CSV and JSON.

It reads the day's snapshots (not the current views), so the evidence for day D reflects D's files
even after a later day was loaded.
"""

import concurrent.futures
import datetime as dt
from pathlib import Path

import psycopg
from psycopg import sql

from northwind_elt import atomic
from northwind_elt.errors import PrerequisiteError
from northwind_elt.warehouse import SNAPSHOT_DATE, existing_columns, loaded_days, snapshot_table

REPORT_NAME = "orders_with_details"
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
    ).format(columns=sql.SQL(", ").join(selected), orders=snapshot_table(ORDERS),
             details=snapshot_table(DETAILS), key=sql.Identifier(JOIN_KEY),
             day=sql.Identifier(SNAPSHOT_DATE), value=sql.Literal(day),
             order=sql.SQL(", ").join(order_by))


#: COPY options that pass ``row_to_json`` text through unchanged: JSON text never holds these raw
#: control bytes (it escapes them), so no field is ever quoted and nothing is escaped.
_VERBATIM_CSV = sql.SQL("FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02'")


def write_report(conn: psycopg.Connection, day: dt.date, folder: Path,
                 second: psycopg.Connection | None = None) -> int:
    """Write ``orders_with_details.csv`` and ``.json`` for ``day`` into ``folder``; return the rows.

    Both files stream from the server's ``COPY`` and are written under temporary names, then
    renamed into place. The CSV has a header; NULL is an empty field, an empty string is ``""``.
    The JSON is one array of ``row_to_json`` objects (NULL is ``null``), one object per line, in
    the same order: ``[``, the objects separated by ``,`` at line ends, ``]``.

    Args:
        conn: A connection to the warehouse, not in a transaction.
        day: The loaded day to report.
        folder: Where the two files go.
        second: Another connection to the same warehouse, not in a transaction: when given, the
            JSON is written on it at the same time as the CSV, in the same snapshot (the query
            runs on two server processes).

    Returns:
        The rows of the report.
    """
    # One snapshot for both files (and, with ``second``, for both connections).
    for connection in (conn, second) if second is not None else (conn,):
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with conn.transaction(), conn.cursor() as cur:
        if day not in loaded_days(cur):
            raise PrerequisiteError(f"the warehouse has no snapshot of {day}: run load-warehouse "
                                    "for that day first")
        query = report_query(cur, day)
        csv_path, json_path = folder / f"{REPORT_NAME}.csv", folder / f"{REPORT_NAME}.json"
        csv_copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)
        json_copy = sql.SQL("COPY (SELECT row_to_json(r) FROM ({}) AS r) TO STDOUT ({})").format(
            query, _VERBATIM_CSV)
        if second is None:
            copy_to_file(cur, csv_copy, csv_path)
            return copy_json_array(cur, json_copy, json_path)
        (snapshot,) = cur.execute("SELECT pg_export_snapshot()").fetchone()
        with second.transaction(), second.cursor() as other, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            csv_done = pool.submit(copy_to_file, cur, csv_copy, csv_path)
            rows = copy_json_array(other, json_copy, json_path)
            csv_done.result()
        return rows


def copy_to_file(cur: psycopg.Cursor, statement: sql.Composable, path: Path) -> int:
    """Stream a ``COPY ... TO STDOUT`` into ``path`` atomically; return the chunks (rows) read."""
    rows = 0
    with atomic.temporary_beside(path) as temporary:
        with open(temporary, "wb") as out, cur.copy(statement) as copy:
            for chunk in copy:
                out.write(chunk)
                rows += 1
        atomic.publish(temporary, path)
    return rows


def copy_json_array(cur: psycopg.Cursor, statement: sql.Composable, path: Path) -> int:
    """Stream a COPY of one JSON object per line into ``path`` as a JSON array; return the rows.

    The server sends one row per chunk; each is written once the next one shows it is not the
    last (which ends without a comma).
    """
    rows = 0
    with atomic.temporary_beside(path) as temporary:
        with open(temporary, "wb") as out, cur.copy(statement) as copy:
            out.write(b"[\n")
            previous = b""
            for chunk in copy:
                if previous:
                    out.write(previous[:-1])
                    out.write(b",\n")
                previous = bytes(chunk)
                rows += 1
            out.write(previous)
            out.write(b"]\n")
        atomic.publish(temporary, path)
    return rows

"""The tap's connections: one snapshot of the source, read by the catalog and by the data path.

The catalog is read with psycopg inside a REPEATABLE READ transaction whose snapshot is exported;
the data path (ADBC: ``COPY ... (FORMAT binary)`` decoded into Arrow in C++) imports that snapshot.
Every table is therefore read at the same instant (foreign keys hold between the files of a day)
even while the source is being written to.
"""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg
from northwind_elt import pgconn
from northwind_elt.errors import SettingError
from psycopg.conninfo import make_conninfo

# Make the text form of every non-native value (cast to text for transfer) unambiguous.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}


def open_snapshot(config: Mapping[str, Any]) -> tuple[psycopg.Connection, str]:
    """Connect to the source, start a read-only REPEATABLE READ transaction, export its snapshot."""
    conn = pgconn.connect(config, "source")
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
    return conn, snapshot


@contextlib.contextmanager
def data_connection(config: Mapping[str, Any], snapshot: str, row_security: bool = False
                    ) -> Iterator[adbc.Connection]:
    """An ADBC connection reading in ``snapshot`` (the catalog's), closed at the end.

    Unless ``row_security`` (the user's opt-in), ``row_security=off`` makes the server fail a
    read that row-level security would filter, as pg_dump does, instead of returning less.
    """
    kwargs = pgconn.connection_kwargs(config, "source")
    settings = {**SESSION_SETTINGS, "row_security": "on" if row_security else "off"}
    options = " ".join(f"-c {name}={value.replace(' ', '')}" for name, value in settings.items())
    conninfo = make_conninfo(**kwargs, options=options)
    try:
        conn = adbc.connect(conninfo, autocommit=True)
    except adbc_driver_manager.Error as error:
        raise SettingError(f"cannot connect to the source database {pgconn.describe(kwargs)}: "
                           f"{str(error).splitlines()[0]}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # noqa: S608 (server-made id)
        yield conn
    finally:
        conn.close()

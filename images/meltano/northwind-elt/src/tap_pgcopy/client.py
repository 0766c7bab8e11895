"""The tap's connections: one snapshot of the source, read by the catalog and by the data path.

The catalog is read with psycopg inside a REPEATABLE READ transaction whose snapshot is exported;
the data path (ADBC: ``COPY ... (FORMAT binary)`` decoded into Arrow in C++) imports that snapshot.
Every table is therefore read at the same instant (foreign keys hold between the files of a day)
even while the source is being written to.
"""

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg
from northwind_elt import digest_hash, pgconn
from northwind_elt.content_digest import (
    METHOD,
    TEXT_SETTINGS,
    source_expression,
    source_method,
    table_digest,
)
from northwind_elt.errors import InputError, SettingError
from northwind_elt.pgtypes import Column
from psycopg import sql
from psycopg.conninfo import make_conninfo

# Make the text form of every non-native value (cast to text for transfer) unambiguous: the
# settings the content digest renders values with, so both read the same text.
SESSION_SETTINGS = {**TEXT_SETTINGS, "client_encoding": "UTF8"}

# Where the snapshot stands in the source's history. A standby has no current WAL position of its
# own: the position it has replayed is the one its snapshot sees.
_PROVENANCE = """
SELECT now(), pg_current_snapshot()::text,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END)::text,
       pg_is_in_recovery(), current_setting('server_version'), current_database()
"""


def open_snapshot(config: Mapping[str, Any]) -> tuple[psycopg.Connection, str]:
    """Connect to the source, start a read-only REPEATABLE READ transaction, export its snapshot."""
    conn = pgconn.connect(config, "source")
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
    return conn, snapshot


def snapshot_provenance(conn: psycopg.Connection) -> dict[str, Any]:
    """The source snapshot the extract reads, for every manifest: read at its start."""
    started, snapshot, lsn, standby, version, database = conn.execute(_PROVENANCE).fetchone()
    return {"snapshot_taken_at": started.isoformat(timespec="seconds"), "snapshot": snapshot,
            "wal_lsn": lsn, "standby": standby, "server_version": version, "database": database}


class DigestWorker:
    """Content digests computed on the catalog's connection, in its snapshot, while COPY streams.

    The catalog's connection is idle once the tables are known; its one thread digests each table
    (a second scan on the server) while the data connections copy the tables out. The method is
    chosen once, for every table (:func:`source_method`).
    """

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        with conn.cursor() as cur:
            self.method = source_method(cur)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="digest")
        self.futures: dict[str, Future] = {}

    def submit(self, stream: str, table: sql.Composable, columns: Sequence[Column]) -> None:
        """Queue the digest of ``table`` as stream ``stream``."""
        self.futures[stream] = self.pool.submit(self._digest, stream, table, columns)

    def _digest(self, stream: str, table: sql.Composable, columns: Sequence[Column]) -> dict:
        try:
            # The hash chain nests a call per column: a wide table takes the text method.
            method = self.method if len(columns) <= digest_hash.MAX_COLUMNS else METHOD
            with self.conn.cursor() as cur:
                return table_digest(cur, table, [source_expression(c) for c in columns],
                                    method=method, columns=columns).to_json()
        except psycopg.Error as error:
            raise InputError(f"table {stream}: its content digest failed: "
                             f"{str(error).strip().splitlines()[0]}") from None

    def results(self) -> dict[str, dict]:
        """Every stream's digest (waits for the last ones); the first failure raises."""
        return {stream: future.result() for stream, future in sorted(self.futures.items())}

    def close(self) -> None:
        """Drop the digests not started yet (after a failure) and end the thread."""
        self.pool.shutdown(wait=True, cancel_futures=True)


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

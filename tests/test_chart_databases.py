"""The northwind-databases chart: PostgreSQL StatefulSets, Services, Secrets and the seed Job."""

import base64
import re
import urllib.parse

import helm
import helm_python
import pytest
import sqlalchemy.engine

CHART = "northwind-databases"


@pytest.fixture(scope="module")
def docs():
    return helm.render(CHART)


def _secret_value(secret, key):
    return base64.b64decode(secret["data"][key]).decode()


def test_three_databases_with_persistent_storage(docs):
    names = {d["metadata"]["name"] for d in helm.by_kind(docs, "StatefulSet")}
    assert names == {"northwind-source-db", "northwind-warehouse-db", "northwind-airflow-db"}
    for sts in helm.by_kind(docs, "StatefulSet"):
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        mounts = helm.pod_spec(sts)["containers"][0]["volumeMounts"]
        assert {"name": "data", "mountPath": "/var/lib/postgresql/data"} in mounts


def test_postgres_image_is_pinned_alpine_running_as_postgres(docs):
    for sts in helm.by_kind(docs, "StatefulSet"):
        spec = helm.pod_spec(sts)
        assert re.fullmatch(r"postgres:\d+\.\d+-alpine", spec["containers"][0]["image"])
        assert spec["securityContext"]["runAsUser"] == 70
        assert spec["securityContext"]["fsGroup"] == 70
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_services_select_their_own_statefulset(docs):
    for service in helm.by_kind(docs, "Service"):
        sts = helm.one(docs, "StatefulSet", service["metadata"]["name"])
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert sts["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        assert service["spec"]["ports"][0]["port"] == 5432


def test_generated_secrets_hold_random_credentials(docs):
    first = helm.one(docs, "Secret", "northwind-source-db")
    second = helm.one(helm.render(CHART), "Secret", "northwind-source-db")
    password = _secret_value(first, "password")
    assert len(password) == 32
    assert password != _secret_value(second, "password"), "password is not generated"
    assert _secret_value(first, "username") == "northwind_reader"
    assert _secret_value(first, "uri") == (
        f"postgresql://northwind_reader:{password}@northwind-source-db.northwind.svc:5432/northwind")
    # Uninstalling must not orphan a volume from the password that initialised it.
    assert first["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_each_database_has_a_login_secret_and_a_bootstrap_secret(docs):
    secrets = {d["metadata"]["name"]: d for d in helm.by_kind(docs, "Secret")
               if "namespace" not in d["metadata"] and d["type"] == "Opaque"
               and d["metadata"]["name"] != "northwind-db-ca"}
    assert set(secrets) == {f"northwind-{db}-db{suffix}" for db in ("source", "warehouse", "airflow")
                            for suffix in ("", "-admin")} | {"northwind-warehouse-db-reader",
                                                                 "northwind-source-db-owner"}
    for db in ("source", "warehouse", "airflow"):
        login, admin = secrets[f"northwind-{db}-db"], secrets[f"northwind-{db}-db-admin"]
        assert _secret_value(admin, "username") == "postgres"
        assert _secret_value(login, "username") != "postgres"
        assert _secret_value(login, "password") != _secret_value(admin, "password")
        # The superuser's password is never part of a URI a consumer could be handed.
        assert set(admin["data"]) == {"username", "password"}


def test_airflow_metadata_secret_has_the_connection_key(docs):
    secret = helm.one(docs, "Secret", "northwind-airflow-db")
    assert _secret_value(secret, "connection").startswith(
        "postgresql://airflow:") and "@northwind-airflow-db:5432/airflow" in _secret_value(
        secret, "connection")


def test_servers_bootstrap_as_admin_and_create_the_login_role(docs):
    sts = helm.one(docs, "StatefulSet", "northwind-warehouse-db")
    spec = helm.pod_spec(sts)
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    # Passwords as files: the image reads POSTGRES_PASSWORD_FILE, 00-roles.sh the others.
    assert env["POSTGRES_PASSWORD_FILE"]["value"] == "/etc/postgresql/secrets/admin/password"
    files = {(source["secret"]["name"], item["path"])
             for volume in spec["volumes"] if "projected" in volume
             for source in volume["projected"]["sources"] for item in source["secret"]["items"]}
    assert {("northwind-warehouse-db-admin", "admin/password"), ("northwind-warehouse-db", "app/password"),
            ("northwind-warehouse-db-reader", "reader/password")} == files
    assert env["POSTGRES_DB"]["value"] == "warehouse"
    # No `trust` in initdb's own file either (tests/test_pg_server.py runs the chart's).
    assert env["POSTGRES_INITDB_ARGS"]["value"] == "--auth-local=scram-sha-256 --auth-host=scram-sha-256"
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    config = helm.one(docs, "ConfigMap", volumes[mounts["/docker-entrypoint-initdb.d"]]
                      ["configMap"]["name"])
    # The image runs *.sh and *.sql after initdb; the .psql files only through 00-roles.sh.
    assert set(config["data"]) == {"00-roles.sh", "roles.psql", "server.psql"}
    assert config["data"]["roles.psql"] == (
        helm.chart_dir(CHART) / "files" / "initdb" / "warehouse.sql").read_text()


def test_own_secrets_are_not_rendered_but_read_under_the_same_names():
    docs = helm.render(CHART, helm.alt_values(CHART))
    assert helm.by_kind(docs, "Secret") == []
    sts = helm.one(docs, "StatefulSet", "northwind-source-db")
    env = {e["name"]: e for e in helm.pod_spec(sts)["containers"][0]["env"]}
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"]["name"] == "northwind-source-db-admin"
    assert env["NORTHWIND_APP_USER"]["valueFrom"]["secretKeyRef"]["name"] == "northwind-source-db"
    assert "northwind-airflow-db" not in {d["metadata"]["name"] for d in docs}
    assert helm.by_kind(docs, "Job") == []
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    assert helm.one(docs, "Service", "northwind-source-db")["spec"]["ports"][0]["port"] == 6432


def test_seed_job_runs_northwind_seed_source_after_install_and_upgrade(docs):
    job = helm.by_kind(docs, "Job")[0]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    # NOTES tells users to read its logs: neither success nor a TTL may delete it first.
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert f"logs job/{job['metadata']['name']}" in helm.notes(CHART)
    spec = helm.pod_spec(job)
    container = spec["containers"][0]
    assert container["command"] == ["northwind", "seed-source"]
    assert container["image"] == "northwind-meltano:0.1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["SOURCE_PGHOST"]["value"] == "northwind-source-db"
    assert env["SOURCE_PGDATABASE"]["value"] == "northwind"
    # Seeding creates the tables: the owner role's job (the superuser logs in on the socket only).
    assert env["SOURCE_PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "northwind-source-db-owner"
    # It waits for the server instead of failing while the StatefulSet starts.
    assert "pg_isready" in " ".join(spec["initContainers"][0]["command"])
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_uri_percent_encodes_a_rotated_password(tmp_path):
    # A rotated password, read back from the live Secret on upgrade, with every URI delimiter.
    password = "p@ss:w/rd#1 +%?"
    chart = helm.with_live_objects([helm.live_secret("northwind-airflow-db", password=password)],
                                   tmp_path)
    secret = helm.one(helm.render(CHART, chart=chart), "Secret", "northwind-airflow-db")
    assert _secret_value(secret, "password") == password
    for key in ("uri", "connection"):
        url = sqlalchemy.engine.make_url(_secret_value(secret, key))
        assert (url.username, url.password, url.host, url.port, url.database) == (
            "airflow", password, "northwind-airflow-db", 5432, "airflow")
        parts = urllib.parse.urlsplit(_secret_value(secret, key))
        assert urllib.parse.unquote(parts.password) == password
    # TLS, the server checked by name against the chart's CA (mounted by charts/airflow/values.yaml).
    assert sqlalchemy.engine.make_url(_secret_value(secret, "connection")).query == {
        "sslmode": "verify-full", "sslrootcert": "/etc/northwind/db-ca/ca.crt"}


def test_upgrade_keeps_the_live_passwords(tmp_path):
    chart = helm.with_live_objects([helm.live_secret("northwind-source-db", password="kept"),
                                    helm.live_secret("northwind-source-db-admin",
                                                     password="kept-admin")], tmp_path)
    docs = helm.render(CHART, chart=chart)
    assert _secret_value(helm.one(docs, "Secret", "northwind-source-db"), "password") == "kept"
    admin = helm.one(docs, "Secret", "northwind-source-db-admin")
    assert _secret_value(admin, "password") == "kept-admin"
    # Only the Secret that exists is kept; a missing one is generated.
    assert len(_secret_value(helm.one(docs, "Secret", "northwind-warehouse-db"), "password")) == 32


def _live_source(**login):
    """The live objects of an installed source database (defaults), with ``login`` overrides."""
    keys = {"username": "northwind_reader", "password": "pw",
            "uri": "postgresql://northwind_reader:pw@northwind-source-db:5432/northwind", **login}
    return [helm.live_secret("northwind-source-db", **keys),
            helm.live_secret("northwind-source-db-admin", username="postgres", password="apw"),
            helm.live_statefulset("northwind-source-db")]


def test_upgrade_with_unchanged_values_renders(tmp_path):
    docs = helm.render(CHART, chart=helm.with_live_objects(_live_source(), tmp_path))
    assert _secret_value(helm.one(docs, "Secret", "northwind-source-db"), "password") == "pw"


@pytest.mark.parametrize(("values", "live", "message"), [
    ({"source": {"auth": {"username": "reader2"}}}, {},
     r'source\.auth\.username is "reader2" but the live Secret northwind-source-db says "northwind_reader"'),
    ({"source": {"database": "northwind2"}}, {},
     r'source\.database is "northwind2" but the live Secret northwind-source-db connects to "northwind"'),
    ({"source": {"auth": {"adminUsername": "root2"}}}, {},
     r'source\.auth\.adminUsername is "root2"'),
    ({"source": {"auth": {"secretName": "renamed"}}}, {},
     r"StatefulSet northwind-source-db exists but Secret renamed"),
])
def test_upgrade_that_would_diverge_from_the_live_database_fails(tmp_path, values, live, message):
    chart = helm.with_live_objects(_live_source(**live), tmp_path)
    with pytest.raises(helm_python.HelmRenderError, match=message):
        helm.render(CHART, values, chart=chart)


def test_readiness_logs_in_as_the_login_role(docs):
    # pg_isready answers without a password: a diverged Secret would leave the pod Ready.
    for sts in helm.by_kind(docs, "StatefulSet"):
        probe = " ".join(helm.pod_spec(sts)["containers"][0]["readinessProbe"]["exec"]["command"])
        assert 'PGPASSWORD="$(cat /etc/postgresql/secrets/app/password)" psql -h 127.0.0.1' in probe
        assert '-U "$NORTHWIND_APP_USER"' in probe

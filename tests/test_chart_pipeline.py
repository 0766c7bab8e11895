"""The northwind-pipeline chart: step settings, step ServiceAccount, pod launching, helm test."""

import helm
import pytest

CHART = "northwind-pipeline"


@pytest.fixture(scope="module")
def docs():
    return helm.render(CHART)


def test_step_settings_are_plain_and_complete(docs):
    config = helm.by_kind(docs, "ConfigMap")[0]["data"]
    assert config["MELTANO_DATABASE_URI"].startswith("sqlite:////tmp/")
    assert config["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert config["ORDER_DETAILS_CSV"] == "/project/sources/order_details.csv"
    assert not [key for key in config if "PASSWORD" in key or "USER" in key]


def test_step_service_account_has_no_token(docs):
    account = helm.one(docs, "ServiceAccount", "northwind-step")
    assert account["automountServiceAccountToken"] is False


def test_airflow_may_launch_pods_in_the_namespace(docs):
    role = helm.by_kind(docs, "Role")[0]
    pods = next(r for r in role["rules"] if r["resources"] == ["pods"])
    assert {"create", "get", "list", "watch", "delete"} <= set(pods["verbs"])
    assert any(r["resources"] == ["pods/log"] for r in role["rules"])
    binding = helm.by_kind(docs, "RoleBinding")[0]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {
        ("airflow-scheduler", "northwind"), ("airflow-triggerer", "northwind")}


def test_connection_test_pod_mounts_the_data_claim_and_reads_secrets(docs):
    pod = helm.by_kind(docs, "Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "northwind-data"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["SOURCE_PGPASSWORD"] == {"name": "northwind-source-db", "key": "password"}
    assert env["WAREHOUSE_PGUSER"] == {"name": "northwind-warehouse-db", "key": "username"}


def test_alternative_values_follow_through():
    docs = helm.render(CHART, helm.alt_values(CHART))
    assert helm.by_kind(docs, "Role") == [] and helm.by_kind(docs, "Pod") == []
    config = helm.by_kind(docs, "ConfigMap")[0]["data"]
    assert config["NORTHWIND_IMAGE"] == "registry.example.com/data/northwind-meltano:0.2.0"
    assert config["NORTHWIND_DATA_ROOT"] == "/srv/northwind"
    assert helm.one(docs, "ServiceAccount", "meltano-steps")
    assert "podLauncher.enabled is false" in helm.notes(CHART, helm.alt_values(CHART))

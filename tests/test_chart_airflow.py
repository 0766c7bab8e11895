"""charts/airflow/values.yaml: the values `make up` gives the official apache-airflow chart.

The chart itself cannot be downloaded here, so its documented value keys (chart/values.yaml of
the 1.2x line) are listed below; a typo or a key the chart does not have fails the test.
"""

import base64
import re
import tomllib

import helm
import pytest
import yaml

VALUES_FILE = helm.CHARTS / "airflow" / "values.yaml"

#: Leaf paths of the official chart's values.yaml (1.2x) that our file may set.
CHART_KEYS = {
    "defaultAirflowRepository", "defaultAirflowTag", "airflowVersion", "executor",
    "allowPodLaunching", "env", "secret", "data.metadataSecretName", "postgresql.enabled",
    "redis.enabled", "statsd.enabled", "createUserJob.enabled", "dags.persistence.enabled",
    "dags.persistence.existingClaim", "workers.persistence.enabled",
    "triggerer.persistence.enabled", "apiServer.replicas", "config", "securityContexts.pod",
}


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load(VALUES_FILE.read_text())


def _paths(node, path=()):
    if isinstance(node, dict) and node and ".".join(path) not in CHART_KEYS:
        for key, sub in node.items():
            yield from _paths(sub, (*path, key))
    else:
        yield ".".join(path)


def test_every_key_is_a_documented_chart_value(values):
    assert set(_paths(values)) <= CHART_KEYS


def test_every_key_has_a_comment_above():
    lines = VALUES_FILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_]\w*:", line) and not line.startswith("    "):
            assert lines[number - 1].strip().startswith("#"), line


def test_airflow_version_matches_the_lock(values):
    pyproject = tomllib.loads((helm.ROOT / "pyproject.toml").read_text())
    pins = dict(d.split("==") for d in pyproject["project"]["dependencies"] if "==" in d)
    assert values["airflowVersion"] == values["defaultAirflowTag"] == pins["apache-airflow"]
    assert values["airflowVersion"].startswith("3.")


def test_chart_version_is_pinned_in_the_makefile():
    text = (helm.ROOT / "mk" / "cluster.mk").read_text()
    assert re.search(r"^AIRFLOW_CHART_VERSION := 1\.\d+\.\d+$", text, re.MULTILINE)
    assert "--version $(AIRFLOW_CHART_VERSION) -f charts/airflow/values.yaml" in text


def test_runs_the_dag_with_pods(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    assert env["NORTHWIND_RUNTIME"] == "kubernetes"
    assert values["executor"] == "LocalExecutor"


def test_dag_folder_is_the_claim_of_the_plain_manifest(values):
    assert values["dags"]["persistence"]["enabled"] is True
    claims = [d for d in yaml.safe_load_all((helm.ROOT / "k8s" / "dags-pvc.yaml").read_text())
              if d["kind"] == "PersistentVolumeClaim"]
    assert values["dags"]["persistence"]["existingClaim"] == claims[0]["metadata"]["name"]


def test_metadata_database_comes_from_the_databases_chart(values):
    assert values["postgresql"]["enabled"] is False
    secret = helm.one(helm.render("northwind-databases"), "Secret",
                      values["data"]["metadataSecretName"])
    assert base64.b64decode(secret["data"]["connection"]).decode().startswith("postgresql://")


def test_airflow_gets_no_pipeline_database_credentials(values):
    # No DAG uses a connection id; the step pods carry their own credentials.
    pipeline_secrets = {"northwind-source-db", "northwind-warehouse-db"}
    assert not [item for item in values.get("secret") or []
                if item["secretName"] in pipeline_secrets]
    assert not [item for item in values["env"] if item["name"].startswith("AIRFLOW_CONN_")]


def test_pod_launching_is_granted_once(values):
    # The chart's grant is off, so our chart's Role must be on and bound to the scheduler.
    assert values["allowPodLaunching"] is False
    pipeline = helm.load_values_file(helm.chart_dir("northwind-pipeline") / "values.yaml")
    assert pipeline["podLauncher"]["enabled"] is True


def test_login_has_no_literal_password(values):
    core = values["config"]["core"]
    assert core["auth_manager"].endswith("SimpleAuthManager")
    assert all(user.count(":") == 1 for user in core["simple_auth_manager_users"].split(","))
    assert values["createUserJob"]["enabled"] is False

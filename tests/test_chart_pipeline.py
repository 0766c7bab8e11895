"""The northwind-pipeline chart: step settings, step ServiceAccount, pod launching, helm test."""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import re
import sys
from importlib.metadata import version
from pathlib import Path

import airflow.providers.cncf.kubernetes
import helm
import pytest
from official_chart import render_airflow

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))

CHART = "northwind-pipeline"


@pytest.fixture(scope="module")
def docs():
    return helm.render(CHART)


def test_step_settings_are_plain_and_complete(docs):
    config = helm.by_kind(docs, "ConfigMap")[0]["data"]
    assert config["MELTANO_DATABASE_URI"].startswith("sqlite:///file:")  # read-only, in the image
    assert "mode=ro" in config["MELTANO_DATABASE_URI"]
    assert config["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert config["ORDER_DETAILS_CSV"] == "/project/sources/order_details.csv"
    # Only where the password files are, never a password or user.
    assert not [key for key in config if ("PASSWORD" in key and not key.endswith("PASSWORD_FILE"))
                or "USER" in key]


def test_step_service_account_has_no_token(docs):
    account = helm.one(docs, "ServiceAccount", "northwind-step")
    assert account["automountServiceAccountToken"] is False


#: What each CoreV1Api method of the provider needs: (resource, verb).
API_PERMISSIONS = {
    "create_namespaced_pod": ("pods", "create"),
    "read_namespaced_pod": ("pods", "get"),
    "list_namespaced_pod": ("pods", "list"),
    "patch_namespaced_pod": ("pods", "patch"),
    "delete_namespaced_pod": ("pods", "delete"),
    "read_namespaced_pod_log": ("pods/log", "get"),
    "list_namespaced_event": ("events", "list"),
    "connect_get_namespaced_pod_exec": ("pods/exec", "create"),
}
#: Calls the DAG's configuration never reaches: exec serves do_xcom_push and Istio sidecars only.
UNUSED_CALLS = {"connect_get_namespaced_pod_exec"}
PROVIDER = Path(airflow.providers.cncf.kubernetes.__file__).parent
#: The synchronous (non-deferrable) path of KubernetesPodOperator.
OPERATOR_SOURCES = (PROVIDER / "operators" / "pod.py", PROVIDER / "utils" / "pod_manager.py")


def _operator_permissions() -> set[tuple[str, str]]:
    """(resource, verb) of every CoreV1Api call the operator's synchronous path makes."""
    calls = set()
    for path in OPERATOR_SOURCES:
        calls |= set(re.findall(r"\.(\w+_namespaced_\w+)\b", path.read_text()))
    unknown = calls - set(API_PERMISSIONS)
    assert not unknown, f"the provider calls {sorted(unknown)}: map them in API_PERMISSIONS"
    return {API_PERMISSIONS[call] for call in calls - UNUSED_CALLS}


def _granted(role) -> set[tuple[str, str]]:
    return {(resource, verb) for rule in role["rules"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_launcher_role_grants_exactly_what_the_operator_calls(docs):
    role = helm.by_kind(docs, "Role")[0]
    assert version("apache-airflow-providers-cncf-kubernetes") == "10.25.0"
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert _granted(role) == _operator_permissions()
    assert ("pods/exec", "create") not in _granted(role)


def test_step_pods_need_no_exec():
    # The reason exec is left out: no XCom sidecar, so only Istio would exec, and we have none.
    from northwind.pods import STEPS, step_pod_kwargs

    assert not any(step_pod_kwargs(step).get("do_xcom_push") for step in STEPS)


def test_launcher_is_bound_to_the_scheduler_only(docs):
    role = helm.by_kind(docs, "Role")[0]
    binding = helm.by_kind(docs, "RoleBinding")[0]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", "airflow-scheduler", "northwind")]


def test_connection_test_pod_mounts_the_data_claim_and_reads_secrets(docs):
    pod = helm.by_kind(docs, "Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "northwind-data"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert "SOURCE_PGPASSWORD" not in env  # a file, at the ConfigMap's SOURCE_PGPASSWORD_FILE
    assert volumes["source-password"]["secret"] == {
        "secretName": "northwind-source-db", "items": [{"key": "password", "path": "password"}]}
    assert env["WAREHOUSE_PGUSER"] == {"name": "northwind-warehouse-db", "key": "username"}


def test_alternative_values_follow_through():
    docs = helm.render(CHART, helm.alt_values(CHART))
    assert helm.by_kind(docs, "Role") == [] and helm.by_kind(docs, "Pod") == []
    config = helm.by_kind(docs, "ConfigMap")[0]["data"]
    assert config["NORTHWIND_IMAGE"] == "registry.example.com/data/northwind-meltano:0.2.0"
    assert config["NORTHWIND_DATA_ROOT"] == "/srv/northwind"
    assert helm.one(docs, "ServiceAccount", "meltano-steps")
    assert "podLauncher.enabled is false" in helm.notes(CHART, helm.alt_values(CHART))


def test_launcher_account_runs_the_tasks_in_the_official_chart(docs):
    # LocalExecutor: the scheduler's pod runs every task; the binding must name its account.
    airflow = render_airflow()
    scheduler = helm.pod_spec(helm.one(airflow, "Deployment", "airflow-scheduler"))
    binding = helm.by_kind(docs, "RoleBinding")[0]
    assert [s["name"] for s in binding["subjects"]] == [scheduler["serviceAccountName"]]
    # The chart's own pod-launching grant stays off: ours is the only one.
    launchers = [r for r in helm.by_kind(airflow, "Role")
                 if any("create" in rule["verbs"] and "pods" in rule["resources"]
                        for rule in r["rules"])]
    assert launchers == []

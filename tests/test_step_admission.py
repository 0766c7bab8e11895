"""The step namespace admits step pods only: the rendered ValidatingAdmissionPolicy, run by CEL.

The policy of charts/northwind-pipeline is rendered by real Helm; its variables and validations
are evaluated by a real CEL implementation (common-expression-language) the way the API server
does: variables in order, then every validation, with ``object`` the pod and ``request`` the
admission request (tests/admission_cel.py). The pods are the ones the DAG builds
(render_template_fields + build_pod_request_obj), the `helm test` pod, and hostile variants.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import copy
import sys
from typing import Any

import admission_cel
import helm
import pytest
from dag_support import build_pod, utc_day
from kubernetes.client import ApiClient

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))
from northwind import pods  # noqa: E402
from northwind.cluster import CLUSTER  # noqa: E402

# pathspec, as Airflow calls it for .airflowignore; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

LAUNCHER = f"system:serviceaccount:{CLUSTER.namespace}:airflow-scheduler"
PERSON = "kubernetes-admin"


def policy(values: dict | None = None) -> dict[str, Any]:
    docs = helm.render("northwind-pipeline", values)
    return helm.one(docs, "ValidatingAdmissionPolicy", f"{CLUSTER.step_namespace}-step-pods")


def refusals(policy_doc: dict, pod: dict, *, user: str = LAUNCHER, operation: str = "CREATE") -> list[str]:
    """The messages of the validations ``pod`` fails (empty: admitted)."""
    return admission_cel.refusals(policy_doc, pod, user=user, operation=operation)


def dag_pod(task_id: str, backend: str, monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv(pods.BACKEND_VARIABLE, backend)
    pod = build_pod(task_id, logical_date=utc_day("2024-01-02"))
    return ApiClient().sanitize_for_serialization(pod)


@pytest.fixture(scope="module")
def policies():
    return {"filesystem": policy(), "s3": policy({"data": {"backend": "s3"}})}


def test_policy_and_binding_are_valid_and_bound_to_the_step_namespace():
    docs = helm.render("northwind-pipeline")
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        helm.validate(helm.by_kind(docs, kind)[0])
    binding = helm.by_kind(docs, "ValidatingAdmissionPolicyBinding")[0]["spec"]
    assert binding["validationActions"] == ["Deny"]
    assert binding["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": CLUSTER.step_namespace}
    rules = policy()["spec"]["matchConstraints"]["resourceRules"][0]
    assert set(rules["operations"]) == {"CREATE", "UPDATE"} and "pods" in rules["resources"]


def test_the_launcher_can_create_pods_only_in_the_step_namespace():
    docs = helm.render("northwind-pipeline")
    for kind in ("Role", "RoleBinding"):
        assert {d["metadata"].get("namespace") for d in helm.by_kind(docs, kind)} == {CLUSTER.step_namespace}
    step_pod = pods.step_pod_kwargs(pods.EXTRACT_POSTGRES)
    assert step_pod["namespace"] == CLUSTER.step_namespace != CLUSTER.namespace


def test_the_step_namespace_holds_no_admin_and_no_airflow_secret():
    docs = [*helm.render("northwind-databases"), *helm.render("northwind-pipeline"),
            *helm.render("northwind-objectstore")]
    there = {d["metadata"]["name"] for d in helm.by_kind(docs, "Secret")
             if d["metadata"].get("namespace") == CLUSTER.step_namespace}
    assert there == {CLUSTER.source_db_secret, CLUSTER.warehouse_db_secret,
                     CLUSTER.warehouse_reader_secret, pods.S3.s3_secret}


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
@pytest.mark.parametrize("task_id", dag_support.TASK_IDS)
def test_the_dags_pods_are_admitted(policies, task_id, backend, monkeypatch):
    pod = dag_pod(task_id, backend, monkeypatch)
    assert refusals(policies[backend], pod) == []
    # KubernetesPodOperator marks a finished pod with a label, as an UPDATE.
    pod["metadata"]["labels"]["already_checked"] = "True"
    assert refusals(policies[backend], pod, operation="UPDATE") == []


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_the_helm_test_pod_is_admitted_for_a_person(policies, backend):
    docs = helm.render("northwind-pipeline", {"data": {"backend": backend}})
    pod = helm.by_kind(docs, "Pod")[0]
    assert refusals(policies[backend], pod, user=PERSON) == []
    assert refusals(policies[backend], pod, user="system:serviceaccount:northwind:airflow-triggerer")


def _env_secret(pod: dict, name: str) -> None:
    pod["spec"]["containers"][0]["env"].append(
        {"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}})


def _hostile(kind: str, pod: dict) -> tuple[dict, dict]:
    """A hostile variant of the extract-csv pod, and the request arguments it comes with."""
    pod = copy.deepcopy(pod)
    spec, labels, request = pod["spec"], pod["metadata"]["labels"], {}
    if kind == "other image":
        spec["containers"][0]["image"] = "alpine:3"
    elif kind == "init container image":
        spec["initContainers"] = [{"name": "x", "image": "alpine:3"}]
    elif kind == "admin Secret":
        _env_secret(pod, "northwind-source-db-admin")
    elif kind == "another step's Secret":
        _env_secret(pod, CLUSTER.warehouse_db_secret)
    elif kind == "init container reads another step's Secret":
        ref = {"secretKeyRef": {"name": CLUSTER.warehouse_db_secret, "key": "password"}}
        spec["initContainers"] = [{**spec["containers"][0], "name": "x",
                                   "env": [{"name": "STOLEN", "valueFrom": ref}]}]
    elif kind == "Secret through envFrom":
        spec["containers"][0]["envFrom"] = [{"secretRef": {"name": CLUSTER.source_db_secret}}]
    elif kind == "Secret volume":
        spec["volumes"].append({"name": "s", "secret": {"secretName": CLUSTER.source_db_secret}})
    elif kind == "hostPath":
        spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    elif kind == "other ConfigMap":
        spec["volumes"].append({"name": "cm", "configMap": {"name": "airflow-config"}})
    elif kind == "other claim":
        claim = {"claimName": "data-northwind-source-db-0"}
        spec["volumes"].append({"name": "c", "persistentVolumeClaim": claim})
    elif kind == "other ServiceAccount":
        spec["serviceAccountName"] = "default"
    elif kind == "token mounted":
        spec["automountServiceAccountToken"] = True
    elif kind == "extra label":
        labels["app"] = "anything"
    elif kind == "client label of another step":
        labels["northwind.io/source-client"] = "true"
    elif kind == "client label patched on":
        labels["northwind.io/warehouse-client"] = "true"
        request = {"operation": "UPDATE"}
    elif kind == "no step label":
        del labels[pods.STEP_LABEL]
    elif kind == "unknown step":
        labels[pods.STEP_LABEL] = "shell"
    elif kind == "other ServiceAccount creating":
        request = {"user": "system:serviceaccount:northwind:airflow-triggerer"}
    return pod, request


HOSTILE = {
    "other image": "Meltano image",
    "init container image": "Meltano image",
    "admin Secret": "its own Secrets",
    "another step's Secret": "its own Secrets",
    "init container reads another step's Secret": "its own Secrets",
    "Secret through envFrom": "its own Secrets",
    "Secret volume": "emptyDirs, the data claim",
    "hostPath": "emptyDirs, the data claim",
    "other claim": "emptyDirs, the data claim",
    "other ConfigMap": "emptyDirs, the data claim",
    "other ServiceAccount": "step ServiceAccount",
    "token mounted": "step ServiceAccount",
    "extra label": "step labels",
    "client label of another step": "step labels",
    "client label patched on": "step labels",
    "no step label": "label northwind.io/step",
    "unknown step": "label northwind.io/step",
    "other ServiceAccount creating": "pod launcher's ServiceAccount",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_pods_are_refused_naming_the_rule(policies, kind, monkeypatch):
    pod = dag_pod("extract_csv", "filesystem", monkeypatch)
    assert refusals(policies["filesystem"], pod) == []
    hostile, request = _hostile(kind, pod)
    messages = refusals(policies["filesystem"], hostile, **request)
    assert messages and all(HOSTILE[kind] in m for m in messages[:1]), messages

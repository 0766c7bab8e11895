"""KubernetesExecutor: the scheduler creates only Airflow worker pods in the release's namespace.

The policy (charts/northwind-pipeline, templates/admission/worker-pod-policy.yaml) is rendered by
real Helm with the values `make up EXECUTOR=KubernetesExecutor` passes, and evaluated by a real
CEL implementation (tests/admission_cel.py). The worker pod is the one the provider's executor
builds (PodGenerator.construct_pod, as AirflowKubernetesScheduler does) from the pod template
the official chart renders with charts/airflow/values.yaml and values-kubernetes-executor.yaml,
as the API server then sees it (token volume added); hostile variants change one thing each.
"""

import dag_support  # noqa: I001 - first: a throw-away Airflow home before airflow is imported

import configparser
import copy
import json
from typing import Any

import admission_cel
import helm
import official_chart
import pytest
import yaml
from airflow.providers.cncf.kubernetes.executors import kubernetes_executor_types as executor_types
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import create_unique_id
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

#: Values files layered by `make up EXECUTOR=KubernetesExecutor` (and DATA_BACKEND=s3).
EXECUTOR_VALUES = helm.CHARTS / "airflow" / "values-kubernetes-executor.yaml"
S3_VALUES = helm.CHARTS / "airflow" / "values-s3.yaml"
#: What mk/cluster.mk LAUNCHER_ACCOUNTS passes to charts/northwind-pipeline for that executor.
PIPELINE_VALUES = {"podLauncher": {"kubernetesExecutor": True, "extraServiceAccounts": ["airflow-worker"]}}
PERSON = "kubernetes-admin"
STATEFULSET_CONTROLLER = "system:serviceaccount:kube-system:statefulset-controller"


def _airflow_docs(backend: str) -> list[dict[str, Any]]:
    extra = helm.load_values_file(EXECUTOR_VALUES)
    if backend == "s3":
        extra = official_chart.deep_merge(extra, helm.load_values_file(S3_VALUES))
    return official_chart.render_airflow(extra)


def _username(account: str) -> str:
    return f"system:serviceaccount:{official_chart.namespace()}:{account}"


def _scheduler_account(docs) -> str:
    scheduler = helm.one(docs, "Deployment", f"{official_chart.release()}-scheduler")
    return helm.pod_spec(scheduler)["serviceAccountName"]


def _config(docs) -> dict[str, str]:
    return helm.one(docs, "ConfigMap", f"{official_chart.release()}-config")["data"]


def executor_pod(docs, tmp_path, pod_override: k8s.V1Pod | None = None) -> dict[str, Any]:
    """The worker pod the KubernetesExecutor creates for a task, as admission sees it.

    Built like AirflowKubernetesScheduler._build_pod_request: the chart's pod_template_file,
    the namespace and image of its airflow.cfg, the executor's labels and the task's
    executor_config (``pod_override``); then the API server adds the worker's token volume.
    """
    template = tmp_path / "pod_template_file.yaml"
    template.write_text(_config(docs)["pod_template_file.yaml"])
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(_config(docs)["airflow.cfg"])
    section = cfg["kubernetes_executor"]
    pod = PodGenerator.construct_pod(
        dag_id="northwind_daily", task_id="extract_csv",
        pod_id=create_unique_id("northwind_daily", "extract_csv"), try_number=1,
        kube_image=f"{section['worker_container_repository']}:{section['worker_container_tag']}",
        date=None, run_id="manual__2024-01-02T00:00:00+00:00", map_index=-1,
        args=["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}"],
        pod_override_object=pod_override, base_worker_pod=PodGenerator.deserialize_model_file(str(template)),
        namespace=section["namespace"], scheduler_job_id="42",
    )
    pod.metadata.labels[executor_types.TASK_INSTANCE_ID_LABEL] = "0196f5b2-4c1e-7a3b-9d2e-1f0a2b3c4d5e"
    return admission_cel.with_token_mounted(ApiClient().sanitize_for_serialization(pod))


@pytest.fixture(scope="module")
def official():
    return {backend: _airflow_docs(backend) for backend in ("filesystem", "s3")}


@pytest.fixture(scope="module")
def policy():
    docs = helm.render("northwind-pipeline", PIPELINE_VALUES)
    return helm.one(docs, "ValidatingAdmissionPolicy", "northwind-pipeline-worker-pods")


def refusals(policy_doc, pod, *, user: str, operation: str = "CREATE") -> list[str] | None:
    return admission_cel.refusals(policy_doc, pod, user=user, operation=operation)


def _variable(policy_doc, name: str) -> Any:
    return next(v["expression"] for v in policy_doc["spec"]["variables"] if v["name"] == name)


def test_local_executor_renders_no_worker_policy_and_no_pod_rights_in_the_release_namespace():
    docs = helm.render("northwind-pipeline")
    assert [d["metadata"]["name"] for d in helm.by_kind(docs, "ValidatingAdmissionPolicy")] == [
        "northwind-steps-step-pods"]
    # Nothing to guard: under LocalExecutor no Role of ours grants pods outside the step namespace.
    assert {d["metadata"].get("namespace") for d in helm.by_kind(docs, "Role")} == {"northwind-steps"}


def test_policy_and_binding_are_valid_and_match_only_the_scheduler(official, policy):
    docs = helm.render("northwind-pipeline", PIPELINE_VALUES)
    binding = helm.one(docs, "ValidatingAdmissionPolicyBinding", "northwind-pipeline-worker-pods")
    for doc in (policy, binding):
        helm.validate(doc)
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": official_chart.namespace()}
    rules = policy["spec"]["matchConstraints"]["resourceRules"][0]
    assert set(rules["operations"]) == {"CREATE", "UPDATE"} and "pods" in rules["resources"]
    # The account the official chart gives the scheduler, and the one the worker Role is bound to.
    scheduler = _username(_scheduler_account(official["filesystem"]))
    worker_role = helm.one(docs, "RoleBinding", "northwind-pipeline-worker-launcher")
    assert [_username(s["name"]) for s in worker_role["subjects"]] == [scheduler]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{scheduler}'"


def _pod_template(docs) -> dict[str, Any]:
    return yaml.safe_load(_config(docs)["pod_template_file.yaml"])


def _secrets_read(spec: dict[str, Any]) -> set[str]:
    names = {v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
    for container in helm.containers(spec):
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or []
                  if "secretKeyRef" in (e.get("valueFrom") or {})}
        names |= {f["secretRef"]["name"] for f in container.get("envFrom") or [] if "secretRef" in f}
    return names


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_the_policy_allows_exactly_what_the_official_pod_template_uses(official, policy, backend):
    template = _pod_template(official[backend])
    spec = template["spec"]
    secrets = set(json.loads(_variable(policy, "secrets")))
    assert secrets and secrets == _secrets_read(spec), "not the official pod template's Secrets"
    assert _variable(policy, "serviceAccount") == repr(spec["serviceAccountName"])
    # Every Airflow image the chart renders (the workers' and the components'; not the statsd
    # exporter's, whose pods the ReplicaSet controller makes, never the scheduler).
    specs = [helm.pod_spec(d) for d in official[backend]
             if helm.pod_spec(d) and not d["metadata"]["name"].endswith("-statsd")]
    images = {c["image"] for pod_spec in specs for c in helm.containers(pod_spec)}
    images |= {c["image"] for c in helm.containers(spec)}
    assert images == set(json.loads(_variable(policy, "images")))
    volumes = spec["volumes"]
    assert {v["configMap"]["name"] for v in volumes if "configMap" in v} <= set(
        json.loads(_variable(policy, "configMaps")))
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v} == set(
        json.loads(_variable(policy, "claims")))


def test_the_allowed_labels_are_the_templates_and_the_executors(official, policy):
    allowed = set(json.loads(_variable(policy, "labelKeys")))
    executor = PodGenerator.build_labels_for_k8s_executor_pod(
        dag_id="d", task_id="t", try_number=1, airflow_worker="1", map_index=0,
        logical_date=dag_support.utc_day("2024-01-02"), run_id="r")
    patched = {executor_types.POD_EXECUTOR_DONE_KEY, executor_types.POD_REVOKED_KEY,
               executor_types.TASK_INSTANCE_ID_LABEL}
    template = set(_pod_template(official["filesystem"])["metadata"]["labels"])
    assert allowed == template | set(executor) | patched


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_the_executors_worker_pod_is_admitted_and_patched(official, policy, backend, tmp_path):
    pod = executor_pod(official[backend], tmp_path)
    scheduler = _username(_scheduler_account(official[backend]))
    assert pod["spec"]["volumes"][-1]["projected"]  # the token volume the API server adds
    assert refusals(policy, pod, user=scheduler) == []
    # The executor's patches: adoption by a new scheduler, done, revoked.
    for label in ("airflow-worker", executor_types.POD_EXECUTOR_DONE_KEY, executor_types.POD_REVOKED_KEY):
        patched = copy.deepcopy(pod)
        patched["metadata"]["labels"][label] = "True"
        assert refusals(policy, patched, user=scheduler, operation="UPDATE") == [], label


def _release_secrets() -> set[str]:
    """Every Secret our charts and the official chart put in the release's namespace."""
    docs = [d for chart in helm.OWN_CHARTS for d in helm.render(chart)]
    docs += official_chart.render_airflow(helm.load_values_file(EXECUTOR_VALUES))
    return {d["metadata"]["name"] for d in helm.by_kind(docs, "Secret")
            if d["metadata"].get("namespace", official_chart.namespace()) == official_chart.namespace()}


def test_no_other_secret_of_the_namespace_reaches_a_worker(official, policy, tmp_path):
    allowed = set(json.loads(_variable(policy, "secrets")))
    others = sorted(_release_secrets() - allowed)
    assert {"northwind-source-db-admin", "northwind-source-db-owner", "northwind-airflow-db-admin",
            "northwind-objectstore-admin"} <= set(others)
    pod = executor_pod(official["filesystem"], tmp_path)
    scheduler = _username(_scheduler_account(official["filesystem"]))
    for name in others:
        for how in ("volume", "secretKeyRef", "envFrom"):
            hostile = copy.deepcopy(pod)
            _read_secret(hostile, name, how)
            assert refusals(policy, hostile, user=scheduler), f"{name} as {how} admitted"


def _read_secret(pod: dict[str, Any], name: str, how: str) -> None:
    container = pod["spec"]["containers"][0]
    if how == "volume":
        pod["spec"]["volumes"].append({"name": "stolen", "secret": {"secretName": name}})
    elif how == "projected":
        sources = [{"secret": {"name": name}}]
        pod["spec"]["volumes"].append({"name": "stolen", "projected": {"sources": sources}})
    elif how == "secretKeyRef":
        ref = {"secretKeyRef": {"name": name, "key": "password"}}
        container["env"].append({"name": "STOLEN", "valueFrom": ref})
    else:
        container["envFrom"] = [{"secretRef": {"name": name}}]


ADMIN = "northwind-warehouse-db-admin"


def _hostile(kind: str, pod: dict[str, Any]) -> dict[str, Any]:
    """A hostile variant of the executor's worker pod: one thing changed."""
    pod = copy.deepcopy(pod)
    spec, labels = pod["spec"], pod["metadata"]["labels"]
    main = spec["containers"][0]
    if kind in ("volume", "projected", "secretKeyRef", "envFrom"):
        _read_secret(pod, ADMIN, kind)
    elif kind == "init container reads the admin Secret":
        ref = {"secretKeyRef": {"name": ADMIN, "key": "password"}}
        spec["initContainers"] = [{**main, "name": "x", "env": [{"name": "STOLEN", "valueFrom": ref}]}]
    elif kind == "other image":
        main["image"] = "alpine:3"
    elif kind == "init container image":
        spec["initContainers"] = [{"name": "x", "image": "alpine:3"}]
    elif kind == "ephemeral container":
        spec["ephemeralContainers"] = [{"name": "x", "image": main["image"]}]
    elif kind == "hostPath":
        spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    elif kind == "database claim":
        claim = {"claimName": "data-northwind-source-db-0"}
        spec["volumes"].append({"name": "c", "persistentVolumeClaim": claim})
    elif kind == "other ServiceAccount":
        spec["serviceAccountName"] = "airflow-scheduler"
    elif kind == "privileged":
        main["securityContext"] = {**main.get("securityContext", {}), "privileged": True}
    elif kind == "hostNetwork":
        spec["hostNetwork"] = True
    elif kind == "hostPID":
        spec["hostPID"] = True
    elif kind == "database client label":
        labels["northwind.io/source-client"] = "true"
    elif kind == "scheduler's component label":
        labels["component"] = "scheduler"
    return pod


HOSTILE = {
    "volume": "Secrets and its token",
    "projected": "Secrets and its token",
    "secretKeyRef": "Airflow's own Secrets",
    "envFrom": "Airflow's own Secrets",
    "init container reads the admin Secret": "Airflow's own Secrets",
    "other image": "Airflow image",
    "init container image": "Airflow image",
    "ephemeral container": "Airflow image",
    "hostPath": "Secrets and its token",
    "database claim": "Secrets and its token",
    "other ServiceAccount": "worker ServiceAccount",
    "privileged": "privileged",
    "hostNetwork": "host namespace",
    "hostPID": "host namespace",
    "database client label": "worker labels",
    "scheduler's component label": "worker labels",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_worker_pods_are_refused_naming_the_rule(official, policy, kind, tmp_path):
    scheduler = _username(_scheduler_account(official["filesystem"]))
    hostile = _hostile(kind, executor_pod(official["filesystem"], tmp_path))
    for operation in ("CREATE", "UPDATE"):
        messages = refusals(policy, hostile, user=scheduler, operation=operation)
        assert messages and HOSTILE[kind] in messages[0], messages


def test_a_dags_pod_override_cannot_mount_an_admin_secret(official, policy, tmp_path):
    # executor_config={"pod_override": ...} is how a DAG shapes its worker pod: the real attack.
    override = k8s.V1Pod(spec=k8s.V1PodSpec(
        containers=[k8s.V1Container(name="base", volume_mounts=[
            k8s.V1VolumeMount(name="admin", mount_path="/admin", read_only=True)])],
        volumes=[k8s.V1Volume(name="admin", secret=k8s.V1SecretVolumeSource(secret_name=ADMIN))]))
    pod = executor_pod(official["filesystem"], tmp_path, pod_override=override)
    assert ADMIN in _secrets_read(pod["spec"])
    scheduler = _username(_scheduler_account(official["filesystem"]))
    assert refusals(policy, pod, user=scheduler) == [
        "a worker mounts only emptyDirs, the DAG claim, Airflow's ConfigMaps and Secrets and its token"]


def test_other_creators_are_not_matched_and_the_scheduler_cannot_relabel_theirs(official, policy, tmp_path):
    databases = helm.render("northwind-databases")
    statefulset = helm.one(databases, "StatefulSet", "northwind-source-db")
    db_pod = {"metadata": {**statefulset["spec"]["template"]["metadata"],
                           "namespace": official_chart.namespace()},
              "spec": statefulset["spec"]["template"]["spec"]}
    assert refusals(policy, db_pod, user=STATEFULSET_CONTROLLER) is None
    hostile = _hostile("volume", executor_pod(official["filesystem"], tmp_path))
    assert refusals(policy, hostile, user=PERSON) is None
    # The scheduler may patch pods of the namespace (the executor patches its workers' labels):
    # a client label patched onto a database pod is refused.
    scheduler = _username(_scheduler_account(official["filesystem"]))
    db_pod["metadata"]["labels"]["northwind.io/source-client"] = "true"
    assert refusals(policy, db_pod, user=scheduler, operation="UPDATE")

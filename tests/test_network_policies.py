"""NetworkPolicies: every flow of the pipeline, allowed or refused, under all policies together.

The policies are the rendered ones (k8s/network-policies.yaml, our charts); the pods are the
rendered ones too (database StatefulSets, seed Job, `helm test` pod, the official Airflow chart
with our values) plus the DAG's step pods as pods.py labels them.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import sys

import helm
import pytest
import yaml
from netpol import Endpoint, allowed
from official_chart import render_airflow

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))
from northwind.pods import STEPS, step_pod_kwargs  # noqa: E402

NS = helm.NAMESPACE
#: The step pods' namespace (STEP_NAMESPACE): the DAG's pods and the `helm test` pod run there.
STEPS_NS = step_pod_kwargs(STEPS[0])["namespace"]
PG = 5432
#: The API server's address on the pipeline chart's values below (make up looks it up).
KUBE_API_ADDRESS = "172.18.0.2"
KUBE_API = Endpoint("kube-api", None, address=KUBE_API_ADDRESS)
ELSEWHERE_443 = Endpoint("any host on the internet", None, address="140.82.112.3")
PIPELINE_VALUES = {"networkPolicy": {"kubeApi": {"addresses": [KUBE_API_ADDRESS, "10.96.0.1"]}}}
DNS = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"})


def _in_namespace(docs):
    for doc in docs:
        doc["metadata"].setdefault("namespace", NS)
    return docs


@pytest.fixture(scope="module")
def rendered():
    plain = [d for d in yaml.safe_load_all((helm.ROOT / "k8s" / "network-policies.yaml").read_text())
             if d]
    return {"plain": plain, "databases": _in_namespace(helm.render("northwind-databases")),
            "pipeline": _in_namespace(helm.render("northwind-pipeline", PIPELINE_VALUES)),
            "airflow": _in_namespace(render_airflow())}


@pytest.fixture(scope="module")
def policies(rendered):
    return [d for docs in rendered.values() for d in docs if d["kind"] == "NetworkPolicy"]


def _pod(doc) -> Endpoint:
    spec = helm.pod_spec(doc)
    template = doc if doc["kind"] == "Pod" else doc["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports") or []
             if "name" in p}
    return Endpoint(doc["metadata"]["name"], doc["metadata"]["namespace"],
                    template["metadata"].get("labels") or {}, ports)


@pytest.fixture(scope="module")
def pods(rendered):
    found = {}
    for docs in rendered.values():
        for doc in docs:
            if helm.pod_spec(doc) is not None:
                found[doc["metadata"]["name"]] = _pod(doc)
    for step in STEPS:
        found[step] = Endpoint(step, STEPS_NS, step_pod_kwargs(step)["labels"])
    found["stranger"] = Endpoint("stranger", NS, {"app": "anything"})
    found["step-stranger"] = Endpoint("step-stranger", STEPS_NS, {"app": "anything"})
    found["elsewhere"] = Endpoint("elsewhere", "default", {"northwind.io/source-client": "true"})
    return found


SOURCE, WAREHOUSE, METADATA = "northwind-source-db", "northwind-warehouse-db", "northwind-airflow-db"
API_SERVER, API_PORT = "airflow-api-server", 8080
AIRFLOW = ("airflow-scheduler", "airflow-api-server", "airflow-dag-processor", "airflow-triggerer",
           "airflow-run-airflow-migrations")
SEED, HELM_TEST = "northwind-databases-seed-source", "northwind-pipeline-test-connection"

#: (client, server, port) -> allowed. Everything the pipeline needs, and what it must not reach.
FLOWS = {
    ("extract-postgres", SOURCE, PG): True,
    ("extract-postgres", WAREHOUSE, PG): False,
    ("extract-csv", SOURCE, PG): False,
    ("extract-csv", WAREHOUSE, PG): False,
    ("load-warehouse", WAREHOUSE, PG): True,
    ("load-warehouse", SOURCE, PG): False,
    ("publish-report", WAREHOUSE, PG): True,
    ("publish-report", SOURCE, PG): False,
    (SEED, SOURCE, PG): True,
    (SEED, WAREHOUSE, PG): False,
    (HELM_TEST, SOURCE, PG): True,
    (HELM_TEST, WAREHOUSE, PG): True,
    **{(a, METADATA, PG): True for a in AIRFLOW},
    **{(a, SOURCE, PG): False for a in AIRFLOW},
    **{(a, WAREHOUSE, PG): False for a in AIRFLOW},
    **{(step, METADATA, PG): False for step in STEPS},
    **{(step, API_SERVER, API_PORT): False for step in STEPS},
    ("airflow-scheduler", API_SERVER, API_PORT): True,  # the tasks' execution API
    ("airflow-triggerer", API_SERVER, API_PORT): True,
    ("airflow-api-server", "airflow-scheduler", 8793): True,  # task logs
    ("stranger", SOURCE, PG): False,
    ("stranger", METADATA, PG): False,
    ("stranger", API_SERVER, API_PORT): False,
    ("elsewhere", SOURCE, PG): False,
    ("step-stranger", SOURCE, PG): False,
    ("step-stranger", WAREHOUSE, PG): False,
    ("step-stranger", API_SERVER, API_PORT): False,
    (SOURCE, WAREHOUSE, PG): False,  # nothing goes out of a database pod
    (SOURCE, API_SERVER, API_PORT): False,
}


@pytest.mark.parametrize(("client", "server", "port"), list(FLOWS), ids=lambda x: str(x))
def test_flow(policies, pods, client, server, port):
    assert allowed(policies, pods[client], pods[server], port) is FLOWS[client, server, port]


def test_only_the_scheduler_reaches_the_kubernetes_api(policies, pods):
    reach = {name for name, pod in pods.items() if pod.namespace in (NS, STEPS_NS)
             and allowed(policies, pod, KUBE_API, 6443)}
    assert reach == {"airflow-scheduler"}


def test_the_scheduler_reaches_only_the_api_servers_addresses(policies, pods):
    scheduler = pods["airflow-scheduler"]
    assert allowed(policies, scheduler, KUBE_API, 443)
    assert not allowed(policies, scheduler, ELSEWHERE_443, 443)
    assert not allowed(policies, scheduler, KUBE_API, 22)
    # Without the looked-up addresses the scheduler reaches no API at all (fail closed).
    bare = [d for d in _in_namespace(helm.render("northwind-pipeline")) if d["kind"] == "NetworkPolicy"]
    others = [p for p in policies if p["metadata"]["name"] != "northwind-pipeline-scheduler-kube-api"]
    assert not allowed([*others, *bare], scheduler, KUBE_API, 443)
    assert "kubeApi.addresses is empty" in helm.notes("northwind-pipeline")


SERVERS = (SOURCE, WAREHOUSE, METADATA)


def test_every_pod_but_the_servers_resolves_names(policies, pods):
    for name, pod in pods.items():
        if pod.namespace in (NS, STEPS_NS):
            assert allowed(policies, pod, DNS, 53, "UDP") is (name not in SERVERS), name
            assert not allowed(policies, pod, DNS, 80), name


def test_the_default_deny_closes_what_no_chart_opens(rendered, policies, pods):
    # The chart policies alone leave a pod of the step namespace free to call anything (a step
    # pod is held to its metrics egress); the namespace's default-deny
    # (k8s/network-policies.yaml) is what closes it.
    charts_only = [d for key, docs in rendered.items() if key != "plain" for d in docs
                   if d["kind"] == "NetworkPolicy"]
    assert allowed(charts_only, pods["step-stranger"], pods["stranger"], 80)
    assert not allowed(policies, pods["step-stranger"], pods["stranger"], 80)
    assert not allowed(policies, pods["extract-csv"], pods["stranger"], 80)
    assert not allowed(policies, pods["extract-csv"], KUBE_API, 443)


def test_every_policy_validates(policies):
    for policy in policies:
        helm.validate(policy)


def test_policies_can_be_turned_off():
    for chart in helm.OWN_CHARTS:
        docs = helm.render(chart, {"networkPolicy": {"enabled": False}})
        assert helm.by_kind(docs, "NetworkPolicy") == []


# --- the options of `make up`: DATA_BACKEND=s3 and EXECUTOR=KubernetesExecutor ----------------

OBJECTSTORE = "northwind-objectstore"
S3_PORT = helm.load_values_file(helm.chart_dir(OBJECTSTORE) / "values.yaml")["ports"]["s3"]


@pytest.fixture(scope="module")
def s3_world(rendered):
    """Policies and pods of `make up DATA_BACKEND=s3`: the object store chart, steps on S3."""
    store = _in_namespace(helm.render(OBJECTSTORE))
    pipeline = _in_namespace(helm.render("northwind-pipeline",
                                         {**PIPELINE_VALUES, "data": {"backend": "s3"}}))
    world = [rendered["plain"], rendered["databases"], rendered["airflow"], pipeline, store]
    policies = [d for docs in world for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {doc["metadata"]["name"]: _pod(doc) for docs in world
            for doc in docs if helm.pod_spec(doc) is not None}
    bucket_job = next(name for name in pods if name.startswith(f"{OBJECTSTORE}-create-bucket-"))
    pods["bucket-job"] = pods.pop(bucket_job)
    for step in STEPS:
        pods[step] = Endpoint(step, STEPS_NS, step_pod_kwargs(step, backend="s3")["labels"])
        pods[f"{step} (filesystem)"] = Endpoint(
            step, STEPS_NS, step_pod_kwargs(step, backend="filesystem")["labels"])
    pods["stranger"] = Endpoint("stranger", NS, {"app": "anything"})
    return policies, pods


def test_s3_steps_and_the_bucket_job_alone_reach_the_object_store(s3_world):
    policies, pods = s3_world
    store = pods[OBJECTSTORE]
    reach = {name for name, pod in pods.items() if allowed(policies, pod, store, S3_PORT)}
    assert reach == {*STEPS, "bucket-job", HELM_TEST}
    # Only the S3 port, and a step on S3 still reaches its own database only.
    assert not allowed(policies, pods["extract-csv"], store, 9333)
    assert allowed(policies, pods["extract-postgres"], pods[SOURCE], PG)
    assert not allowed(policies, pods["extract-csv"], pods[SOURCE], PG)


def test_the_object_store_opens_no_connection(s3_world):
    policies, pods = s3_world
    for target, port in ((SOURCE, PG), (METADATA, PG), (API_SERVER, API_PORT)):
        assert not allowed(policies, pods[OBJECTSTORE], pods[target], port), target
    assert not allowed(policies, pods[OBJECTSTORE], KUBE_API, 443)
    assert not allowed(policies, pods[OBJECTSTORE], DNS, 53, "UDP")


def _airflow_kubernetes_executor() -> list[dict]:
    layer = helm.load_values_file(helm.CHARTS / "airflow" / "values-kubernetes-executor.yaml")
    return _in_namespace(render_airflow(layer))


def _worker(docs) -> Endpoint:
    config = helm.one(docs, "ConfigMap", "airflow-config")
    template = yaml.safe_load(config["data"]["pod_template_file.yaml"])
    return Endpoint("airflow-worker", NS, template["metadata"]["labels"])


@pytest.mark.parametrize("executor", [False, True], ids=["LocalExecutor", "KubernetesExecutor"])
def test_with_kubernetes_executor_the_workers_reach_the_kubernetes_api(rendered, executor):
    # The scheduler starts the worker pods, the worker pods start the step pods.
    pipeline = _in_namespace(helm.render("northwind-pipeline", {**PIPELINE_VALUES, "podLauncher": {
        "kubernetesExecutor": executor, "extraServiceAccounts": ["airflow-worker"] if executor else []}}))
    airflow = _airflow_kubernetes_executor()
    policies = [d for docs in (rendered["plain"], pipeline, airflow) for d in docs
                if d["kind"] == "NetworkPolicy"]
    scheduler = _pod(next(d for d in airflow if d["metadata"]["name"] == "airflow-scheduler"))
    assert allowed(policies, scheduler, KUBE_API, 6443)
    assert allowed(policies, _worker(airflow), KUBE_API, 6443) is executor
    assert allowed(policies, _worker(airflow), _pod(helm.one(airflow, "Deployment", API_SERVER)), API_PORT)

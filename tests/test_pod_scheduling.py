"""One source for where pods run and how they pull images: dags/northwind/pod-scheduling.yaml.

The step pods read it (dags/northwind/cluster.py), `make up` passes it to both charts with -f, and
the charts' defaults equal it. A sample with every key set must come out identical in the
database pods, the seed Job, the `helm test` pod and a step pod built by the provider.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import sys

import helm
import pytest
import yaml
from kubernetes.client import ApiClient

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))
from northwind.cluster import POD_SCHEDULING, ClusterEnvError, PodScheduling  # noqa: E402
from northwind.operators import MeltanoStepOperator  # noqa: E402
from northwind.pods import EXTRACT_POSTGRES, step_pod_kwargs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

SAMPLE = {"pods": {
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "data",
                     "effect": "NoSchedule", "tolerationSeconds": 30}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "northwind.io/data-node", "operator": "In", "values": ["true"]}]}]}}},
}}
KEYS = PodScheduling.KEYS


def _scheduling_of(spec) -> dict:
    return {key: spec.get(key) for key in KEYS}


def test_chart_defaults_equal_the_file():
    truth = yaml.safe_load(POD_SCHEDULING.read_text())["pods"]
    for chart in helm.OWN_CHARTS:
        assert helm.load_values_file(helm.chart_dir(chart) / "values.yaml")["pods"] == truth, chart


def test_make_passes_the_file_to_every_chart():
    text = (helm.ROOT / "mk" / "cluster.mk").read_text()
    assert text.count("-f $(POD_SCHEDULING)") == len(helm.OWN_CHARTS)
    assert "POD_SCHEDULING := dags/northwind/pod-scheduling.yaml" in text


def _step_pod(scheduling: PodScheduling) -> dict:
    from airflow.sdk import DAG

    with DAG("scheduling_probe", schedule=None) as dag:
        task = MeltanoStepOperator(**step_pod_kwargs(EXTRACT_POSTGRES, scheduling=scheduling))
    context = dag_support.task_context(dag, task, logical_date=dag_support.utc_day("2024-01-02"))
    task.render_template_fields(context)
    return ApiClient().sanitize_for_serialization(task.build_pod_request_obj(context, dry_run=True))


def test_every_pod_gets_the_same_scheduling():
    expected = SAMPLE["pods"]
    specs = {"step pod": _step_pod(PodScheduling.from_mapping(SAMPLE))["spec"]}
    for chart in helm.OWN_CHARTS:
        for doc in helm.render(chart, SAMPLE):
            if helm.pod_spec(doc) is not None:
                specs[f"{doc['kind']}/{doc['metadata']['name']}"] = helm.pod_spec(doc)
    assert len(specs) == 8  # step, 3 databases, seed Job, helm test pod, object store, bucket Job
    for where, spec in specs.items():
        assert _scheduling_of(spec) == expected, where


def test_empty_file_changes_no_pod():
    spec = _step_pod(PodScheduling())["spec"]
    assert not any(spec.get(key) for key in KEYS)
    for chart in helm.OWN_CHARTS:
        for doc in helm.render(chart):
            if helm.pod_spec(doc) is not None:
                assert not any(helm.pod_spec(doc).get(key) for key in KEYS)


@pytest.mark.parametrize(("values", "message"), [
    ({}, "lacks the pods: block"),
    ({"pods": {"nodeselector": {}}}, "unknown key pods.nodeselector"),
    ({"pods": {"tolerations": {"key": "x"}}}, "pods.tolerations must be a list"),
])
def test_bad_file_is_one_clear_line(values, message):
    with pytest.raises(ClusterEnvError, match=message):
        PodScheduling.from_mapping(values)

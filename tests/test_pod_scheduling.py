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
from make_targets import dry_run, helm_installs, option_values
from test_names_in_step import cluster_env

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


def test_make_up_passes_the_file_to_every_chart():
    # With the in-cluster object store, `make up` installs all our charts.
    s3 = ("DATA_BACKEND=s3", "OBJECTSTORE_ENABLED=true", f"S3_SECRET={cluster_env()['S3_SECRET']}")
    installs = helm_installs(dry_run("up", *s3))
    for chart in helm.OWN_CHARTS:
        values_files = [helm.ROOT / path for path in option_values(installs[f"charts/{chart}"], "-f")]
        assert POD_SCHEDULING in values_files, chart


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

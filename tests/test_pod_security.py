"""Pod Security "restricted" for every pod the namespace runs (k8s/namespace.yaml enforces it).

Our two charts (default and alternative values), the official Airflow chart with our values
(rendered by real Helm from ../shared/airflow-chart) and the DAG's step pods as the provider builds
them: each pod spec must pass tests/helm.py's check of the Pod Security Standards.
"""

import dag_support  # noqa: F401, I001 - first: it points Airflow at a private home before the import

import helm
import pytest
from dag_support import TASK_IDS, build_pod, utc_day
from kubernetes.client import ApiClient
from official_chart import render_airflow

# pathspec, as Airflow calls it for .airflowignore; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


def _violations(docs):
    found = {}
    for doc in docs:
        spec = helm.pod_spec(doc)
        if spec is not None and helm.restricted_violations(spec):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = helm.restricted_violations(spec)
    return found


def test_official_airflow_chart_meets_restricted_with_our_values():
    docs = render_airflow()
    workloads = {d["metadata"]["name"] for d in docs if helm.pod_spec(d) is not None}
    assert {"airflow-scheduler", "airflow-api-server", "airflow-dag-processor",
            "airflow-triggerer", "airflow-run-airflow-migrations"} <= workloads
    assert _violations(docs) == {}


def test_official_airflow_chart_fails_when_a_pod_may_run_as_root():
    # The values' securityContexts.pod is what makes it pass, and the check sees a change.
    assert _violations(render_airflow({"securityContexts": {"pod": {"runAsNonRoot": False}}}))


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_step_pods_meet_restricted(task_id):
    pod = ApiClient().sanitize_for_serialization(build_pod(task_id, logical_date=utc_day("2024-01-02")))
    assert helm.restricted_violations(pod["spec"]) == []

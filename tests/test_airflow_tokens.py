"""Airflow's components that never call the Kubernetes API carry no token and get no Role.

The official chart rendered with charts/airflow/values.yaml (tests/official_chart.py): only the
scheduler, which starts the step pods, mounts a ServiceAccount token; no Role lets the api-server
read pod logs (with LocalExecutor the task log already holds the step's output).
"""

import helm
import pytest
from official_chart import render_airflow

#: Deployments and Jobs whose pods never call the API, by name.
NO_API = ("airflow-api-server", "airflow-dag-processor", "airflow-triggerer",
          "airflow-run-airflow-migrations")


@pytest.fixture(scope="module")
def docs():
    return render_airflow()


def _mounts_token(docs, workload) -> bool:
    """Whether the pods of ``workload`` get a token: their own setting, else their account's."""
    spec = helm.pod_spec(workload)
    if "automountServiceAccountToken" in spec:
        return spec["automountServiceAccountToken"]
    account = helm.one(docs, "ServiceAccount", spec.get("serviceAccountName", "default"))
    return account.get("automountServiceAccountToken", True)


def test_only_the_scheduler_mounts_a_token(docs):
    workloads = {d["metadata"]["name"]: d for d in docs if helm.pod_spec(d) is not None}
    assert set(NO_API) <= set(workloads)
    assert {name for name in NO_API if _mounts_token(docs, workloads[name])} == set()
    assert _mounts_token(docs, workloads["airflow-scheduler"])


def test_no_role_reads_pod_logs(docs):
    for role in helm.by_kind(docs, "Role"):
        resources = {r for rule in role["rules"] for r in rule.get("resources", [])}
        assert "pods/log" not in resources, role["metadata"]["name"]
    bound = {b["roleRef"]["name"] for b in helm.by_kind(docs, "RoleBinding")}
    assert not [name for name in bound if "log" in name]

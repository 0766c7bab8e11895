"""Every container we render asks for and is capped in CPU, memory and ephemeral storage, and
every emptyDir has a size limit: one runaway pod cannot starve the node (issue 22, point 12).

Our three charts (default and S3 values), the official Airflow chart with our values (its init
containers and sidecars included; with KubernetesExecutor its worker pod template too) and the
DAG's step pods as the provider builds them.
"""

import dag_support  # noqa: F401, I001 - first: it points Airflow at a private home before the import

import helm
import pytest
import yaml
from dag_support import TASK_IDS, build_pod, utc_day
from kubernetes.client import ApiClient
from official_chart import render_airflow

# pathspec, as Airflow calls it for .airflowignore; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

RESOURCES = {"cpu", "memory", "ephemeral-storage"}


def _rendered() -> dict[str, dict]:
    """name -> pod spec of everything we render."""
    layer = helm.load_values_file(helm.CHARTS / "airflow" / "values-kubernetes-executor.yaml")
    executor = render_airflow(layer)
    docs = [*render_airflow(), *executor]
    for chart in helm.OWN_CHARTS:
        docs += helm.render(chart) + helm.render(chart, {"data": {"backend": "s3"}}
                                                 if chart == "northwind-pipeline" else None)
    specs = {f"{d['kind']}/{d['metadata']['name']}": helm.pod_spec(d) for d in docs
             if helm.pod_spec(d) is not None}
    # KubernetesExecutor: the worker pods come from the pod template file in the config.
    template = helm.one(executor, "ConfigMap", "airflow-config")["data"]["pod_template_file.yaml"]
    specs["KubernetesExecutor worker"] = yaml.safe_load(template)["spec"]
    for task_id in TASK_IDS:
        pod = ApiClient().sanitize_for_serialization(build_pod(task_id, logical_date=utc_day("2024-01-02")))
        specs[f"step {task_id}"] = pod["spec"]
    return specs


@pytest.fixture(scope="module")
def specs():
    return _rendered()


def test_every_container_has_requests_and_limits(specs):
    missing = []
    for where, spec in specs.items():
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                lacking = RESOURCES - set(resources.get(kind) or {})
                if lacking:
                    missing.append(f"{where} {container['name']}: {kind} lacks {sorted(lacking)}")
    assert missing == [], "\n".join(missing)


def test_every_empty_dir_has_a_size_limit(specs):
    missing = [f"{where}: {v['name']}" for where, spec in specs.items()
               for v in spec.get("volumes") or [] if "emptyDir" in v
               and not (v["emptyDir"] or {}).get("sizeLimit")]
    assert missing == [], "\n".join(missing)


def test_every_container_of_ours_has_a_read_only_root(specs):
    # Ours: our charts, the step pods and the init container our Airflow values add. Airflow's
    # own containers keep the chart's writable root: not run read-only anywhere yet.
    ours = {where: spec for where, spec in specs.items()
            if not where.split("/")[-1].startswith(("airflow-", "KubernetesExecutor"))}
    containers = [(where, c) for where, spec in ours.items()
                  for c in [*(spec.get("initContainers") or []), *spec["containers"]]]
    api_server = "Deployment/airflow-api-server"
    containers.append((api_server, next(c for c in specs[api_server]["initContainers"]
                                        if c["name"] == "copy-passwords")))
    writable = [f"{where} {c['name']}" for where, c in containers
                if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True]
    assert len(containers) > 10 and writable == [], "\n".join(writable)

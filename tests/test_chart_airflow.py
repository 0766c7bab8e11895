"""charts/airflow/values.yaml: the values `make up` gives the official apache-airflow chart.

The chart-backed tests render the real chart (``../shared/airflow-chart``, see
tests/official_chart.py) with our values and check what the cluster run needs; without that
copy they skip with the reason. The rest check our values file against the repository.
"""

from __future__ import annotations

import base64
import configparser
import importlib
import ipaddress
import json
import pathlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from typing import Any

import dag_support  # noqa: F401  (a throw-away Airflow home before anything imports airflow)
import helm
import official_chart
import pytest
import yaml
from fake_tool_support import make_with_fake_tool
from make_targets import dry_run, helm_installs, option_values

VALUES_FILE = official_chart.AIRFLOW_VALUES
#: Hook phases Helm runs only after `--wait` has seen every workload ready.
POST_HOOKS = {"post-install", "post-upgrade"}
#: The pod-IP callable; the chart keeps the scheduler a Deployment, whose pod name no DNS serves.
POD_IP_CALLABLE = "airflow.utils.net.get_host_ip_address"


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load(VALUES_FILE.read_text())


@pytest.fixture(scope="module")
def docs():
    return official_chart.render_airflow()


@pytest.fixture(scope="module")
def ours():
    """Every object our own charts render with their defaults (what `make up` installs)."""
    return [doc for chart in helm.OWN_CHARTS for doc in helm.render(chart)]


def _airflow_cfg(docs) -> configparser.ConfigParser:
    config = helm.one(docs, "ConfigMap", f"{official_chart.release()}-config")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(config["data"]["airflow.cfg"])
    return parser


def _workload(docs, component: str) -> dict[str, Any]:
    name = f"{official_chart.release()}-{component}"
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
             and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one workload {name}, found {len(found)}"
    return found[0]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in helm.pod_spec(workload)["containers"] if c["name"] == name)


def _hooks(doc: dict[str, Any]) -> set[str]:
    annotations = doc["metadata"].get("annotations") or {}
    return {p.strip() for p in annotations.get("helm.sh/hook", "").split(",") if p.strip()}


def _schema_problems(node: Any, schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[str]:
    """Keys of our values that the chart's schema lacks or marks deprecated."""
    where = ".".join(path)
    if "deprecated" in schema.get("description", "").lower():
        yield f"{where} is deprecated: {schema['description']}"
    if not isinstance(node, dict) or "properties" not in schema:
        return  # a leaf, a list, or a free-form map such as config
    for key, sub in node.items():
        if key in schema["properties"]:
            yield from _schema_problems(sub, schema["properties"][key], (*path, key))
        elif schema.get("additionalProperties") is False or not path:
            yield f"{'.'.join((*path, key))} is not a value of the chart"


def _secret_refs(docs) -> Iterator[tuple[str, str, str | None]]:
    """(object, Secret name, key or None for all keys) for every Secret a pod spec reads."""
    for doc in docs:
        spec = helm.pod_spec(doc)
        if spec is None:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    yield where, ref["name"], ref["key"]
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    yield where, source["secretRef"]["name"], None
        for volume in spec.get("volumes") or []:
            if "secret" in volume:
                items = volume["secret"].get("items") or [{"key": None}]
                for item in items:
                    yield where, volume["secret"]["secretName"], item["key"]


# --- the real chart ---------------------------------------------------------------------------


def test_lint_strict_with_the_chart_schema_is_clean():
    report = official_chart.lint_airflow()
    findings = [m["error"] for m in report["messages"]
                if m["severity"] >= 2 and m["error"] != official_chart.MISSING_SUBCHART]
    assert findings == []
    assert [e for e in report["errors"] if e != official_chart.MISSING_SUBCHART] == []


def test_lint_bites_on_a_wrong_type():
    report = official_chart.lint_airflow({"workers": {"celery": {"persistence": {"enabled": "no"}}}})
    assert any("/workers/celery/persistence/enabled" in e for e in report["errors"])


def test_every_key_is_a_current_chart_value(values):
    official_chart.require_chart()
    schema = json.loads((official_chart.AIRFLOW_CHART / "values.schema.json").read_text())
    assert list(_schema_problems(values, schema)) == []


def test_no_helm_hook_that_wait_deadlocks_on(docs):
    # `helm upgrade --install --wait` runs post-install/post-upgrade hooks only once every
    # workload is ready; a workload that waits for such a hook never gets ready.
    jobs = helm.by_kind(docs, "Job")
    migrations = [j for j in jobs if j["metadata"]["name"].endswith("-run-airflow-migrations")]
    assert migrations, "no migration Job rendered"
    assert [(d["kind"], d["metadata"]["name"], sorted(_hooks(d) & POST_HOOKS))
            for d in docs if _hooks(d) & POST_HOOKS] == []
    waiting = [c for d in docs if d["kind"] in ("Deployment", "StatefulSet")
               for c in helm.pod_spec(d).get("initContainers") or []
               if "check-migrations" in (c.get("args") or [])]
    assert waiting, "no wait-for-migrations init container: the check above proves nothing"


def test_dag_claim_is_mounted_where_scheduler_and_dag_processor_read(docs, values):
    dags_folder = _airflow_cfg(docs)["core"]["dags_folder"]
    claim = values["dags"]["persistence"]["existingClaim"]
    for component in ("scheduler", "dag-processor"):
        workload = _workload(docs, component)
        volumes = {v["name"]: v for v in helm.pod_spec(workload)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in _container(workload, component)["volumeMounts"]}
        assert dags_folder in mounts, f"{component}: nothing mounted at {dags_folder}"
        claim_of = volumes[mounts[dags_folder]].get("persistentVolumeClaim", {}).get("claimName")
        assert claim_of == claim, f"{component}: {dags_folder} is not claim {claim}"


def test_pod_launcher_role_is_bound_to_the_accounts_that_run_tasks(docs, ours):
    accounts = {d["metadata"]["name"] for d in helm.by_kind(docs, "ServiceAccount")}
    # LocalExecutor: tasks run in the scheduler; the step tasks are not deferrable, so the
    # triggerer starts no pod and gets no grant.
    runners = {helm.pod_spec(_workload(docs, "scheduler"))["serviceAccountName"]}
    triggerer = helm.pod_spec(_workload(docs, "triggerer"))["serviceAccountName"]
    assert runners <= accounts
    binding = helm.one(ours, "RoleBinding", "northwind-pipeline-pod-launcher")
    subjects = {s["name"] for s in binding["subjects"]
                if s["kind"] == "ServiceAccount" and s["namespace"] == official_chart.namespace()}
    assert runners <= subjects, f"unbound: {sorted(runners - subjects)}"
    assert triggerer not in subjects
    assert subjects <= accounts, f"bound but not rendered: {sorted(subjects - accounts)}"
    # The chart's own grant is off: one copy of the rule.
    assert not [r for r in helm.by_kind(docs, "Role") if "pod-launcher" in r["metadata"]["name"]]


def _install_once(doc: dict[str, Any]) -> bool:
    """A chart Secret Helm creates at install only (e.g. the fernet key), never re-rendered."""
    return _hooks(doc) == {"pre-install"}


def test_every_secret_the_pods_read_is_produced_once(docs, ours):
    produced = {d["metadata"]["name"]: set(d.get("data") or {}) for d in helm.by_kind(ours, "Secret")}
    again = {d["metadata"]["name"]: d for d in helm.by_kind(official_chart.render_airflow(), "Secret")}
    for secret in helm.by_kind(docs, "Secret"):
        name = secret["metadata"]["name"]
        # A chart Secret counts only when a rerun of `make up` leaves it as it is.
        if _install_once(secret) or secret.get("data") == again[name].get("data"):
            produced.setdefault(name, set()).update(secret.get("data") or {})
    missing = sorted({f"{where}: {name}/{key or '*'}" for where, name, key in _secret_refs(docs)
                      if name not in produced or (key and key not in produced[name])})
    assert missing == [], "read but not produced once:\n" + "\n".join(missing)


def test_task_logs_are_fetched_from_a_host_that_resolves(docs):
    cfg = _airflow_cfg(docs)
    scheduler = _workload(docs, "scheduler")
    if scheduler["kind"] == "StatefulSet":
        pytest.fail("scheduler is a StatefulSet: these values chose the pod-IP hostname instead")
    # A Deployment's pod name resolves nowhere, so the recorded host must be the pod IP.
    assert cfg.get("core", "hostname_callable", fallback=None) == POD_IP_CALLABLE
    # The callable exists in the Airflow of the lock (= the image's) and returns an address.
    module, _, function = POD_IP_CALLABLE.rpartition(".")
    assert ipaddress.ip_address(getattr(importlib.import_module(module), function)())
    # The log server checks the api-server's request with [api] secret_key: one Secret for both.
    def api_key(component):
        env = _container(_workload(docs, component), component)["env"]
        return next(e["valueFrom"]["secretKeyRef"] for e in env
                    if e["name"] == "AIRFLOW__API__SECRET_KEY")
    assert api_key("scheduler") == api_key("api-server")


def test_admin_password_comes_from_a_generated_secret(docs, ours, values):
    cfg = _airflow_cfg(docs)
    password_file = cfg.get("core", "simple_auth_manager_passwords_file", fallback="")
    assert password_file, "SimpleAuthManager writes a new password into each new pod"
    spec = helm.pod_spec(_workload(docs, "api-server"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(_workload(docs, "api-server"),
                                                            "api-server")["volumeMounts"]}
    folder = password_file.rpartition("/")[0]
    # Airflow opens the file for writing: it must be a writable copy, not the Secret volume.
    assert "emptyDir" in volumes[mounts[folder]]
    copier = next(c for c in spec.get("initContainers") or []
                  if password_file in (c.get("command") or []))
    source = next(volumes[m["name"]] for m in copier["volumeMounts"]
                  if "secret" in volumes[m["name"]])
    secret = helm.one(ours, "Secret", source["secret"]["secretName"])
    passwords = json.loads(base64.b64decode(secret["data"]["passwords.json"]))
    users = [u.split(":")[0] for u in values["config"]["core"]["simple_auth_manager_users"].split(",")]
    assert set(users) <= set(passwords)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_simple_auth_manager_keeps_the_copied_passwords(docs, ours, tmp_path, monkeypatch):
    # Run the api-server's init container command and Airflow's own SimpleAuthManager on the
    # rendered Secret: it must take the file as it is, not generate a new password.
    spec = helm.pod_spec(_workload(docs, "api-server"))
    copier = next(c for c in spec["initContainers"] if c["name"] == "copy-passwords")
    volumes = {v["name"]: v for v in spec["volumes"]}
    here = {m["mountPath"]: tmp_path / m["name"] for m in copier["volumeMounts"]}
    secret_dir = next(here[m["mountPath"]] for m in copier["volumeMounts"]
                      if "secret" in volumes[m["name"]])
    secret = helm.one(ours, "Secret", volumes["auth-secret"]["secret"]["secretName"])
    secret_dir.mkdir()
    (secret_dir / "passwords.json").write_bytes(base64.b64decode(secret["data"]["passwords.json"]))
    (tmp_path / "auth").mkdir()
    command = copier["command"]
    for mount, local in here.items():
        command = [arg.replace(mount, str(local)) for arg in command]
    subprocess.run(command, check=True)
    copy = pathlib.Path(command[-1])
    cfg = _airflow_cfg(docs)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                       cfg["core"]["simple_auth_manager_users"])
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(copy))
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    expected = json.loads(base64.b64decode(secret["data"]["passwords.json"]))
    SimpleAuthManager().init()
    assert SimpleAuthManager.get_passwords() == expected
    assert json.loads(copy.read_text()) == expected


def test_every_manifest_is_valid_for_kubernetes(docs):
    assert docs
    for doc in docs:
        helm.validate(doc)


def test_notes_print_no_warning():
    notes = official_chart.airflow_notes()
    assert "port-forward svc/" in notes
    assert "WARNING" not in notes, notes


# --- our values file --------------------------------------------------------------------------


def test_every_key_has_a_comment_above():
    lines = VALUES_FILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_]\w*:", line) and not line.startswith("    "):
            assert lines[number - 1].strip().startswith("#"), line


def test_airflow_version_matches_the_lock(values):
    pyproject = tomllib.loads((helm.ROOT / "pyproject.toml").read_text())
    pins = dict(d.split("==") for d in pyproject["project"]["dependencies"] if "==" in d)
    assert values["airflowVersion"] == values["defaultAirflowTag"] == pins["apache-airflow"]
    assert values["airflowVersion"].startswith("3.")


def test_make_up_installs_the_chart_version_these_tests_render():
    # The commands `make up` would run (make -n), not the makefile's text: a drift between the
    # version installed and the copy rendered here fails, whatever the variables are called.
    official_chart.require_chart()
    words = helm_installs(dry_run("up"))["apache-airflow/airflow"]
    rendered = yaml.safe_load((official_chart.AIRFLOW_CHART / "Chart.yaml").read_text())["version"]
    assert option_values(words, "--version") == [rendered]
    assert option_values(words, "-f")[0] == str(VALUES_FILE.relative_to(helm.ROOT))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("version", "passes"), [
    ("v3.18.4", False), ("v3.19.0", True), ("v3.19.2+g8f2c4a1", True), ("v4.0.1", True), ("", False),
])
def test_make_up_refuses_an_old_helm_in_one_line(tmp_path, version, passes):
    # No helm binary on these machines: a script answers `helm version --template` instead.
    result = make_with_fake_tool(tmp_path, "helm-version", "HELM", version)
    assert (result.returncode == 0) is passes, result.stderr
    if not passes:
        first = result.stderr.splitlines()[0]
        assert first.startswith("make up needs helm 3.19.0 or newer"), result.stderr


def test_runs_the_dag_with_pods(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    assert env["NORTHWIND_RUNTIME"] == "kubernetes"
    assert values["executor"] == "LocalExecutor"


def test_dag_folder_is_the_claim_of_the_plain_manifest(values):
    assert values["dags"]["persistence"]["enabled"] is True
    claims = [d for d in yaml.safe_load_all((helm.ROOT / "k8s" / "dags-pvc.yaml").read_text())
              if d["kind"] == "PersistentVolumeClaim"]
    assert values["dags"]["persistence"]["existingClaim"] == claims[0]["metadata"]["name"]


def test_metadata_database_comes_from_the_databases_chart(values):
    assert values["postgresql"]["enabled"] is False
    secret = helm.one(helm.render("northwind-databases"), "Secret",
                      values["data"]["metadataSecretName"])
    assert base64.b64decode(secret["data"]["connection"]).decode().startswith("postgresql://")


def test_airflow_secrets_are_the_ones_the_pipeline_chart_generates(values):
    generated = helm.load_values_file(helm.chart_dir("northwind-pipeline") / "values.yaml")
    names = generated["airflow"]["secrets"]
    assert names["create"] is True
    assert values["apiSecretKeySecretName"] == names["apiSecretKeySecretName"]
    assert values["jwtSecretName"] == names["jwtSecretName"]
    volumes = {v["name"]: v for v in values["apiServer"]["extraVolumes"]}
    assert volumes["auth-secret"]["secret"]["secretName"] == names["passwordsSecretName"]


def test_airflow_secrets_survive_uninstall_and_differ(ours):
    # Kept like the database passwords: a reinstall must find the same keys and login.
    names = helm.load_values_file(helm.chart_dir("northwind-pipeline") / "values.yaml")
    secrets = [helm.one(ours, "Secret", names["airflow"]["secrets"][key]) for key in
               ("apiSecretKeySecretName", "jwtSecretName", "passwordsSecretName")]
    for secret in secrets:
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    api_key, jwt = (base64.b64decode(next(iter(s["data"].values()))) for s in secrets[:2])
    assert len(api_key) >= 32 and len(jwt) >= 64 and api_key not in jwt


def test_airflow_gets_no_pipeline_database_credentials(values):
    # No DAG uses a connection id; the step pods carry their own credentials.
    pipeline_secrets = {"northwind-source-db", "northwind-warehouse-db"}
    assert not [item for item in values.get("secret") or []
                if item["secretName"] in pipeline_secrets]
    assert not [item for item in values["env"] if item["name"].startswith("AIRFLOW_CONN_")]


def test_pod_launching_is_granted_once(values):
    # The chart's grant is off, so our chart's Role must be on and bound to the scheduler.
    assert values["allowPodLaunching"] is False
    pipeline = helm.load_values_file(helm.chart_dir("northwind-pipeline") / "values.yaml")
    assert pipeline["podLauncher"]["enabled"] is True


def test_login_has_no_literal_password(values):
    core = values["config"]["core"]
    assert core["auth_manager"].endswith("SimpleAuthManager")
    assert all(user.count(":") == 1 for user in core["simple_auth_manager_users"].split(","))
    assert values["createUserJob"]["enabled"] is False

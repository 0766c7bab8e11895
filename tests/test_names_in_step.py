"""One source of truth for shared names: dags/northwind/cluster.env.

The charts' defaults, the values `make up` passes with --set, the Airflow values, the plain
manifests, the kind config and the DAG's step pods must all say what cluster.env says. The file is
read with the DAG's own parser (``northwind.cluster.parse_env_file``), the only one.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm
import pytest
import yaml

ROOT = helm.ROOT
CLUSTER_ENV = ROOT / "dags" / "northwind" / "cluster.env"
CLUSTER_MK = ROOT / "mk" / "cluster.mk"


def cluster_env(path: Path = CLUSTER_ENV) -> dict[str, str]:
    """Every name of cluster.env, parsed as the DAG parses it."""
    from northwind.cluster import parse_env_file

    return parse_env_file(path.read_text(encoding="utf-8"), str(path))


def disagreements(place: str, names: Mapping[str, Any]) -> list[str]:
    """Compare ``names`` (cluster.env KEY -> value used at ``place``) with cluster.env."""
    truth = cluster_env()
    problems = []
    for key, value in names.items():
        if key not in truth:
            problems.append(f"{place}: {key} is not a cluster.env name")
        elif str(value) != truth[key]:
            problems.append(f"{place}: {key}={value!r}, cluster.env says {truth[key]!r}")
    return problems


def assert_agrees(place: str, names: Mapping[str, Any]) -> None:
    """Fail with every disagreement between ``names`` used at ``place`` and cluster.env."""
    problems = disagreements(place, names)
    assert not problems, "\n".join(problems)


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for key in dotted.split("."):
        node = node[key]
    return node


def make_sets() -> dict[str, list[tuple[str, str]]]:
    """The `--set path=$(VAR)` pairs of mk/cluster.mk, per make variable (DATABASES_SETS, ...)."""
    text = CLUSTER_MK.read_text().replace("\\\n", " ")
    sets: dict[str, list[tuple[str, str]]] = {}
    for match in re.finditer(r"^(\w+_SETS)\s*=(.*)$", text, re.MULTILINE):
        pairs = re.findall(r"--set(?:-string)?\s+([\w.]+)=\$\((\w+)\)", match.group(2))
        sets[match.group(1)] = pairs
    return sets


SETS_CHART = {"DATABASES_SETS": "northwind-databases", "PIPELINE_SETS": "northwind-pipeline",
              "OBJECTSTORE_SETS": "northwind-objectstore"}


def test_cluster_env_has_every_shared_name():
    assert set(cluster_env()) >= {
        "CLUSTER_NAME", "NAMESPACE", "IMAGE_REPOSITORY", "IMAGE_TAG", "DATA_PVC",
        "DATA_MOUNT_PATH", "SOURCE_DB_SECRET", "WAREHOUSE_DB_SECRET", "AIRFLOW_DB_SECRET",
        "SOURCE_DB_HOST",
        "WAREHOUSE_DB_HOST", "DB_PORT", "SOURCE_DB_NAME", "WAREHOUSE_DB_NAME",
        "MELTANO_PROJECT_DIR", "AIRFLOW_RELEASE", "DATABASES_RELEASE", "STEP_SERVICE_ACCOUNT",
    }


def test_make_passes_cluster_env_names_to_the_charts():
    sets = make_sets()
    assert set(sets) == set(SETS_CHART)
    truth = cluster_env()
    for variable, pairs in sets.items():
        assert pairs, f"{variable} passes nothing"
        for _, name in pairs:
            assert name in truth, f"{variable} uses $({name}), which cluster.env lacks"


def test_chart_defaults_equal_what_make_passes():
    # So that `helm install` without the Makefile gives the same cluster as `make up`.
    for variable, chart in SETS_CHART.items():
        if variable == "OBJECTSTORE_SETS" and cluster_env()["OBJECTSTORE_ENABLED"] != "true":
            continue  # a bucket elsewhere: `make up` installs no store, its defaults stay its own
        defaults = helm.load_values_file(helm.chart_dir(chart) / "values.yaml")
        assert_agrees(
            f"charts/{chart}/values.yaml",
            {name: _get(defaults, path) for path, name in make_sets()[variable]},
        )


def test_rendered_databases_use_the_names():
    docs = helm.render("northwind-databases")
    services = {d["metadata"]["name"] for d in helm.by_kind(docs, "Service")}
    secrets = {d["metadata"]["name"] for d in helm.by_kind(docs, "Secret")}
    truth = cluster_env()
    assert {truth["SOURCE_DB_HOST"], truth["WAREHOUSE_DB_HOST"]} <= services
    assert {truth["SOURCE_DB_SECRET"], truth["WAREHOUSE_DB_SECRET"],
            truth["AIRFLOW_DB_SECRET"]} <= secrets
    job = helm.by_kind(docs, "Job")[0]
    image = helm.pod_spec(job)["containers"][0]["image"]
    assert image == f"{truth['IMAGE_REPOSITORY']}:{truth['IMAGE_TAG']}"


def test_rendered_pipeline_uses_the_names():
    docs = helm.render("northwind-pipeline")
    config = helm.by_kind(docs, "ConfigMap")[0]["data"]
    image_repository, _, image_tag = config["NORTHWIND_IMAGE"].rpartition(":")
    # The step pods (STEP_NAMESPACE) name the databases' Services with their namespace.
    service, _, namespace = config["SOURCE_PGHOST"].removesuffix(".svc").partition(".")
    assert_agrees("northwind-pipeline ConfigMap and Role", {
        "NAMESPACE": namespace,
        "STEP_NAMESPACE": helm.by_kind(docs, "Role")[0]["metadata"]["namespace"],
        "IMAGE_REPOSITORY": image_repository,
        "IMAGE_TAG": image_tag,
        "DATA_PVC": config["NORTHWIND_DATA_PVC"],
        "DATA_MOUNT_PATH": config["NORTHWIND_DATA_ROOT"],
        "MELTANO_PROJECT_DIR": config["MELTANO_PROJECT_ROOT"],
        "SOURCE_DB_HOST": service,
        "WAREHOUSE_DB_HOST": config["WAREHOUSE_PGHOST"].partition(".")[0],
        "DB_PORT": config["SOURCE_PGPORT"],
        "SOURCE_DB_NAME": config["SOURCE_PGDATABASE"],
        "WAREHOUSE_DB_NAME": config["WAREHOUSE_PGDATABASE"],
    })
    binding = helm.by_kind(docs, "RoleBinding")[0]
    truth = cluster_env()
    assert f"{truth['AIRFLOW_RELEASE']}-scheduler" in {s["name"] for s in binding["subjects"]}


def test_airflow_values_use_the_names():
    values = helm.load_values_file(helm.CHARTS / "airflow" / "values.yaml")
    env = {item["name"]: item["value"] for item in values["env"]}
    repository, _, tag = env["NORTHWIND_IMAGE"].rpartition(":")
    assert_agrees("charts/airflow/values.yaml", {
        "IMAGE_REPOSITORY": repository,
        "IMAGE_TAG": tag,
        "AIRFLOW_DB_SECRET": values["data"]["metadataSecretName"],
    })


#: Every database with Secrets you create yourself: the path docs/kubernetes.md recommends.
OWN_SECRETS = {**{db: {"auth": {"create": False}} for db in ("source", "warehouse", "airflowMetadata")},
               "tls": {"create": False}}


def _secret_refs(docs) -> set[str]:
    """The Secret names every pod spec in ``docs`` reads (env, envFrom, volumes)."""
    names = set()
    for doc in docs:
        spec = helm.pod_spec(doc)
        for container in helm.containers(spec) if spec else ():
            names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or []
                      if "secretKeyRef" in e.get("valueFrom", {})}
            names |= {e["secretRef"]["name"] for e in container.get("envFrom") or []
                      if "secretRef" in e}
        names |= {v["secret"]["secretName"] for v in (spec or {}).get("volumes") or []
                  if "secret" in v}
    return names


def test_own_secrets_are_read_under_one_name_by_every_consumer():
    # auth.create=false: the chart renders no Secret, so the names its own pods read are exactly
    # the Secrets the user must create; every other consumer must read within those names.
    databases = helm.render("northwind-databases", OWN_SECRETS)
    assert helm.by_kind(databases, "Secret") == []
    to_create = _secret_refs(databases)
    truth = cluster_env()
    app_secrets = {truth["SOURCE_DB_SECRET"], truth["WAREHOUSE_DB_SECRET"], truth["AIRFLOW_DB_SECRET"]}
    assert app_secrets <= to_create

    if str(dag_support.DAGS_FOLDER) not in sys.path:
        sys.path.insert(0, str(dag_support.DAGS_FOLDER))
    from northwind.pods import STEPS, step_pod_kwargs

    airflow = helm.load_values_file(helm.CHARTS / "airflow" / "values.yaml")
    readers = {
        "northwind-pipeline chart": _secret_refs(helm.render("northwind-pipeline")),
        "the DAG's step pods": {s.secret for step in STEPS for s in step_pod_kwargs(step)["secrets"]},
        "charts/airflow/values.yaml": {airflow["data"]["metadataSecretName"]}
        | {item["secretName"] for item in airflow.get("secret") or []},
    }
    for reader, names in readers.items():
        assert names <= to_create, f"{reader} reads {sorted(names - to_create)}, never created"


def test_the_dags_step_pods_use_the_names():
    from northwind.pods import EXTRACT_POSTGRES, step_pod_kwargs

    pod = step_pod_kwargs(EXTRACT_POSTGRES, backend="filesystem")
    repository, _, tag = pod["image"].rpartition(":")
    env = pod["env_vars"]
    (claim,) = [v.persistent_volume_claim.claim_name for v in pod["volumes"] if v.persistent_volume_claim]
    assert_agrees("dags/northwind/pods.py", {
        "STEP_NAMESPACE": pod["namespace"],
        "IMAGE_REPOSITORY": repository,
        "IMAGE_TAG": tag,
        "DATA_PVC": claim,
        "DATA_MOUNT_PATH": env["NORTHWIND_DATA_ROOT"],
        "STEP_SERVICE_ACCOUNT": pod["service_account_name"],
        "SOURCE_DB_SECRET": next(s.secret for s in pod["secrets"]),
        "SOURCE_DB_HOST": env["SOURCE_PGHOST"].partition(".")[0],
        "NAMESPACE": env["SOURCE_PGHOST"].removesuffix(".svc").partition(".")[2],
        "DB_PORT": env["SOURCE_PGPORT"],
        "SOURCE_DB_NAME": env["SOURCE_PGDATABASE"],
        "WAREHOUSE_DB_NAME": env["WAREHOUSE_PGDATABASE"],
    })


def test_plain_manifests_use_the_names():
    data = list(yaml.safe_load_all((ROOT / "data-pvc.yaml").read_text()))
    claim = next(d for d in data if d["kind"] == "PersistentVolumeClaim")
    namespace, steps = yaml.safe_load_all((ROOT / "k8s" / "namespace.yaml").read_text())
    kind_config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert_agrees("data-pvc.yaml, k8s/namespace.yaml, kind-config.yaml", {
        "DATA_PVC": claim["metadata"]["name"],
        "STEP_NAMESPACE": claim["metadata"]["namespace"],
        "CLUSTER_NAME": kind_config["name"],
    })
    assert_agrees("k8s/namespace.yaml", {"NAMESPACE": namespace["metadata"]["name"],
                                         "STEP_NAMESPACE": steps["metadata"]["name"]})
    truth = cluster_env()
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "namespace" in doc["metadata"]:
                place = str(path.relative_to(ROOT))
                assert doc["metadata"]["namespace"] in (truth["NAMESPACE"], truth["STEP_NAMESPACE"]), place


def test_disagreement_is_reported():
    # The check itself must bite, or every test above passes vacuously.
    assert disagreements("here", {"NAMESPACE": "elsewhere"})
    assert disagreements("here", {"NOT_A_NAME": "x"})
    assert not disagreements("here", {"NAMESPACE": cluster_env()["NAMESPACE"]})


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_step_configmap_holds_what_the_dag_gives_a_step_pod(backend):
    # The ConfigMap is the step env for anyone starting a step pod by hand (and the helm test
    # pod): every plain variable the DAG gives a step (but the day) is there, with its value.
    sys.path.insert(0, str(ROOT / "dags"))
    from northwind import pods

    docs = helm.render("northwind-pipeline", {"data": {"backend": backend}})
    config = helm.one(docs, "ConfigMap", "northwind-pipeline-step-env")["data"]
    dag = pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend=backend)["env_vars"]
    plain = {k: v for k, v in dag.items() if k not in ("RUN_DATE", pods.KEEP_DAYS_ENV)}
    assert {"NORTHWIND_DATA_ROOT", "MELTANO_DATABASE_URI", "WAREHOUSE_PGHOST"} <= plain.keys()
    assert {k: config.get(k) for k in plain} == plain

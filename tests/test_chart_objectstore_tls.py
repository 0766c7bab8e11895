"""Issue 22 point 16: the object store's S3 port is HTTPS only, and every client checks it.

The objectstore chart generates a CA once and a server certificate for the Service's names (kept
on upgrade, like the keys); the server serves S3 with it; the bucket Job, the `helm test` pod and
the DAG's step pods trust the CA's ConfigMap through ``AWS_CA_BUNDLE`` at an ``https://`` endpoint.
The store for real over TLS: tests/test_objectstore_server.py (rendered arguments) and
tests/test_s3_tls.py.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dag_support  # noqa: F401  (a throw-away Airflow home before anything imports airflow)
import helm
import helm_python
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store
from northwind import pods
from northwind.cluster import S3, S3Names
from objectstore_support import OBJECTSTORE, container_env
from test_names_in_step import cluster_env

TRUTH = cluster_env()
CA_CONFIGMAP = TRUTH["S3_CA_CONFIGMAP"]
TLS_SECRET = f"{TRUTH['OBJECTSTORE_HOST']}-tls"


def _data(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
    return doc["data"]


def _mounted_file(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """The (kind, name) of the volume whose mount holds ``path`` in ``container``."""
    folder, _, name = path.rpartition("/")
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    if "configMap" in volume:
        return "ConfigMap", volume["configMap"]["name"]
    return "Secret", volume["secret"]["secretName"]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return helm.render(OBJECTSTORE)


def test_the_server_certificate_names_the_service_and_the_ca_signs_it(docs):
    ca = x509.load_pem_x509_certificate(_data(helm.one(docs, "Secret", "northwind-objectstore-ca"))
                                        ["ca.crt"].encode())
    tls = helm.one(docs, "Secret", TLS_SECRET)
    assert tls["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(_data(tls)["tls.crt"].encode())
    key = serialization.load_pem_private_key(_data(tls)["tls.key"].encode(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    host, namespace = TRUTH["OBJECTSTORE_HOST"], TRUTH["NAMESPACE"]
    verifier = PolicyBuilder().store(Store([ca]))
    # The name S3_ENDPOINT uses, and the others a pod may use, verify as a client verifies them.
    assert TRUTH["S3_ENDPOINT"].split("//")[1].split(":")[0] == f"{host}.{namespace}.svc"
    for name in (host, f"{host}.{namespace}", f"{host}.{namespace}.svc",
                 f"{host}.{namespace}.svc.cluster.local", "localhost"):
        verifier.build_server_verifier(x509.DNSName(name)).verify(cert, [])
    with pytest.raises(x509.verification.VerificationError):
        verifier.build_server_verifier(x509.DNSName("example.com")).verify(cert, [])
    # The clients' ConfigMap, in both namespaces, is that CA's certificate and nothing else.
    for where in (None, TRUTH["STEP_NAMESPACE"]):
        config = helm.one(docs, "ConfigMap", CA_CONFIGMAP, namespace=where)
        assert x509.load_pem_x509_certificate(config["data"]["ca.crt"].encode()) == ca
        assert "PRIVATE KEY" not in json.dumps(config)


def test_the_server_serves_s3_with_that_certificate_only(docs):
    spec = helm.pod_spec(helm.by_kind(docs, "StatefulSet")[0])
    [container] = spec["containers"]
    args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
    for flag, key in (("-s3.cert.file", "tls.crt"), ("-s3.key.file", "tls.key")):
        assert args[flag].endswith(f"/{key}")
        assert _mounted_file(spec, container, args[flag]) == ("Secret", TLS_SECRET)
    assert "-s3.port.https" not in args  # HTTPS on the S3 port itself: no plain-HTTP twin
    assert [p["containerPort"] for p in container["ports"]] == [int(TRUTH["OBJECTSTORE_PORT"])]
    [service] = helm.by_kind(docs, "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [int(TRUTH["OBJECTSTORE_PORT"])]


def test_the_bucket_job_verifies_the_server_with_the_ca(docs):
    spec = helm.pod_spec(helm.by_kind(docs, "Job")[0])
    [container] = spec["containers"]
    env = container_env(container)
    assert env["AWS_ENDPOINT_URL"] == TRUTH["S3_ENDPOINT"]
    assert env["AWS_ENDPOINT_URL"].startswith("https://")
    assert _mounted_file(spec, container, env["AWS_CA_BUNDLE"]) == ("ConfigMap", CA_CONFIGMAP)
    script = helm.by_kind(docs, "ConfigMap")[0]["data"]["create_bucket.py"]
    assert 'tls_ca_file_path=os.environ.get("AWS_CA_BUNDLE")' in script


def test_your_own_certificates_render_no_tls_object_but_are_used():
    docs = helm.render(OBJECTSTORE, {"tls": {"create": False}})
    assert not [d for d in docs if d["metadata"]["name"] in (TLS_SECRET, CA_CONFIGMAP,
                                                             "northwind-objectstore-ca")]
    volumes = helm.pod_spec(helm.by_kind(docs, "StatefulSet")[0])["volumes"]
    assert TLS_SECRET in [v["secret"]["secretName"] for v in volumes if "secret" in v]


#: The objectstore chart's one `lookup` wrapper, replaced by known objects to render an upgrade.
_LIVE = re.compile(r'(\{\{- define "northwind-objectstore\.liveSecretData" -\}\}\n).*?(\{\{- end -\}\})',
                   re.DOTALL)


def _upgrade(live: dict[str, dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """The chart rendered as an upgrade finds the Secrets ``live`` (name -> rendered Secret)."""
    copy = folder / OBJECTSTORE
    shutil.copytree(helm.chart_dir(OBJECTSTORE), copy)
    helpers = copy / "templates" / "_helpers.tpl"
    data = json.dumps({name: secret["data"] for name, secret in live.items()})
    fake = "{{- index (fromJson `" + data + "`) .name | default dict | toJson -}}\n"
    text, count = _LIVE.subn(lambda m: m.group(1) + fake + m.group(2), helpers.read_text())
    assert count == 1, "the chart's lookup wrapper moved"
    helpers.write_text(text)
    return helm.render(OBJECTSTORE, chart=helm_python.Chart.load(copy))


def test_an_upgrade_keeps_the_ca_and_the_certificate(docs, tmp_path):
    kept = ("northwind-objectstore-ca", TLS_SECRET)
    live = {name: helm.one(docs, "Secret", name) for name in kept}

    again = _upgrade(live, tmp_path)

    for name in kept:
        assert helm.one(again, "Secret", name)["data"] == live[name]["data"]
        assert helm.one(again, "Secret", name)["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep"}
    assert helm.one(again, "ConfigMap", CA_CONFIGMAP) == helm.one(docs, "ConfigMap", CA_CONFIGMAP)
    # A fresh install makes a new CA: what the upgrade kept was not a constant.
    assert helm.one(helm.render(OBJECTSTORE), "Secret", TLS_SECRET)["data"] != live[TLS_SECRET]["data"]


# --- the clients: the DAG's step pods and the pipeline chart ----------------------------------


def test_step_pods_on_s3_trust_the_stores_ca_at_an_https_endpoint():
    kwargs = pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="s3")
    env = kwargs["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == S3.s3_endpoint and S3.s3_endpoint.startswith("https://")
    assert env[pods.S3_CA_ENV] == pods.S3_CA_PATH
    folder = pods.S3_CA_PATH.rpartition("/")[0]
    [mount] = [m for m in kwargs["volume_mounts"] if m.mount_path == folder]
    [volume] = [v for v in kwargs["volumes"] if v.name == mount.name]
    assert mount.read_only and volume.config_map.name == S3.s3_ca_configmap == CA_CONFIGMAP
    assert pods.S3_CA_ENV in kwargs["cluster_only_env"]  # a local run keeps its own
    # The file-system backend has no store to trust; a cloud bucket trusts the public CAs.
    for other in (pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="filesystem"),
                  pods.step_pod_kwargs(pods.LOAD_WAREHOUSE, backend="s3", s3=S3Names.from_mapping(
                      {**TRUTH, "S3_ENDPOINT": "", "S3_CA_CONFIGMAP": ""}))):
        assert pods.S3_CA_ENV not in other["env_vars"]
        assert not [v for v in other["volumes"] if v.name == pods.S3_CA_VOLUME]


def test_the_pipeline_chart_gives_the_step_env_and_the_helm_test_pod_the_ca():
    docs = helm.render("northwind-pipeline", {"data": {"backend": "s3"}})
    step_env = helm.one(docs, "ConfigMap", "northwind-pipeline-step-env")["data"]
    assert step_env["AWS_CA_BUNDLE"] == pods.S3_CA_PATH
    assert step_env["AWS_ENDPOINT_URL"] == TRUTH["S3_ENDPOINT"]
    probe = helm.pod_spec(helm.by_kind(docs, "Pod")[0])
    [container] = probe["containers"]
    assert _mounted_file(probe, container, pods.S3_CA_PATH) == ("ConfigMap", CA_CONFIGMAP)
    assert 'tls_ca_file_path=os.environ.get("AWS_CA_BUNDLE")' in container["args"][0]
    public = helm.render("northwind-pipeline", {"data": {"backend": "s3",
                                                         "s3": {"caConfigMapName": ""}}})
    assert "AWS_CA_BUNDLE" not in helm.one(public, "ConfigMap", "northwind-pipeline-step-env")["data"]
    assert CA_CONFIGMAP not in json.dumps(public)


def test_make_up_refuses_the_in_cluster_store_without_its_ca_configmap():
    up = ["make", "-s", "up-options", "DATA_BACKEND=s3", "S3_CA_CONFIGMAP=", "OBJECTSTORE_ENABLED=true"]
    result = subprocess.run(up, cwd=helm.ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("S3_CA_CONFIGMAP=: the in-cluster object store's certificate")
    result = subprocess.run([*up[:-1], "OBJECTSTORE_ENABLED=false"], cwd=helm.ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr  # a cloud bucket: the image's public CAs

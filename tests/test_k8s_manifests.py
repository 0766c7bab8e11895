"""Plain manifests (k8s/*.yaml, data-pvc.yaml) and kind-config.yaml."""

from pathlib import Path

import helm
import pytest
import yaml

ROOT = helm.ROOT
MANIFESTS = [*sorted((ROOT / "k8s").glob("*.yaml")), ROOT / "data-pvc.yaml"]


def _docs(path: Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_validates(path):
    docs = _docs(path)
    assert docs
    for doc in docs:
        helm.validate(doc)


def test_namespace_enforces_restricted():
    labels = _docs(ROOT / "k8s" / "namespace.yaml")[0]["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == f"v{helm.KUBE_VERSION[:4]}"


def _kind_mounts():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    return {m["containerPath"]: m for node in config["nodes"] for m in node["extraMounts"]}


@pytest.mark.parametrize(("path", "host_folder"), [
    (ROOT / "data-pvc.yaml", "./data"), (ROOT / "k8s" / "dags-pvc.yaml", "./dags")])
def test_volumes_are_kind_mounts_of_the_checkout(path, host_folder):
    volume, claim = (next(d for d in _docs(path) if d["kind"] == kind)
                     for kind in ("PersistentVolume", "PersistentVolumeClaim"))
    mount = _kind_mounts()[volume["spec"]["hostPath"]["path"]]
    assert mount["hostPath"] == host_folder
    assert (ROOT / host_folder).resolve().parent == ROOT or host_folder == "./data"
    # The claim binds exactly this volume and no StorageClass provisions another one.
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert volume["spec"]["claimRef"] == {
        "namespace": claim["metadata"]["namespace"], "name": claim["metadata"]["name"]}
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == ""
    assert set(claim["spec"]["accessModes"]) <= set(volume["spec"]["accessModes"])
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_data_claim_is_the_one_the_pipeline_chart_mounts():
    claim = next(d for d in _docs(ROOT / "data-pvc.yaml") if d["kind"] == "PersistentVolumeClaim")
    pipeline = helm.load_values_file(helm.chart_dir("northwind-pipeline") / "values.yaml")
    assert pipeline["data"]["claimName"] == claim["metadata"]["name"]
    # One definition: no chart templates the data claim a second time.
    for chart in helm.OWN_CHARTS:
        names = {d["metadata"]["name"] for d in helm.render(chart)
                 if d["kind"] == "PersistentVolumeClaim"}
        assert claim["metadata"]["name"] not in names


def test_dag_folder_is_mounted_read_only():
    assert _kind_mounts()["/northwind/dags"]["readOnly"] is True


def _node_matches(term, labels) -> bool:
    return all(
        (labels.get(e["key"]) in e["values"]) if e["operator"] == "In" else False
        for e in term.get("matchExpressions") or [])


def _nodes_serving(volume, nodes):
    """Indexes of the kind nodes a PersistentVolume's nodeAffinity allows (all when it has none)."""
    terms = (((volume["spec"].get("nodeAffinity") or {}).get("required") or {})
             .get("nodeSelectorTerms"))
    if not terms:
        return set(range(len(nodes)))
    return {i for i, node in enumerate(nodes)
            if any(_node_matches(term, node.get("labels") or {}) for term in terms)}


@pytest.mark.parametrize("config_path", sorted(ROOT.glob("kind-config*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("path", [ROOT / "data-pvc.yaml", ROOT / "k8s" / "dags-pvc.yaml"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_host_volumes_are_pinned_to_the_nodes_that_mount_them(path, config_path):
    volume = next(d for d in _docs(path) if d["kind"] == "PersistentVolume")
    config = yaml.safe_load(config_path.read_text())
    # A second node, as a user adds it for a multi-node test, gets neither label nor mounts.
    nodes = [*config["nodes"], {"role": "worker"}]
    serving = _nodes_serving(volume, nodes)
    assert serving, "no node can host the volume"
    for index in serving:
        mounts = {m["containerPath"] for m in nodes[index].get("extraMounts") or []}
        assert volume["spec"]["hostPath"]["path"] in mounts, f"node {index} lacks the folder"

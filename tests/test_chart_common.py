"""Checks every one of our charts must pass: lint, render, Kubernetes schemas, Pod Security
"restricted", labels, documented values and schema, NOTES.txt, no secret literals."""

from __future__ import annotations

import json
import re

import helm
import helm_python
import pytest
import yaml

CHARTS = helm.OWN_CHARTS
VALUE_SETS = ("default", "alt")


def _values(chart: str, which: str):
    return None if which == "default" else helm.alt_values(chart)


@pytest.mark.parametrize("which", VALUE_SETS)
@pytest.mark.parametrize("chart", CHARTS)
def test_lint_is_clean(chart, which):
    report = helm.lint(chart, _values(chart, which))
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error; 1 (info, e.g. "icon is recommended") is allowed.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("which", VALUE_SETS)
@pytest.mark.parametrize("chart", CHARTS)
def test_every_manifest_validates(chart, which):
    docs = helm.render(chart, _values(chart, which))
    assert docs
    for doc in docs:
        helm.validate(doc)


@pytest.mark.parametrize("which", VALUE_SETS)
@pytest.mark.parametrize("chart", CHARTS)
def test_workloads_meet_restricted_pod_security(chart, which):
    specs = [(d["kind"], d["metadata"]["name"], helm.pod_spec(d))
             for d in helm.render(chart, _values(chart, which))]
    for kind, name, spec in specs:
        if spec is not None:
            assert helm.restricted_violations(spec) == [], f"{kind}/{name}"


RESTRICTED_POD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "e", "emptyDir": {}}, {"name": "p", "persistentVolumeClaim": {
        "claimName": "x"}}],
}


def _with_container(**security):
    spec = json.loads(json.dumps(RESTRICTED_POD))
    spec["containers"][0]["securityContext"].update(security)
    return spec


def test_restricted_check_follows_container_overrides_and_volume_types():
    assert helm.restricted_violations(RESTRICTED_POD) == []
    # A container's own field overrides the pod's, either way.
    assert helm.restricted_violations(_with_container(runAsNonRoot=False))
    assert helm.restricted_violations(_with_container(seccompProfile={"type": "Unconfined"}))
    assert helm.restricted_violations(_with_container(runAsUser=0))
    assert helm.restricted_violations(_with_container(procMount="Unmasked"))
    assert helm.restricted_violations(_with_container(seLinuxOptions={"user": "system_u"}))
    # Only the listed volume types, not merely "no hostPath".
    for volume in ({"nfs": {"server": "x", "path": "/"}}, {"gitRepo": {"repository": "x"}},
                   {"iscsi": {}}, {"hostPath": {"path": "/"}}):
        spec = {**RESTRICTED_POD, "volumes": [{"name": "v", **volume}]}
        assert helm.restricted_violations(spec), volume
    spec = json.loads(json.dumps(RESTRICTED_POD))
    spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]
    assert helm.restricted_violations(spec)


def test_restricted_check_catches_violations():
    bad = {"containers": [{"name": "c", "securityContext": {"privileged": True}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    problems = helm.restricted_violations(bad)
    assert any("hostPath" in p for p in problems)
    assert any("privileged" in p for p in problems)
    assert any("ALL" in p for p in problems)
    assert any("seccomp" in p for p in problems)


@pytest.mark.parametrize("chart", CHARTS)
def test_every_object_has_the_standard_labels(chart):
    for doc in helm.render(chart):
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/component", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/part-of"] == "northwind"


@pytest.mark.parametrize("chart", CHARTS)
def test_every_values_key_has_a_comment_above(chart):
    lines = (helm.chart_dir(chart) / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_][\w]*:", line):
            above = lines[number - 1].strip() if number else ""
            where = f"values.yaml line {number + 1} ({line.strip()})"
            assert above.startswith("#"), f"{where} has no comment"


def _leaves(schema, path=()):
    if schema.get("type") == "object" and "properties" in schema:
        assert schema.get("additionalProperties") is False, f"{'.'.join(path)} allows unknown keys"
        for key, sub in schema["properties"].items():
            yield from _leaves(sub, (*path, key))
    else:
        yield path, schema


@pytest.mark.parametrize("chart", CHARTS)
def test_schema_documents_every_leaf_with_its_default(chart):
    directory = helm.chart_dir(chart)
    schema = json.loads((directory / "values.schema.json").read_text())
    values = yaml.safe_load((directory / "values.yaml").read_text())
    leaves = dict(_leaves(schema))
    for path, leaf in leaves.items():
        assert {"type", "default", "description"} <= set(leaf), ".".join(path)
        assert leaf["description"].strip(), ".".join(path)
        node = values
        for key in path:
            node = node[key]
        assert leaf["default"] == node, f"{'.'.join(path)}: schema default differs from values.yaml"

    def value_leaves(node, path=()):
        # A map the schema types as a whole (labels, resources.requests) is one leaf.
        if isinstance(node, dict) and node and path not in leaves:
            for key, sub in node.items():
                yield from value_leaves(sub, (*path, key))
        else:
            yield path

    assert set(value_leaves(values)) == set(leaves), "values.yaml and values.schema.json differ"


KUBERNETES_SHAPES = {
    "northwind-databases": [
        {"source": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}},
        {"warehouse": {"resources": {"requests": {"ephemeral-storage": "1Gi", "cpu": 0.5}}}},
        {"seed": {"resources": {"limits": {"cpu": 2, "nvidia.com/gpu": 1}}}},
        {"source": {"labels": {"team": "data", "example.com/cost-center": "42"}}},
    ],
    "northwind-pipeline": [
        {"connectionTest": {"resources": {"limits": {"cpu": "1", "ephemeral-storage": "2Gi"}}}},
        {"labels": {"example.com/team": "data"}},
    ],
    "northwind-objectstore": [
        {"server": {"resources": {"limits": {"cpu": 2, "ephemeral-storage": "1Gi"}}}},
        {"bucket": {"resources": {"requests": {"cpu": "0.1"}}}},
        {"labels": {"example.com/team": "data"}},
    ],
}


@pytest.mark.parametrize("chart", CHARTS)
def test_schema_accepts_kubernetes_resource_and_label_shapes(chart):
    for values in KUBERNETES_SHAPES[chart]:
        docs = helm.render(chart, values)
        for doc in docs:
            helm.validate(doc)
    with pytest.raises(helm_python.HelmValuesError):
        helm.render(chart, {"labels": {"team": 1}})


@pytest.mark.parametrize("chart", CHARTS)
def test_schema_rejects_unknown_keys_and_wrong_types(chart):
    with pytest.raises(helm_python.HelmValuesError):
        helm.render(chart, {"replicaCount": 3})
    with pytest.raises(helm_python.HelmValuesError):
        helm.render(chart, {"labels": "not-a-map"})


@pytest.mark.parametrize("chart", CHARTS)
def test_notes_tell_the_exact_port_forward(chart):
    text = helm.notes(chart)
    assert re.search(r"kubectl --namespace northwind port-forward svc/[\w-]+ \d+:\d+", text)


SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key)$", re.IGNORECASE)
# Keys whose value names a Secret instead of holding one.
SECRET_REFERENCE = re.compile(r"(secretName|existingSecret|secretKey|envName)$")


def _literal_secrets(node, path=()):
    if isinstance(node, dict):
        for key, sub in node.items():
            yield from _literal_secrets(sub, (*path, str(key)))
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _literal_secrets(sub, (*path, str(index)))
    elif (path and SECRET_KEY.search(path[-1]) and not SECRET_REFERENCE.search(path[-1])
          and node not in (None, "") and not isinstance(node, bool)):  # automountServiceAccountToken
        yield ".".join(path)


@pytest.mark.parametrize(
    "values_file",
    [*(helm.chart_dir(c) / "values.yaml" for c in CHARTS),
     *(helm.chart_dir(c) / "ci" / "alt-values.yaml" for c in CHARTS),
     helm.CHARTS / "airflow" / "values.yaml"],
    ids=lambda p: str(p.relative_to(helm.CHARTS)),
)
def test_no_secret_literal_in_values(values_file):
    assert list(_literal_secrets(yaml.safe_load(values_file.read_text()))) == []


def test_secret_literal_scan_bites():
    assert list(_literal_secrets({"db": {"password": "hunter2"}})) == ["db.password"]
    assert list(_literal_secrets({"db": {"existingSecret": "mine"}})) == []


@pytest.mark.parametrize("chart", CHARTS)
def test_no_secret_literal_in_templates(chart):
    for path in (helm.chart_dir(chart) / "templates").rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                # A password may only come from a template expression or a secretKeyRef.
                match = re.match(r"(?i)^\s*(?:-\s*)?(\w*password|secret)\s*:\s*(\S+)", line)
                if match and not match.group(2).startswith(("{{", "|")):
                    pytest.fail(f"{path.name}: literal {line.strip()}")

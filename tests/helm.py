"""Render our Helm charts in-process with real Helm (helm-python-sdk) and check the manifests.

Shared by the tests/test_chart_*.py files: render a chart with given values, pick objects,
validate them against the Kubernetes schemas of one pinned version, and list Pod Security
"restricted" violations of any pod spec.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
#: Our own charts (charts/airflow holds only a values file for the official chart).
OWN_CHARTS = ("northwind-databases", "northwind-pipeline", "northwind-objectstore")
#: The Kubernetes version every manifest is validated against (kind's current node line).
KUBE_VERSION = "1.33.0"
NAMESPACE = "northwind"

#: Kinds whose spec holds a pod template, and the path to it.
POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def chart_dir(name: str) -> Path:
    return CHARTS / name


@functools.cache
def _chart(name: str) -> helm_python.Chart:
    return helm_python.Chart.load(chart_dir(name))


def load_values_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(
    name: str,
    values: dict[str, Any] | None = None,
    *,
    release: str | None = None,
    namespace: str = NAMESPACE,
    chart: helm_python.Chart | None = None,
) -> list[dict[str, Any]]:
    """Render chart ``name`` like `helm template` and return its objects (NOTES.txt excluded).

    ``chart``: an already loaded copy of the chart to render instead (see :func:`with_live_secrets`).
    """
    chart = chart or _chart(name)
    # Helm validates values against values.schema.json at install; do the same here.
    chart.validate_schema(chart.merge_values(values))
    manifests = chart.render(
        values=values, name=release or name, namespace=namespace, is_install=True
    )
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


#: The one template of northwind-databases that calls `lookup` (a live object as JSON).
LIVE_OBJECT_TEMPLATE = re.compile(
    r'(\{\{- define "northwind-databases\.liveObject" -\}\}\n).*?(\{\{- end -\}\})', re.DOTALL)


def live_secret(name: str, **keys: str) -> tuple[str, dict[str, Any]]:
    """A live Secret for :func:`with_live_objects`, from plain values."""
    data = {key: base64.b64encode(value.encode()).decode() for key, value in keys.items()}
    return f"Secret/{name}", {"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": name}, "data": data}


def live_statefulset(name: str) -> tuple[str, dict[str, Any]]:
    """A live StatefulSet for :func:`with_live_objects` (only its existence matters)."""
    return f"StatefulSet/{name}", {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                   "metadata": {"name": name}}


def with_live_objects(live: Iterable[tuple[str, dict[str, Any]]], directory: Path
                      ) -> helm_python.Chart:
    """A copy of northwind-databases in ``directory`` whose `lookup` finds the objects ``live``.

    Offline rendering makes `lookup` return nothing, which hides every upgrade path. The copy
    replaces only the body of the chart's one lookup wrapper by these objects ("Kind/name" ->
    object), so all the rest of the chart is rendered as it is.
    """
    copy = directory / "northwind-databases"
    shutil.copytree(chart_dir("northwind-databases"), copy)
    objects = json.dumps(dict(live))
    helpers = copy / "templates" / "_helpers.tpl"
    fake = ("{{- index (fromJson `" + objects + "`) (printf \"%s/%s\" .kind .name)"
            " | default dict | toJson -}}\n")
    text, count = LIVE_OBJECT_TEMPLATE.subn(lambda m: m.group(1) + fake + m.group(2),
                                            helpers.read_text())
    assert count == 1, "the chart's lookup wrapper moved: update LIVE_OBJECT_TEMPLATE"
    helpers.write_text(text)
    return helm_python.Chart.load(copy)


def notes(name: str, values: dict[str, Any] | None = None) -> str:
    """The rendered NOTES.txt of chart ``name``."""
    manifests = _chart(name).render(values=values, name=name, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def lint(name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `helm lint --strict` on chart ``name``."""
    return helm_python.lint(
        chart_dir(name), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )


def alt_values(name: str) -> dict[str, Any]:
    """The alternative values file of chart ``name`` (charts/<name>/ci/alt-values.yaml)."""
    return load_values_file(chart_dir(name) / "ci" / "alt-values.yaml")


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str, name: str, namespace: str | None = None
        ) -> dict[str, Any]:
    """The object of ``kind`` named ``name``; fails when there is not exactly one.

    ``namespace`` picks among copies (objects without one are the release's, :data:`NAMESPACE`);
    by default the release's copy of an object rendered into several namespaces.
    """
    found = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name]
    if namespace or len(found) > 1:
        found = [doc for doc in found if doc["metadata"].get("namespace", NAMESPACE)
                 == (namespace or NAMESPACE)]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def validate(doc: dict[str, Any]) -> None:
    """Validate one object against the strict Kubernetes schema of KUBE_VERSION."""
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for other kinds."""
    path = POD_TEMPLATE_PATHS.get(doc.get("kind", ""))
    if path is None:
        return None
    node: Any = doc
    for key in path:
        node = node[key]
    return node


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container of a pod spec: init, regular and ephemeral."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


#: Volume types the "restricted" profile allows (Pod Security Standards, "Volume Types").
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
    "persistentVolumeClaim", "projected", "secret"})
#: Sysctls the "baseline" profile allows.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")
APPARMOR_ALLOWED = ("RuntimeDefault", "Localhost")


def _selinux_problems(where: str, options: dict[str, Any] | None) -> list[str]:
    options = options or {}
    problems = []
    if options.get("type", "") not in SELINUX_TYPES:
        problems.append(f"{where}: seLinuxOptions.type {options['type']!r}")
    problems += [f"{where}: seLinuxOptions.{key} is set" for key in ("user", "role") if options.get(key)]
    return problems


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """List what in a pod spec breaks the Pod Security "restricted" profile (empty: it meets it).

    Follows the Pod Security Standards as written (baseline + restricted, Kubernetes 1.33):
    a container-level field overrides the pod-level one (``runAsNonRoot: false`` or an
    ``Unconfined`` seccomp profile in a container breaks the profile whatever the pod says), and
    volumes may only be of the listed types.
    """
    problems = []
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"pod sets {flag}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is a {', '.join(sorted(kinds))} volume")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("pod is a Windows HostProcess")
    problems += _selinux_problems("pod", pod_sc.get("seLinuxOptions"))
    unsafe = [s["name"] for s in pod_sc.get("sysctls") or [] if s["name"] not in SAFE_SYSCTLS]
    if unsafe:
        problems.append(f"pod sets unsafe sysctls {unsafe}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as uid 0")
    if pod_sc.get("runAsNonRoot") is False:
        problems.append("pod sets runAsNonRoot false")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_ALLOWED:
        problems.append(f"pod seccompProfile is {pod_seccomp}")
    pod_apparmor = (pod_sc.get("appArmorProfile") or {}).get("type")
    if pod_apparmor is not None and pod_apparmor not in APPARMOR_ALLOWED:
        problems.append(f"pod appArmorProfile is {pod_apparmor}")
    for container in containers(spec):
        name = container["name"]
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{name}: Windows HostProcess")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {sc['procMount']}")
        problems += _selinux_problems(name, sc.get("seLinuxOptions"))
        if [p for p in container.get("ports") or [] if p.get("hostPort")]:
            problems.append(f"{name}: uses a hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        # The container's own field wins; the pod's applies only where the container says nothing.
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_ALLOWED:
            problems.append(f"{name}: seccompProfile is not RuntimeDefault/Localhost")
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor is not None and apparmor not in APPARMOR_ALLOWED:
            problems.append(f"{name}: appArmorProfile is {apparmor}")
    return problems

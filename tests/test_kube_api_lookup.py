"""`make up` looks up the Kubernetes API's addresses and hands them to the pipeline chart.

Issue 22, point 5: the launching pods may reach only the API server's endpoints. The chart's
NetworkPolicy takes them from networkPolicy.kubeApi.addresses; this runs the very shell words
`make -n up` prints for that --set, with a kubectl script that answers like a kind cluster, then
renders the chart with the result: the egress rule names exactly those addresses.
"""

import ipaddress
import re
import shutil
import subprocess

import helm
import pytest

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

CLUSTER_IP = "10.96.0.1"
ENDPOINTS = ["172.18.0.2", "fc00:f853:ccd:e793::2"]


def _fake_kubectl(tmp_path, endpoints: list[str]):
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *"get service kubernetes"*) printf %s {CLUSTER_IP} ;;\n'
        f'  *"get endpointslices"*) printf %s "{" ".join(endpoints)}" ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n")
    script.chmod(0o755)
    return script


def _looked_up(kubectl) -> list[str]:
    """The addresses `make up` would pass: its printed --set value, evaluated by sh."""
    printed = subprocess.run(["make", "-n", "up", f"KUBECTL={kubectl}"], cwd=helm.ROOT,
                             capture_output=True, text=True, check=True).stdout
    match = re.search(r'--set ("networkPolicy\.kubeApi\.addresses=.*?") --wait', printed)
    assert match, "make up passes no networkPolicy.kubeApi.addresses"
    value = subprocess.run(["sh", "-c", f"printf %s {match.group(1)}"], capture_output=True, text=True,
                           check=True).stdout
    key, _, items = value.partition("=")
    assert key == "networkPolicy.kubeApi.addresses" and items.startswith("{") and items.endswith("}")
    return items[1:-1].split(",")


def test_make_up_passes_the_service_ip_and_every_endpoint(tmp_path):
    addresses = _looked_up(_fake_kubectl(tmp_path, ENDPOINTS))
    assert addresses == [CLUSTER_IP, *ENDPOINTS]
    docs = helm.render("northwind-pipeline", {"networkPolicy": {"kubeApi": {"addresses": addresses}}})
    policy = helm.one(docs, "NetworkPolicy", "northwind-pipeline-scheduler-kube-api")
    (rule,) = policy["spec"]["egress"]
    cidrs = [block["ipBlock"]["cidr"] for block in rule["to"]]
    assert [ipaddress.ip_network(c) for c in cidrs] == [ipaddress.ip_network(a) for a in addresses]
    assert all(ipaddress.ip_network(c).num_addresses == 1 for c in cidrs)
    assert {p["port"] for p in rule["ports"]} == {443, 6443}

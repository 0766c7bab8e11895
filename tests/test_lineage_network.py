"""OpenLineage on a cluster: the step pods and the scheduler reach the configured endpoint only.

With ``networkPolicy.lineage.addresses`` set, a policy in each namespace opens TCP to those
addresses and ports for the pods that send events; without it, the default deny stands.
"""

import dag_support  # noqa: F401, I001 - first: it points Airflow at a private home before the import

import helm
import pytest
from netpol import Endpoint, allowed
from test_network_policies import NS, STEPS_NS, _in_namespace, pods, rendered  # noqa: F401

from northwind.pods import STEPS, step_pod_kwargs

MARQUEZ = Endpoint("marquez", None, address="10.96.12.34")
ELSEWHERE = Endpoint("another host", None, address="10.96.99.1")
LINEAGE_VALUES = {"networkPolicy": {
    "kubeApi": {"addresses": ["172.18.0.2"]},
    "lineage": {"addresses": ["10.96.12.34"], "ports": [5000]},
}}


def _policies(rendered, values):  # noqa: F811 - the module fixture of test_network_policies
    pipeline = _in_namespace(helm.render("northwind-pipeline", values))
    docs = [*rendered["plain"], *rendered["databases"], *pipeline, *rendered["airflow"]]
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def test_without_an_endpoint_no_pod_reaches_it(rendered, pods):  # noqa: F811
    policies = _policies(rendered, {})
    for name, pod in pods.items():
        if pod.namespace in (NS, STEPS_NS):
            assert not allowed(policies, pod, MARQUEZ, 5000), name


@pytest.mark.parametrize("step", STEPS)
def test_each_step_and_the_scheduler_reach_the_endpoint_and_nothing_else(rendered, pods, step):  # noqa: F811
    policies = _policies(rendered, LINEAGE_VALUES)
    pod = Endpoint(step, STEPS_NS, step_pod_kwargs(step)["labels"])
    for sender in (pod, pods["airflow-scheduler"]):
        assert allowed(policies, sender, MARQUEZ, 5000), sender.name
        assert not allowed(policies, sender, MARQUEZ, 22), sender.name
        assert not allowed(policies, sender, ELSEWHERE, 5000), sender.name
    assert not allowed(policies, pods["airflow-api-server"], MARQUEZ, 5000)
    assert not allowed(policies, pods["step-stranger"], MARQUEZ, 5000)


def test_a_cidr_block_is_kept_as_given():
    docs = helm.render("northwind-pipeline", {"networkPolicy": {"lineage": {
        "addresses": ["10.96.0.0/12"], "ports": [5000, 443]}}})
    [step_side] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith(
        "-lineage") and d["metadata"].get("namespace") == STEPS_NS]
    rule = step_side["spec"]["egress"][0]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.96.0.0/12"}}]
    assert [p["port"] for p in rule["ports"]] == [5000, 443]


def test_the_step_pod_gets_the_endpoint_but_never_the_key():
    from northwind.operators import forwarded_lineage_settings

    environ = {"OPENLINEAGE_URL": "http://marquez.lineage.svc:5000", "OPENLINEAGE_NAMESPACE": "nw",
               "OPENLINEAGE_ENDPOINT": "api/v1/lineage", "OPENLINEAGE_API_KEY": "secret-key",
               "OPENLINEAGE__TRANSPORT__AUTH__API_KEY": "secret-key", "PATH": "/usr/bin"}
    assert forwarded_lineage_settings(environ) == {
        "OPENLINEAGE_URL": "http://marquez.lineage.svc:5000", "OPENLINEAGE_NAMESPACE": "nw",
        "OPENLINEAGE_ENDPOINT": "api/v1/lineage"}

"""Evaluate Kubernetes NetworkPolicies on given pods, as the API documents their semantics.

Enough of the model to check the project's flows without a cluster: pod and namespace selectors
(matchLabels, matchExpressions), ipBlock peers (cidr, except) for addresses outside the pod
network, policyTypes, numbered and named ports, protocols, rules without peers (any destination).
A pod selected by no policy of a direction is open in that direction; once selected, a
connection passes only if some selecting policy allows it, on both ends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, named container ports) or, with ``namespace`` None, an address
    outside the pod network (such as the Kubernetes API server, at ``address``)."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    address: str | None = None


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector matches ``labels`` (an empty selector matches everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        # Only addresses outside the pod network are modelled (pods have no address here).
        if other.namespace is not None or other.address is None:
            return False
        address = ipaddress.ip_address(other.address)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
    if other.namespace is None:  # outside the pod network: no pod or namespace selector matches
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list | None, destination: Endpoint, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = destination.ports.get(wanted)
        if wanted is not None and wanted <= port <= item.get("endPort", wanted):
            return True
    return False


def _allows(policies: Iterable[Mapping], direction: str, subject: Endpoint, peer: Endpoint,
            destination: Endpoint, port: int, protocol: str) -> bool:
    """Whether ``subject``'s policies of ``direction`` let it talk to ``peer``."""
    if subject.namespace is None:
        return True  # nothing filters outside the pod network
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == subject.namespace
                 and direction in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"].get("podSelector"), subject.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(x, subject.namespace, peer) for x in peers)) and (
                    _port_matches(rule.get("ports"), destination, port, protocol)):
                return True
    return False


def allowed(policies: Iterable[Mapping], source: Endpoint, destination: Endpoint, port: int,
            protocol: str = "TCP") -> bool:
    """Whether ``source`` may open ``port`` on ``destination`` under ``policies`` (all namespaces)."""
    policies = list(policies)
    return (_allows(policies, "Egress", source, destination, destination, port, protocol)
            and _allows(policies, "Ingress", destination, source, destination, port, protocol))

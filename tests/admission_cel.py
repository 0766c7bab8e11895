"""Evaluate a rendered ValidatingAdmissionPolicy the way the API server does, with a real CEL.

The evaluator is PyPI's common-expression-language (module ``cel``). The order is the API
server's: the policy's matchConditions (all must hold, else the policy does not apply), then its
variables in order (each sees the ones before), then every validation. ``object`` is the pod as
it reaches validating admission (after the mutating plugins), ``request`` the admission request.
"""

from __future__ import annotations

from typing import Any

import cel

#: What the API server's ServiceAccount admission plugin adds to a pod whose token is mounted,
#: before any validating policy sees it (the volume's name ends in five random characters).
TOKEN_VOLUME = {
    "name": "kube-api-access-x7k2q",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    },
}
TOKEN_MOUNT = {"name": TOKEN_VOLUME["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
               "readOnly": True}


def with_token_mounted(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` as admission mutates it when its ServiceAccount token is mounted (a copy)."""
    spec = pod["spec"]
    if spec.get("automountServiceAccountToken") is False:
        return pod
    containers = [{**c, "volumeMounts": [*(c.get("volumeMounts") or []), TOKEN_MOUNT]}
                  for c in spec["containers"]]
    return {**pod, "spec": {**spec, "containers": containers,
                            "volumes": [*(spec.get("volumes") or []), TOKEN_VOLUME]}}


def refusals(policy: dict[str, Any], pod: dict[str, Any], *, user: str,
             operation: str = "CREATE") -> list[str] | None:
    """The messages of the validations ``pod`` fails.

    Args:
        policy: A rendered ValidatingAdmissionPolicy.
        pod: The pod of the request (``object``).
        user: ``request.userInfo.username``.
        operation: ``request.operation``.

    Returns:
        None when a matchCondition excludes the request (the policy does not apply), else the
        messages of the failed validations (empty: admitted).
    """
    spec = policy["spec"]
    context = cel.Context()
    context.add_variable("object", pod)
    context.add_variable("request", {"operation": operation, "userInfo": {"username": user},
                                     "namespace": pod["metadata"].get("namespace", "")})
    if not all(cel.evaluate(c["expression"], context) is True for c in spec.get("matchConditions") or []):
        return None
    variables: dict[str, Any] = {}
    for variable in spec.get("variables") or []:
        context.add_variable("variables", variables)
        variables[variable["name"]] = cel.evaluate(variable["expression"], context)
    context.add_variable("variables", variables)
    return [v["message"] for v in spec["validations"] if cel.evaluate(v["expression"], context) is not True]

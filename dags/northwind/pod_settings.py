"""The pod-wide settings of every step pod: its security contexts and where it runs.

Pure builders of Kubernetes models from the shared names (``cluster.env``) and
``pod-scheduling.yaml``; :func:`northwind.pods.step_pod_kwargs` puts them into each step's pod.
"""

import json

from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from northwind.cluster import CLUSTER, SCHEDULING, ClusterNames, PodScheduling


def security_contexts(
    names: ClusterNames = CLUSTER,
) -> tuple[k8s.V1PodSecurityContext, k8s.V1SecurityContext]:
    """Return the pod and container security contexts of the Kubernetes "restricted" profile.

    The pod's ``fsGroup`` is the data tree's group (``DATA_GID``): the step process holds it, so
    it reads and writes the tree's ``0770``/``0660`` entries that the host user or another step
    made, and nobody outside the group does. A hostPath volume is not chowned by the kubelet
    (``make up`` gives ``./data`` the group); a real volume is, once (``OnRootMismatch``).
    """
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    pod = k8s.V1PodSecurityContext(run_as_non_root=True, seccomp_profile=seccomp,
                                   fs_group=int(names.data_gid),
                                   fs_group_change_policy="OnRootMismatch")
    container = k8s.V1SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
        seccomp_profile=seccomp,
    )
    return pod, container


class _Raw:
    """A response-like holder: the Kubernetes client deserialises camelCase JSON from ``.data``."""

    def __init__(self, value: object) -> None:
        self.data = json.dumps(value)


def scheduling_kwargs(scheduling: PodScheduling = SCHEDULING) -> dict:
    """Return imagePullSecrets, nodeSelector, tolerations and affinity as operator kwargs.

    The file holds Kubernetes' own (camelCase) shapes, as the charts take them; the client's
    deserialiser turns them into the models the operator expects.

    Example:
        >>> scheduling_kwargs(PodScheduling(image_pull_secrets=[{"name": "regcred"}]))["image_pull_secrets"]
        [{'name': 'regcred'}]
    """
    client = ApiClient()
    affinity = scheduling.affinity
    return {
        "image_pull_secrets": [
            client.deserialize(_Raw(s), "V1LocalObjectReference") for s in scheduling.image_pull_secrets
        ],
        "node_selector": dict(scheduling.node_selector),
        "tolerations": [client.deserialize(_Raw(t), "V1Toleration") for t in scheduling.tolerations],
        "affinity": client.deserialize(_Raw(affinity), "V1Affinity") if affinity else None,
    }

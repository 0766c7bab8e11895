"""The pod-wide settings of every step pod: security contexts, resources, where it runs.

Pure builders of Kubernetes models from the shared names (``cluster.env``) and
``pod-scheduling.yaml``; :func:`northwind.pods.step_pod_kwargs` puts them into each step's pod.
"""

import json

from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from northwind.cluster import CLUSTER, SCHEDULING, ClusterNames, PodScheduling

#: The only writable path of a pod besides the data volume (the root file system is read-only).
TMP_PATH = "/tmp"  # noqa: S108 - an emptyDir private to the pod, not a shared host folder
#: Meltano's system database: migrated once when the image is built, opened read-only and
#: immutable (the steps record no job or state), so no step migrates one at start (same value as
#: the image's default).
MELTANO_DATABASE_URI = (
    "sqlite:///file:/project/images/meltano/.meltano/meltano.db?mode=ro&immutable=1&uri=true"
)

#: Where the image keeps the CSV source (the image copies the repo's ``sources/`` to /project).
IMAGE_ORDER_DETAILS_CSV = "/project/sources/order_details.csv"

#: The databases' CA certificate (ConfigMap DB_CA_CONFIGMAP): every connection is TLS, the server
#: checked by its Service name (libpq reads PGSSLMODE and PGSSLROOTCERT).
DB_CA_VOLUME = "db-ca"
DB_CA_PATH = "/etc/northwind/db-ca/ca.crt"
#: Sized for Meltano plus one table in pyarrow; the Northwind tables are small. Ephemeral storage
#: holds the logs and /tmp (Meltano's logs, a partition staged for S3).
RESOURCES = k8s.V1ResourceRequirements(
    requests={"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
    limits={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"},
)
#: The cap of the /tmp emptyDir, within the ephemeral-storage limit.
TMP_SIZE_LIMIT = "1Gi"


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


def cluster_env(names: ClusterNames = CLUSTER) -> dict[str, str]:
    """Return the plain environment a pod needs and a local run takes from its own environment."""
    return {
        "NORTHWIND_DATA_ROOT": names.data_mount_path,
        "ORDER_DETAILS_CSV": IMAGE_ORDER_DETAILS_CSV,
        "MELTANO_PROJECT_ROOT": names.meltano_project_dir,
        "MELTANO_DATABASE_URI": MELTANO_DATABASE_URI,
        # The databases live in NAMESPACE, the step pods in STEP_NAMESPACE.
        "SOURCE_PGHOST": names.service_host(names.source_db_host),
        "SOURCE_PGPORT": names.db_port,
        "SOURCE_PGDATABASE": names.source_db_name,
        "WAREHOUSE_PGHOST": names.service_host(names.warehouse_db_host),
        "WAREHOUSE_PGPORT": names.db_port,
        "WAREHOUSE_PGDATABASE": names.warehouse_db_name,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": DB_CA_PATH,
        # Step metrics (northwind_elt.metrics) to Airflow's statsd exporter, in NAMESPACE.
        "NORTHWIND_STATSD_HOST": names.service_host(names.statsd_host),
        "NORTHWIND_STATSD_PORT": names.statsd_port,
    }

"""The names shared by the Makefile, the DAG and the Helm charts, read from ``cluster.env``.

``cluster.env`` (next to this module) is the single source of truth for the image, namespace,
volume claim, Secret names and database hosts; ``pod-scheduling.yaml`` for where pods run and
how they pull images. This module only parses them: it reads those files and never the
environment, so importing it is the same everywhere.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

#: The file every name comes from.
CLUSTER_ENV = Path(__file__).with_name("cluster.env")
#: imagePullSecrets, nodeSelector, tolerations, affinity of every pod (the charts take it too).
POD_SCHEDULING = Path(__file__).with_name("pod-scheduling.yaml")


class ClusterEnvError(ValueError):
    """``cluster.env`` is malformed or lacks a name the DAG needs."""


def parse_env_file(text: str, source: str = "cluster.env") -> dict[str, str]:
    r"""Parse ``KEY=value`` lines, skipping blank lines and ``#`` comments.

    The format is the common subset of make and shell: no quotes, no expansion, no export.

    Args:
        text: The file's content.
        source: The file's name, for error messages.

    Returns:
        Every key and its value, in file order.

    Raises:
        ClusterEnvError: If a line is not ``KEY=value`` or a key repeats.

    Example:
        >>> parse_env_file("# names\nNAMESPACE=northwind\n\nDB_PORT=5432\n")
        {'NAMESPACE': 'northwind', 'DB_PORT': '5432'}
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier() or not key.isupper():
            raise ClusterEnvError(f"{source}:{number}: expected KEY=value, got {raw!r}")
        if key in values:
            raise ClusterEnvError(f"{source}:{number}: {key} is set twice")
        values[key] = value
    return values


@dataclass(frozen=True)
class ClusterNames:
    """The names of ``cluster.env`` that the DAG uses; field names are the keys, lower-cased."""

    namespace: str
    step_namespace: str
    image_repository: str
    image_tag: str
    data_pvc: str
    data_mount_path: str
    data_gid: str
    source_db_secret: str
    warehouse_db_secret: str
    warehouse_reader_secret: str
    source_db_host: str
    warehouse_db_host: str
    db_port: str
    db_ca_configmap: str
    source_db_name: str
    warehouse_db_name: str
    meltano_project_dir: str
    step_service_account: str

    @property
    def image(self) -> str:
        """The Meltano image reference, ``repository:tag``."""
        return f"{self.image_repository}:{self.image_tag}"

    def service_host(self, service: str) -> str:
        """The name a step pod (in ``step_namespace``) resolves a Service of ``namespace`` by.

        Example:
            >>> load().service_host("northwind-source-db")
            'northwind-source-db.northwind.svc'
        """
        return f"{service}.{self.namespace}.svc"

    @classmethod
    def from_mapping(cls, values: dict[str, str], source: str = "cluster.env") -> "ClusterNames":
        """Pick the DAG's names out of ``values``; keys the DAG does not use are ignored.

        Raises:
            ClusterEnvError: If a name is missing or empty.
        """
        keys = [field.name.upper() for field in fields(cls)]
        missing = [key for key in keys if not values.get(key)]
        if missing:
            raise ClusterEnvError(f"{source} lacks {', '.join(missing)}")
        return cls(**{key.lower(): values[key] for key in keys})


def load(path: Path = CLUSTER_ENV) -> ClusterNames:
    """Read and parse ``path``."""
    return ClusterNames.from_mapping(parse_env_file(path.read_text(encoding="utf-8"), str(path)))


@dataclass(frozen=True)
class PodScheduling:
    """The ``pods:`` block of ``pod-scheduling.yaml``, in Kubernetes' own (camelCase) shapes."""

    image_pull_secrets: list[dict[str, str]] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)

    #: The file's keys, in the order of the fields above.
    KEYS = ("imagePullSecrets", "nodeSelector", "tolerations", "affinity")

    @classmethod
    def from_mapping(cls, values: dict, source: str = "pod-scheduling.yaml") -> "PodScheduling":
        """Pick the ``pods:`` block out of ``values``.

        Raises:
            ClusterEnvError: If the block is missing, has unknown keys or wrong types.

        Example:
            >>> PodScheduling.from_mapping({"pods": {"nodeSelector": {"disk": "ssd"}}}).node_selector
            {'disk': 'ssd'}
        """
        pods = (values or {}).get("pods")
        if not isinstance(pods, dict):
            raise ClusterEnvError(f"{source} lacks the pods: block")
        unknown = sorted(set(pods) - set(cls.KEYS))
        if unknown:
            raise ClusterEnvError(f"{source}: unknown key pods.{unknown[0]}")
        kinds = (list, dict, list, dict)
        for key, kind in zip(cls.KEYS, kinds, strict=True):
            if not isinstance(pods.get(key, kind()), kind):
                raise ClusterEnvError(f"{source}: pods.{key} must be a {kind.__name__}")
        return cls(*(pods.get(key) or kind() for key, kind in zip(cls.KEYS, kinds, strict=True)))


def load_scheduling(path: Path = POD_SCHEDULING) -> PodScheduling:
    """Read and parse ``path``."""
    return PodScheduling.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


#: The names of this checkout, parsed once per process.
CLUSTER = load()
#: The pod scheduling of this checkout, parsed once per process.
SCHEDULING = load_scheduling()


# --- the data tree's backend ------------------------------------------------------------------

#: The backends of the data tree: the claim ``DATA_PVC`` or an S3 bucket.
FILESYSTEM, S3_BACKEND = "filesystem", "s3"
DATA_BACKENDS = (FILESYSTEM, S3_BACKEND)


@dataclass(frozen=True)
class S3Names:
    """The data-tree backend names of ``cluster.env`` (``DATA_BACKEND``, ``S3_*``).

    Kept apart from :class:`ClusterNames` because ``S3_ENDPOINT`` may be empty (a cloud bucket
    at the AWS default endpoint), which :meth:`ClusterNames.from_mapping` refuses.
    """

    data_backend: str
    s3_bucket: str
    s3_prefix: str
    s3_region: str
    s3_endpoint: str
    s3_secret: str
    #: The ConfigMap of the endpoint's CA certificate; empty: the image's public CAs.
    s3_ca_configmap: str = ""

    @property
    def data_root(self) -> str:
        """The data root of the S3 backend, ``s3://bucket/prefix``.

        Example:
            >>> S3Names("s3", "lake", "northwind/", "eu-west-1", "", "creds").data_root
            's3://lake/northwind'
        """
        return f"s3://{self.s3_bucket}/{self.s3_prefix.strip('/')}".rstrip("/")

    @classmethod
    def from_mapping(cls, values: dict[str, str], source: str = "cluster.env") -> "S3Names":
        """Pick the backend names out of ``values``; the endpoint, Secret and CA may be empty.

        An empty ``S3_ENDPOINT`` is the AWS default endpoint of the region; an empty ``S3_SECRET``
        leaves the credentials to the pod's identity (an IAM role for its ServiceAccount); an
        empty ``S3_CA_CONFIGMAP`` trusts the image's public CAs.

        Raises:
            ClusterEnvError: If a name is missing, or ``DATA_BACKEND`` is not a known backend.
        """
        keys = [field.name.upper() for field in fields(cls)]
        optional = ("S3_ENDPOINT", "S3_SECRET", "S3_CA_CONFIGMAP")
        missing = [key for key in keys if key not in values or (key not in optional and not values[key])]
        if missing:
            raise ClusterEnvError(f"{source} lacks {', '.join(missing)}")
        names = cls(**{key.lower(): values[key] for key in keys})
        check_backend(names.data_backend, f"{source}: DATA_BACKEND")
        return names


def check_backend(value: str, setting: str) -> str:
    """Return ``value`` if it names a backend.

    Raises:
        ClusterEnvError: Naming ``setting`` and the backends, if it does not.

    Example:
        >>> check_backend("s3", "DATA_BACKEND")
        's3'
    """
    if value not in DATA_BACKENDS:
        raise ClusterEnvError(f"{setting}={value!r} is not one of {', '.join(DATA_BACKENDS)}")
    return value


def load_s3(path: Path = CLUSTER_ENV) -> S3Names:
    """Read the backend names of ``path``."""
    return S3Names.from_mapping(parse_env_file(path.read_text(encoding="utf-8"), str(path)))


#: The backend names of this checkout, parsed once per process.
S3 = load_s3()

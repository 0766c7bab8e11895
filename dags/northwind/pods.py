"""The pod defaults of every pipeline step: one pure builder of KubernetesPodOperator kwargs.

A DAG task only names its step; :func:`step_pod_kwargs` adds the image, command, date, volumes,
the Secret-sourced credentials of that step only, resources, security context and labels. It
builds values only (no cluster, no environment), so tests can check every pod spec in-process.
The one exception is the backend switch ``NORTHWIND_DATA_BACKEND`` (:func:`data_backend`), set
by the deployment.
"""

import os
from collections.abc import Mapping

from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

from northwind.cluster import (
    CLUSTER,
    FILESYSTEM,
    S3,
    SCHEDULING,
    ClusterNames,
    PodScheduling,
    S3Names,
    check_backend,
)
from northwind.pod_settings import (
    DB_CA_PATH,
    DB_CA_VOLUME,
    RESOURCES,
    TMP_PATH,
    TMP_SIZE_LIMIT,
    cluster_env,
    scheduling_kwargs,
    security_contexts,
)

# The steps of the Meltano project, in the order a day runs them. They equal
# northwind_elt.steps.STEPS (tests compare them); they are repeated here because the Airflow
# image on the cluster has no reason to install the pipeline package just to parse the DAG.
EXTRACT_POSTGRES = "extract-postgres"
EXTRACT_CSV = "extract-csv"
LOAD_WAREHOUSE = "load-warehouse"
PUBLISH_REPORT = "publish-report"
CHECK_WAREHOUSE = "check-warehouse"
STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE, PUBLISH_REPORT, CHECK_WAREHOUSE)

#: The logical date of the run as ``YYYY-MM-DD``: the ``date`` param when a user gives one, else
#: the logical date, else (a manual trigger without one) the moment the run was queued for.
#: ``dag_run.logical_date``, not ``logical_date``: a run without one has no ``logical_date`` key in
#: its context at all, and Airflow's strict Jinja fails on the missing name.
RUN_DATE_TEMPLATE = "{{ params.date or (dag_run.logical_date or dag_run.run_after) | ds }}"

#: The warehouse's retention (``NORTHWIND_KEEP_DAYS`` of load-warehouse: keep the newest N loaded
#: days) comes from the Airflow Variable ``northwind_keep_days`` (UI: Admin > Variables, ``airflow
#: variables set``, or ``AIRFLOW_VAR_NORTHWIND_KEEP_DAYS``), read when the task runs. Empty or
#: unset keeps every day; a local run then keeps the value of its own environment.
KEEP_DAYS_ENV = "NORTHWIND_KEEP_DAYS"
KEEP_DAYS_TEMPLATE = "{{ var.value.get('northwind_keep_days', '') }}"

#: A rerun of a day whose extract succeeded keeps that extract (the day's record of its source);
#: the run's ``reextract`` param asks the extract steps to read the source again.
REEXTRACT_ENV = "NORTHWIND_REEXTRACT"
REEXTRACT_TEMPLATE = "{{ 'true' if params.get('reextract') else 'false' }}"
EXTRACT_STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV)

#: Labels that find a step's pods: ``kubectl logs -l northwind.io/step=load-warehouse,...``.
PART_OF_LABEL = "app.kubernetes.io/part-of"
STEP_LABEL = "northwind.io/step"
RUN_DATE_LABEL = "northwind.io/run-date"
PART_OF = "northwind"

DATA_VOLUME = "data"
TMP_VOLUME = "tmp"


def task_id(step: str) -> str:
    """Return the Airflow task id of ``step``.

    Example:
        >>> task_id("extract-postgres")
        'extract_postgres'
    """
    return step.replace("-", "_")


#: How every step starts: ``meltano run`` of its job (tests/pipeline.py runs the same).
MELTANO_RUN = ("meltano", "run", "--no-state-update")


def step_command(step: str) -> list[str]:
    """Return the one command that runs ``step``, in a pod and locally alike.

    ``--no-state-update``: the steps are full snapshots named by their date, so Meltano keeps no
    state and no job record, and runs of different days (or a rerun after a kill) never wait on
    Meltano's per-job lock.

    Example:
        >>> step_command("load-warehouse")
        ['meltano', 'run', '--no-state-update', 'load-warehouse']
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; the steps are {', '.join(STEPS)}")
    return [*MELTANO_RUN, step]


#: Where a step pod finds its database password: a file of the Secret, never an env variable
#: (northwind_elt.pgconn reads <PREFIX>PASSWORD_FILE).
CREDENTIALS_FOLDER = "/etc/northwind/secrets"


def _login(prefix: str, secret: str) -> list[Secret]:
    """The user name (env) and the password (a file) of one login Secret."""
    folder = f"{CREDENTIALS_FOLDER}/{prefix.lower().removesuffix('_pg')}"
    return [
        Secret("env", f"{prefix}USER", secret, "username"),
        Secret("volume", folder, secret, items=[k8s.V1KeyToPath(key="password", path="password")]),
    ]


def password_file_env(prefix: str) -> dict[str, str]:
    """The variable naming the password file of a database's login (see :func:`_login`).

    Example:
        >>> password_file_env("SOURCE_PG")
        {'SOURCE_PGPASSWORD_FILE': '/etc/northwind/secrets/source/password'}
    """
    return {f"{prefix}PASSWORD_FILE": f"{CREDENTIALS_FOLDER}/{prefix.lower().removesuffix('_pg')}/password"}


def source_secrets(names: ClusterNames = CLUSTER) -> list[Secret]:
    """Return the source's read-only login role, from its Kubernetes Secret."""
    return _login("SOURCE_PG", names.source_db_secret)


def warehouse_secrets(names: ClusterNames = CLUSTER) -> list[Secret]:
    """Return the warehouse's login role (owner of its snapshots), from its Kubernetes Secret."""
    return _login("WAREHOUSE_PG", names.warehouse_db_secret)


def warehouse_reader_secrets(names: ClusterNames = CLUSTER) -> list[Secret]:
    """Return the warehouse's read-only role (SELECT on snapshots and views), from its Secret."""
    return _login("WAREHOUSE_PG", names.warehouse_reader_secret)


#: The databases each step logs in to: it gets their Secrets and their client label, nothing else.
STEP_DATABASES: dict[str, tuple[str, ...]] = {
    EXTRACT_POSTGRES: ("source",),
    EXTRACT_CSV: (),
    LOAD_WAREHOUSE: ("warehouse",),
    PUBLISH_REPORT: ("warehouse",),
    CHECK_WAREHOUSE: ("warehouse",),
}
_DATABASE_SECRETS = {"source": source_secrets, "warehouse": warehouse_secrets}
#: Steps that only read a database log in as its read-only role: the report writes files only, the
#: checks their results, through the one function the reader may run (northwind_elt.checks_store).
_READ_ONLY_SECRETS = {step: {"warehouse": warehouse_reader_secrets}
                      for step in (PUBLISH_REPORT, CHECK_WAREHOUSE)}


def _databases_of(step: str) -> tuple[str, ...]:
    if step not in STEP_DATABASES:
        raise ValueError(f"unknown step {step!r}; the steps are {', '.join(STEPS)}")
    return STEP_DATABASES[step]


def step_secrets(step: str, names: ClusterNames = CLUSTER) -> list[Secret]:
    """Return the credentials ``step`` needs and no others (least privilege per pod).

    Example:
        >>> [s.secret for s in step_secrets("extract-postgres")]
        ['northwind-source-db', 'northwind-source-db']
        >>> step_secrets("extract-csv")
        []
        >>> [s.secret for s in step_secrets("publish-report")][0]
        'northwind-warehouse-db-reader'
    """
    logins = {**_DATABASE_SECRETS, **_READ_ONLY_SECRETS.get(step, {})}
    return [secret for db in _databases_of(step) for secret in logins[db](names)]


def step_password_env(step: str) -> dict[str, str]:
    """The password-file variables of ``step``'s databases (cluster only: a local run keeps its own)."""
    return {k: v for db in _databases_of(step) for k, v in password_file_env(f"{db.upper()}_PG").items()}


def client_labels(step: str) -> dict[str, str]:
    """Return the labels that let ``step``'s pod reach its databases through the NetworkPolicies.

    charts/northwind-databases opens a database's port only to pods labelled
    ``northwind.io/<database>-client=true``.

    Example:
        >>> client_labels("load-warehouse")
        {'northwind.io/warehouse-client': 'true'}
    """
    return {f"northwind.io/{db}-client": "true" for db in _databases_of(step)}


def step_pod_kwargs(
    step: str,
    names: ClusterNames = CLUSTER,
    scheduling: PodScheduling = SCHEDULING,
    backend: str | None = None,
    s3: S3Names = S3,
) -> dict:
    """Return the operator kwargs that run ``step`` of the run's date in a Meltano pod.

    Args:
        step: One of :data:`STEPS`.
        names: The shared names, parsed from ``cluster.env`` by default.
        scheduling: Where the pod runs and how it pulls the image (``pod-scheduling.yaml``).
        backend: ``filesystem`` or ``s3``; None means :func:`data_backend`.
        s3: The bucket, endpoint and Secret of the ``s3`` backend.

    Returns:
        Keyword arguments for ``MeltanoStepOperator`` (a KubernetesPodOperator).

    Example:
        >>> kwargs = step_pod_kwargs("extract-csv")
        >>> kwargs["task_id"], kwargs["cmds"] + kwargs["arguments"]
        ('extract_csv', ['meltano', 'run', '--no-state-update', 'extract-csv'])
    """
    command = step_command(step)
    pod_security, container_security = security_contexts(names)
    kwargs = {
        "task_id": task_id(step),
        "step": step,
        "cluster_only_env": frozenset(cluster_env(names)) | set(step_password_env(step)),
        "name": f"northwind-{step}",
        # Their own namespace: the launcher may create pods there only, beside the step Secrets.
        "namespace": names.step_namespace,
        "image": names.image,
        "image_pull_policy": "IfNotPresent",
        # A failed step's termination message is its last log lines (its `<plugin>: error:` line),
        # which the failure alert quotes (alerts.reason_line).
        "termination_message_policy": "FallbackToLogsOnError",
        "cmds": command[:1],
        "arguments": command[1:],
        "env_vars": {
            "RUN_DATE": RUN_DATE_TEMPLATE,
            **({KEEP_DAYS_ENV: KEEP_DAYS_TEMPLATE} if step == LOAD_WAREHOUSE else {}),
            **({REEXTRACT_ENV: REEXTRACT_TEMPLATE} if step in EXTRACT_STEPS else {}),
            **cluster_env(names),
            **step_password_env(step),
        },
        "secrets": step_secrets(step, names),
        "labels": {
            PART_OF_LABEL: PART_OF,
            STEP_LABEL: step,
            RUN_DATE_LABEL: RUN_DATE_TEMPLATE,
            **client_labels(step),
        },
        "volumes": [
            k8s.V1Volume(
                name=DATA_VOLUME,
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=names.data_pvc),
            ),
            k8s.V1Volume(name=TMP_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=TMP_SIZE_LIMIT)),
            k8s.V1Volume(name=DB_CA_VOLUME,
                         config_map=k8s.V1ConfigMapVolumeSource(name=names.db_ca_configmap)),
        ],
        "volume_mounts": [
            k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=names.data_mount_path),
            k8s.V1VolumeMount(name=TMP_VOLUME, mount_path=TMP_PATH),
            k8s.V1VolumeMount(name=DB_CA_VOLUME, mount_path=DB_CA_PATH.rpartition("/")[0], read_only=True),
        ],
        "container_resources": RESOURCES,
        "security_context": pod_security,
        "container_security_context": container_security,
        # The steps never call the Kubernetes API: their own account, and no token in the pod.
        "service_account_name": names.step_service_account,
        "automount_service_account_token": False,
        # No service variables (host and ports of every Service in the namespace): the steps find
        # their databases by name, and Meltano copies the whole environment for each setting it
        # resolves (about 2 ms of start-up per variable, docs/benchmark.md).
        "full_pod_spec": k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], enable_service_links=False)),
        "get_logs": True,
        "log_events_on_failure": True,
        # Failed pods stay for `kubectl describe/logs`; succeeded ones are deleted.
        "on_finish_action": "delete_succeeded_pod",
        "startup_timeout_seconds": 300,
        "deferrable": False,
        **scheduling_kwargs(scheduling),
    }
    return with_data_backend(kwargs, backend or data_backend(s3=s3), s3)


# --- the data tree's backend ------------------------------------------------------------------

#: Overrides ``DATA_BACKEND`` of cluster.env for one deployment: `make up DATA_BACKEND=s3` sets it
#: in every Airflow pod (charts/airflow/values-s3.yaml), where the DAG is parsed and run.
BACKEND_VARIABLE = "NORTHWIND_DATA_BACKEND"
#: The Secret keys of the S3 credentials, named like the variables the AWS SDK reads (for people
#: and the bucket Job; the step pods read :data:`S3_CREDENTIALS_KEY` only).
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
#: The key of ``S3_SECRET`` holding the same keys as an AWS shared credentials file (profile
#: ``default``); charts/northwind-objectstore renders it beside them.
S3_CREDENTIALS_KEY = "credentials"
#: Where a step pod finds that file: a Secret volume, never env variables. The AWS SDK's default
#: credential chain (pyarrow's S3FileSystem without keys) reads the file AWS_SHARED_CREDENTIALS_FILE
#: names.
S3_CREDENTIALS_FILE = f"{CREDENTIALS_FOLDER}/s3/credentials"
S3_CREDENTIALS_FILE_ENV = "AWS_SHARED_CREDENTIALS_FILE"
#: The store's CA certificate (ConfigMap S3_CA_CONFIGMAP), named by the AWS SDKs' variable, which
#: northwind_elt.tree_s3 hands to pyarrow: the endpoint is HTTPS, its certificate checked.
S3_CA_VOLUME = "s3-ca"
S3_CA_PATH = "/etc/northwind/s3-ca/ca.crt"
S3_CA_ENV = "AWS_CA_BUNDLE"
#: The label that lets a pod reach the in-cluster object store through the NetworkPolicies of
#: charts/northwind-objectstore (northwind-objectstore.clientLabel); every step touches the data tree.
OBJECTSTORE_CLIENT_LABEL = "northwind.io/objectstore-client"


def data_backend(environ: Mapping[str, str] = os.environ, s3: S3Names = S3) -> str:
    """Return the backend of the step pods: ``NORTHWIND_DATA_BACKEND``, else cluster.env's.

    The DAG file is the same for every deployment; the deployment (the Airflow chart's env)
    chooses the backend, so the dag-processor and the task runners build the same pods.

    Raises:
        ClusterEnvError: Naming the variable, if it holds no known backend.

    Example:
        >>> data_backend({}), data_backend({"NORTHWIND_DATA_BACKEND": "s3"})
        ('filesystem', 's3')
    """
    value = environ.get(BACKEND_VARIABLE, "").strip()
    return check_backend(value, BACKEND_VARIABLE) if value else s3.data_backend


def s3_env(s3: S3Names = S3) -> dict[str, str]:
    """Return the plain environment of a step on the S3 backend (no credentials)."""
    env = {"NORTHWIND_DATA_ROOT": s3.data_root, "AWS_REGION": s3.s3_region}
    if s3.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3.s3_endpoint
    if s3.s3_secret:
        env[S3_CREDENTIALS_FILE_ENV] = S3_CREDENTIALS_FILE
    if s3.s3_ca_configmap:
        env[S3_CA_ENV] = S3_CA_PATH
    return env


def s3_ca_volumes(s3: S3Names = S3) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """Return the volume and mount of the store's CA certificate (none for the public CAs)."""
    if not s3.s3_ca_configmap:
        return [], []
    volume = k8s.V1Volume(name=S3_CA_VOLUME,
                          config_map=k8s.V1ConfigMapVolumeSource(name=s3.s3_ca_configmap))
    mount = k8s.V1VolumeMount(name=S3_CA_VOLUME, mount_path=S3_CA_PATH.rpartition("/")[0],
                              read_only=True)
    return [volume], [mount]


def s3_secrets(s3: S3Names = S3) -> list[Secret]:
    """Return the S3 credentials of a step: the file of the Secret ``S3_SECRET``, mounted.

    Only the key :data:`S3_CREDENTIALS_KEY` is mounted, at :data:`S3_CREDENTIALS_FILE` (named by
    ``AWS_SHARED_CREDENTIALS_FILE`` in :func:`s3_env`): the keys are in no environment variable.
    Nothing when ``S3_SECRET`` is empty: the AWS SDK then finds the pod's own identity (a web
    identity token, e.g. an IAM role of the step ServiceAccount on EKS), and no key exists at all.
    """
    if not s3.s3_secret:
        return []
    folder, _, name = S3_CREDENTIALS_FILE.rpartition("/")
    return [Secret("volume", folder, s3.s3_secret,
                   items=[k8s.V1KeyToPath(key=S3_CREDENTIALS_KEY, path=name)])]


def with_data_backend(kwargs: dict, backend: str, s3: S3Names = S3) -> dict:
    """Return ``kwargs`` (of :func:`step_pod_kwargs`) for the data tree on ``backend``.

    ``filesystem`` keeps them as they are. ``s3`` drops the data volume and its mount (so no
    claim pins the pod to a node), points ``NORTHWIND_DATA_ROOT`` at the bucket and adds the
    endpoint, region, CA certificate and Secret-sourced keys (a local run keeps its own values of
    all of them), and the label the object store's NetworkPolicy admits.
    """
    if check_backend(backend, BACKEND_VARIABLE) == FILESYSTEM:
        return kwargs
    env = s3_env(s3)
    ca_volumes, ca_mounts = s3_ca_volumes(s3)
    return {
        **kwargs,
        "cluster_only_env": kwargs["cluster_only_env"] | set(env),
        "env_vars": {**kwargs["env_vars"], **env},
        "secrets": [*kwargs["secrets"], *s3_secrets(s3)],
        "labels": {**kwargs["labels"], OBJECTSTORE_CLIENT_LABEL: "true"},
        "volumes": [*(v for v in kwargs["volumes"] if v.name != DATA_VOLUME), *ca_volumes],
        "volume_mounts": [*(m for m in kwargs["volume_mounts"] if m.name != DATA_VOLUME), *ca_mounts],
    }

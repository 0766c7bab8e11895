"""A day of the pipeline in real containers: the Meltano image, the DAG's step pods, PostgreSQL.

Builds images/meltano/Dockerfile on a local Debian bookworm base (no registry is reachable),
starts source and warehouse PostgreSQL containers, seeds the source with the image's own
``northwind seed-source`` (as the chart's seed Job does), then runs the four steps of one day as
the DAG builds them: each task's pod from ``build_pod_request_obj``, serialised to YAML and run by
``podman kube play``, in DAG order. Three changes to the rendered pods, nothing else:

- the data claim becomes a hostPath of a folder of this test (kind mounts ./data the same way);
- ``podman kube play`` reads the Secrets from podman's secret store (``podman secret create``
  with the Secret's data as JSON), so they are created there instead of in a namespace;
- the PostgreSQL containers here serve no TLS: ``PGSSLMODE`` becomes ``disable`` and the CA
  ConfigMap an empty folder (the chart's TLS is tested on a real server: tests/test_pg_server.py);
- podman 4.3 crashes on a Secret volume (``kube play``: a nil pointer in VolumeFromSecret), so
  each becomes a hostPath of a folder holding the same files (the password a step reads).

The database hosts keep their cluster names: the containers are on a podman network whose DNS
serves them as aliases. Run by ``make e2e-containers``; skipped with the reason where podman
cannot run containers or the user is not root.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import base64
import csv
import json
import os
import re
import secrets
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from kubernetes.client import ApiClient
from pipeline import committed, tree_digest, warehouse_digest
from settings import ORDER_DETAILS_ROWS, ROOT, SOURCE_ROWS
from test_names_in_step import cluster_env

import podman

pytestmark = pytest.mark.slow

DAY = "2024-01-02"
#: Plays `make run` on the same data tree: a uid that is neither root nor the pods' 10001.
LOCAL_UID = 1000
STEP_UID = 10001
#: The data tree's group (cluster.env DATA_GID): the step pods' group, the local user's too.
DATA_GID = int(cluster_env()["DATA_GID"])


def _names() -> dict[str, str]:
    """The names of dags/northwind/cluster.env the pods use, keyed for this test."""
    env = cluster_env()
    # The step pods name the databases' Services with their namespace (they run in another).
    service = f".{env['NAMESPACE']}.svc"
    return {"image": f"{env['IMAGE_REPOSITORY']}:{env['IMAGE_TAG']}",
            "source": env["SOURCE_DB_HOST"] + service, "warehouse": env["WAREHOUSE_DB_HOST"] + service,
            "source_db": env["SOURCE_DB_NAME"], "warehouse_db": env["WAREHOUSE_DB_NAME"],
            "source_secret": env["SOURCE_DB_SECRET"], "warehouse_secret": env["WAREHOUSE_DB_SECRET"],
            "reader_secret": env["WAREHOUSE_READER_SECRET"],
            "mount": env["DATA_MOUNT_PATH"], "port": env["DB_PORT"]}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the container end-to-end needs root (rootful podman, uids of the data tree)"
    missing = podman.missing_tools()
    if missing:
        return f"{', '.join(missing)} not on PATH (.ci/run installs them as root)"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Images built, databases up and seeded; yields the names, databases and image figures."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    podman.build_rootfs_image()
    reason = podman.can_run_containers()
    if reason:
        pytest.skip(reason)
    names = _names()
    image = f"localhost/{names['image']}"
    started = time.monotonic()
    podman.build_images(image)
    build_seconds = time.monotonic() - started
    podman.remove_containers()
    podman.ensure_network()
    source = podman.start_database(names["source"], names["source_db"], "northwind",
                                   secrets.token_hex(16))
    warehouse = podman.start_database(names["warehouse"], names["warehouse_db"], "loader",
                                      secrets.token_hex(16))
    try:
        seeded = run_in_image(image, ["northwind", "seed-source"], source_env(names, source))
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        # The report's read-only Secret holds the warehouse's one login here (no roles modelled).
        for secret, database in ((names["source_secret"], source),
                                 (names["warehouse_secret"], warehouse),
                                 (names["reader_secret"], warehouse)):
            podman.podman("secret", "rm", secret, check=False)
            podman.podman("secret", "create", secret, "-", input=secret_json(database))
            SECRET_LOGINS[secret] = database
        yield {"names": names, "image": image, "source": source, "warehouse": warehouse,
               "build_seconds": build_seconds, "data": tmp_path_factory.mktemp("tree") / "data"}
    finally:
        podman.remove_containers()
        for secret in (names["source_secret"], names["warehouse_secret"], names["reader_secret"]):
            podman.podman("secret", "rm", secret, check=False)


def source_env(names, source) -> dict[str, str]:
    return {"SOURCE_PGHOST": names["source"], "SOURCE_PGPORT": names["port"],
            "SOURCE_PGDATABASE": source.database, "SOURCE_PGUSER": source.user,
            "SOURCE_PGPASSWORD": source.password}


def run_in_image(image, command, env, *, user=STEP_UID, data: Path | None = None, mount="/data",
                 groups: tuple[int, ...] = ()):
    """Run ``command`` in the image on the e2e network like a pod: read-only root, no capabilities."""
    volume = ["--volume", f"{data}:{mount}"] if data else []
    options = [option for name in env for option in ("--env", name)]
    extra = [option for gid in groups for option in ("--group-add", str(gid))]
    return podman.podman("run", "--rm", "--network", podman.NETWORK, "--user", f"{user}:{user}",
                         *extra, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", *volume,
                         *options, image, *command, env=env, check=False, timeout=600)


def secret_json(database) -> str:
    """The ``data`` of the Secret the charts make for a database (keys ``username``, ``password``).

    podman 4.3 resolves a pod's ``secretKeyRef`` in its own secret store, whose entry must be
    that map as JSON (values base64, as in a Kubernetes Secret).
    """
    data = {"username": database.user, "password": database.password}
    return json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in data.items()})


def secret_folder(data: Path, name: str, volume: dict) -> Path:
    """A folder holding the files a Secret volume of ``name`` would (its items, or every key)."""
    values = {"username": SECRET_LOGINS[name].user, "password": SECRET_LOGINS[name].password}
    folder = data.parent / "secrets" / name
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    items = volume.get("items") or [{"key": key, "path": key} for key in values]
    for item in items:
        (folder / item["path"]).write_text(values[item["key"]])
        (folder / item["path"]).chmod(0o644)
    return folder


#: The login of each database Secret, as the stack created it (name -> Database).
SECRET_LOGINS: dict[str, object] = {}


def pod_yaml(task_id: str, data: Path) -> tuple[str, dict]:
    """The task's pod as the operator builds it, with the data claim as a hostPath of ``data``."""
    pod = dag_support.build_pod(task_id, logical_date=dag_support.utc_day(DAY))
    document = ApiClient().sanitize_for_serialization(pod)
    for volume in document["spec"]["volumes"]:
        if "secret" in volume:
            secret = volume.pop("secret")
            volume["hostPath"] = {"path": str(secret_folder(data, secret["secretName"], secret)),
                                  "type": "Directory"}
    claims = [v for v in document["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert len(claims) == 1, document["spec"]["volumes"]
    del claims[0]["persistentVolumeClaim"]
    claims[0]["hostPath"] = {"path": str(data), "type": "Directory"}
    for volume in document["spec"]["volumes"]:
        if "configMap" in volume:  # the databases' CA
            volume["emptyDir"] = volume.pop("configMap") and {}
    for env in document["spec"]["containers"][0]["env"]:
        if env["name"] == "PGSSLMODE":
            env["value"] = "disable"
    return yaml.safe_dump(document), document


def run_step_pod(task_id: str, data: Path) -> dict:
    """Play the task's pod, wait for it, fail with its log; return its timing and log."""
    text, document = pod_yaml(task_id, data)
    name = document["metadata"]["name"]
    container = document["spec"]["containers"][0]["name"]
    try:
        code, log = podman.run_pod(text, name, container)
        info = json.loads(podman.podman("inspect", f"{name}-{container}").stdout)[0]
    finally:
        podman.remove_pod(name)
    assert code == 0, f"step pod {task_id} exited {code}:\n{log[-6000:]}"
    # podman applied the pod's security context: read-only root, every capability dropped.
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert not info.get("EffectiveCaps"), info.get("EffectiveCaps")
    state = info["State"]
    return {"log": log, "started": state["StartedAt"], "finished": state["FinishedAt"]}


def run_day_in_pods(data: Path) -> dict[str, dict]:
    return {task_id: run_step_pod(task_id, data) for task_id in dag_support.TASK_IDS}


def local_run(stack, step: str) -> subprocess.CompletedProcess:
    """``meltano run`` of ``step`` as another uid on the same tree, like ``make run`` does."""
    names, source, warehouse = stack["names"], stack["source"], stack["warehouse"]
    env = {"RUN_DATE": DAY, **source_env(names, source),
           "WAREHOUSE_PGHOST": names["warehouse"], "WAREHOUSE_PGPORT": names["port"],
           "WAREHOUSE_PGDATABASE": warehouse.database, "WAREHOUSE_PGUSER": warehouse.user,
           "WAREHOUSE_PGPASSWORD": warehouse.password}
    # The user of `make run` belongs to the data tree's group (DATA_GID, docs/kubernetes.md).
    return run_in_image(stack["image"], ["meltano", "run", "--no-state-update", step], env,
                        user=LOCAL_UID, data=stack["data"], mount=names["mount"],
                        groups=(DATA_GID,))


#: Prints the name and version of every distribution of the interpreter that runs it, as JSON.
LIST_DISTRIBUTIONS = ("import importlib.metadata as m, json; print(json.dumps("
                      "{d.metadata['Name']: d.version for d in m.distributions()}))")
#: The container end-to-end measures the image here (issue 26: 2.48 GB with a venv per plugin).
MAX_IMAGE_BYTES = 800 * 10**6


def installed_versions(image: str, python: str) -> dict[str, str]:
    listed = podman.podman("run", "--rm", "--read-only", image, python, "-c",
                           LIST_DISTRIBUTIONS).stdout
    return {name.lower().replace("_", "-"): v for name, v in json.loads(listed).items()}


def locked_versions(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_image_installs_the_locked_versions(stack):
    locked = locked_versions(ROOT / "images" / "meltano" / "constraints.txt")
    # One venv: Meltano and our plugin package; Meltano made no venv of its own for a plugin.
    plugin_venvs = podman.podman("run", "--rm", stack["image"], "sh", "-c",
                                 "ls -d .meltano/*/*/venv 2>/dev/null || true").stdout.split()
    assert plugin_venvs == []
    installed = installed_versions(stack["image"], "/opt/venv/bin/python")
    assert {"meltano", "northwind-elt", "singer-sdk"} <= set(installed)
    differ = {n: (v, locked[n]) for n, v in installed.items() if n in locked and locked[n] != v}
    assert not differ, f"installed != locked: {differ}"
    # Bytecode is in the image: a read-only root would otherwise recompile at every start.
    compiled = podman.podman("run", "--rm", stack["image"], "sh", "-c",
                             "ls /opt/venv/lib/python3.11/site-packages/meltano/__pycache__ "
                             "/opt/venv/lib/python3.11/site-packages/northwind_elt/__pycache__ "
                             "| grep -c cpython-311")
    assert int(compiled.stdout.strip()) > 5


def test_the_image_is_lean(stack):
    size = podman.image_size(stack["image"])

    print(f"\nimage {stack['image']}: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB > {MAX_IMAGE_BYTES / 1e6:.0f} MB"


def test_a_day_in_step_pods_shares_the_tree_with_a_local_run(stack):
    data: Path = stack["data"]
    # As `make up` leaves it (target data-folder): the user's, group DATA_GID (the step pods'
    # group), 2770 (setgid); nothing is open to other users.
    data.mkdir()
    os.chown(data, LOCAL_UID, DATA_GID)
    data.chmod(0o2770)
    # A local run as another uid writes first: the pods must write into its folders.
    first = local_run(stack, "extract-csv")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (data / "_status" / DAY).stat().st_uid == LOCAL_UID

    started = time.monotonic()
    runs = run_day_in_pods(data)
    day_seconds = time.monotonic() - started
    assert (data / "postgres" / "orders" / DAY).stat().st_uid == STEP_UID
    # One group shares the tree, nobody else: no entry open to other users, all in DATA_GID.
    entries = [data, *data.rglob("*")]
    assert [str(p) for p in entries if p.lstat().st_mode & 0o007] == []
    assert {p.lstat().st_gid for p in entries} == {DATA_GID}

    tables = sorted(p.name for p in (data / "postgres").iterdir())
    assert tables == sorted(SOURCE_ROWS)
    for table, rows in SOURCE_ROWS.items():
        assert pq.read_metadata(committed(data, "postgres", table, DAY, f"{table}.parquet")
                                ).num_rows == rows
    assert pq.read_metadata(committed(data, "csv", DAY, "order_details.parquet")).num_rows == \
        ORDER_DETAILS_ROWS
    with open(committed(data, "reports", DAY, "orders_with_details.csv"), newline="") as handle:
        assert len(list(csv.DictReader(handle))) == ORDER_DETAILS_ROWS

    source, warehouse = stack["source"], stack["warehouse"]
    with psycopg.connect(**source.conninfo()) as src, psycopg.connect(**warehouse.conninfo()) as wh:
        assert column_types(wh, "snapshots", exclude=("order_details", "_loads")) == \
            column_types(src, "public")
        assert wh.execute("SELECT count(*) FROM orders JOIN order_details USING (order_id)"
                          ).fetchone() == (ORDER_DETAILS_ROWS,)
        assert wh.execute("SELECT count(*) FROM history.orders(%s)", (DAY,)).fetchone() == \
            wh.execute("SELECT count(*) FROM orders").fetchone()  # the day's history
        relations = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = %s AND c.relkind = %s")
        assert {t for (t,) in wh.execute(relations, ("history", "r"))} == \
            {t for (t,) in wh.execute(relations, ("snapshots", "p"))}  # every table has its history
        assert wh.execute("SELECT array_agg(snapshot_date::text) FROM northwind.history_days"
                          ).fetchone() == ([str(DAY)],)
        before = warehouse_digest(wh)
    files = tree_digest(data) | tree_digest(data, "reports/**/*")

    # A rerun of the day in pods, then a local rerun into the pods' folders: nothing changes.
    rerun = run_day_in_pods(data)
    again = local_run(stack, "extract-postgres")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_digest(data) | tree_digest(data, "reports/**/*") == files
    with psycopg.connect(**warehouse.conninfo()) as wh:
        assert warehouse_digest(wh) == before

    print(f"\nimage {stack['image']}: {podman.image_size(stack['image']) / 1e6:.0f} MB, "
          f"built in {stack['build_seconds']:.0f} s; day in pods {day_seconds:.0f} s")
    for task_id in dag_support.TASK_IDS:
        print(f"  {task_id}: {pod_seconds(runs[task_id]):.1f} s, rerun "
              f"{pod_seconds(rerun[task_id]):.1f} s")


def pod_seconds(run: dict) -> float:
    """Seconds from the step container's start to its exit (podman's RFC 3339 nanosecond stamps)."""
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00"))

    return (parse(run["finished"]) - parse(run["started"])).total_seconds()


def column_types(conn, schema: str, exclude=()) -> dict[tuple[str, str], str]:
    rows = conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'snapshot_date'""",
        (schema,)).fetchall()
    return {(t, c): ty for t, c, ty in rows if t not in exclude}


#: Runs a no-op step like a pod does; prints its exit code and the CPU seconds of Meltano and the
#: plugin (wall time on a shared CI machine says little).
STARTUP_PROBE = """\
import resource, subprocess, sys
code = subprocess.run(["meltano", "run", "--no-state-update", "northwind:status"]).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"cpu={usage.ru_utime + usage.ru_stime:.2f}")
sys.exit(code or subprocess.run(["test", "!", "-e", "/tmp/meltano.db"]).returncode)
"""


def test_a_step_starts_on_the_system_database_migrated_into_the_image(stack):
    # With the pods' URI (the image's default) nothing migrates or creates a database at start.
    env = {"NORTHWIND_DATA_ROOT": "/tmp"}
    result = run_in_image(stack["image"], ["python3", "-c", STARTUP_PROBE], env)
    assert result.returncode == 0, result.stdout + result.stderr
    # For the record: the same start with a fresh database in /tmp (before the image had one).
    fresh = run_in_image(stack["image"], ["python3", "-c", STARTUP_PROBE],
                         {**env, "MELTANO_DATABASE_URI": "sqlite:////tmp/meltano.db"})
    print(f"\nstep start-up, CPU seconds: image's database {result.stdout.split('cpu=')[-1].strip()}, "
          f"fresh database migrated at start {fresh.stdout.split('cpu=')[-1].strip()}")

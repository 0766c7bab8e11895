"""podman for the container end-to-end: local base images, the Meltano image, databases, pods.

No registry is reachable from the CI machines, so every image is built here: a Debian bookworm
root file system from debootstrap, a Python 3.11 base on it standing in for the official Python
image, PostgreSQL from Debian's package, and the real images/meltano/Dockerfile on that base.
Every podman call reads the settings of .ci/containers.conf (CONTAINERS_CONF).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from settings import ROOT

CONTAINERS_CONF = ROOT / ".ci" / "containers.conf"
#: The machine's CA bundle: PyPI is reachable from a build step only through it.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = "http://deb.debian.org/debian"

PREFIX = "northwind-e2e"
ROOTFS_IMAGE = f"localhost/{PREFIX}-debootstrap:bookworm"
PYTHON_IMAGE = f"localhost/{PREFIX}-python:bookworm"
POSTGRES_IMAGE = f"localhost/{PREFIX}-postgres:bookworm"
NETWORK = PREFIX

#: Stands in for python:3.11-slim-bookworm: Debian bookworm's python3 is 3.11. The CA settings
#: let pip and uv trust the machine's bundle, bind-mounted over Debian's in the image build.
PYTHON_CONTAINERFILE = f"""\
FROM {ROOTFS_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       python3 python3-venv ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
ENV SSL_CERT_FILE={CA_BUNDLE} PIP_CERT={CA_BUNDLE}
"""

#: PostgreSQL 15 of Debian. The start script makes the user (password auth over TCP) and the
#: database named by POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB, like the official image.
POSTGRES_CONTAINERFILE = f"""\
FROM {ROOTFS_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       postgresql-15 >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
COPY start-postgres /usr/local/bin/start-postgres
USER postgres
CMD ["/usr/local/bin/start-postgres"]
"""
START_POSTGRES = """\
#!/bin/sh
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/e2e
printf '%s\\n' "$POSTGRES_PASSWORD" >/tmp/password
"$bin/initdb" -D "$data" -U "$POSTGRES_USER" --auth=scram-sha-256 --pwfile=/tmp/password \\
  --encoding=UTF8 --locale=C.UTF-8 >/dev/null
rm /tmp/password
echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
echo "CREATE DATABASE \\"$POSTGRES_DB\\"" | "$bin/postgres" --single -D "$data" postgres >/dev/null
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories=/tmp
"""


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its output."""


def podman(*args: str, input: str | None = None, check: bool = True, timeout: float = 900,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``podman args`` with the checkout's containers.conf; raise with its output on failure."""
    full_env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **(env or {})}
    result = subprocess.run(["podman", *args], input=input, env=full_env, text=True,
                            capture_output=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}):\n"
                          f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def image_exists(name: str) -> bool:
    """Whether the local store holds ``name``."""
    return podman("image", "exists", name, check=False).returncode == 0


def missing_tools() -> list[str]:
    """The programs the end-to-end needs that are not on PATH."""
    return [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]


def build_rootfs_image() -> None:
    """Import a minimal Debian bookworm root file system made by debootstrap (once)."""
    if image_exists(ROOTFS_IMAGE):
        return
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-rootfs-") as folder:
        rootfs = Path(folder) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                       check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                ["podman", "import", "-", ROOTFS_IMAGE], stdin=tar.stdout, capture_output=True,
                env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}, timeout=600, check=False)
        finally:
            tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise PodmanError(f"podman import failed: {imported.stderr.decode()[-2000:]}")


def can_run_containers() -> str | None:
    """Why podman cannot run a container here, or None when it can."""
    result = podman("run", "--rm", ROOTFS_IMAGE, "true", check=False, timeout=120)
    if result.returncode != 0:
        return (f"podman cannot run a container with {CONTAINERS_CONF} (rootful, runc; .ci/run "
                f"installs them): {result.stderr.strip()[-300:]}")
    return None


def build(tag: str, containerfile: Path, context: Path, *options: str) -> None:
    """``podman build`` of ``context`` with extra ``options``."""
    podman("build", "--quiet", "--tag", tag, "--file", str(containerfile), *options, str(context),
           timeout=1800)


def build_from_text(tag: str, containerfile: str, files: dict[str, str] | None = None) -> None:
    """Build ``tag`` from a Containerfile's text and extra context files (podman's layer cache
    makes a rebuild of unchanged text quick, and a changed text is never served stale)."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-context-") as folder:
        context = Path(folder)
        (context / "Containerfile").write_text(containerfile)
        for name, text in (files or {}).items():
            (context / name).write_text(text)
            (context / name).chmod(0o755)
        build(tag, context / "Containerfile", context)


def build_images(meltano_tag: str) -> None:
    """The Python base, then the Meltano image on it while the PostgreSQL image builds."""
    build_from_text(PYTHON_IMAGE, PYTHON_CONTAINERFILE)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        postgres = pool.submit(build_from_text, POSTGRES_IMAGE, POSTGRES_CONTAINERFILE,
                               {"start-postgres": START_POSTGRES})
        build_meltano_image(meltano_tag)
        postgres.result()


def build_meltano_image(tag: str) -> None:
    """Build images/meltano/Dockerfile on the local Python base, as `make image` does."""
    # Mounted only here: a base build that installs ca-certificates must write its own bundle.
    build(tag, ROOT / "images" / "meltano" / "Dockerfile", ROOT,
          "--build-arg", f"BASE_IMAGE={PYTHON_IMAGE}", "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro")


def image_size(tag: str) -> int:
    """The image's size in bytes, as the local store counts it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


@dataclass(frozen=True)
class Database:
    """A PostgreSQL container on the e2e network, published on a loopback port of the host."""

    host: str
    database: str
    user: str
    password: str
    port: int

    def conninfo(self) -> dict[str, str | int]:
        """psycopg keyword arguments that reach it from the host."""
        return {"host": "127.0.0.1", "port": self.port, "dbname": self.database,
                "user": self.user, "password": self.password}


def ensure_network() -> None:
    """The bridge network whose DNS serves the database hosts by their cluster names."""
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)


def start_database(host: str, database: str, user: str, password: str) -> Database:
    """Start PostgreSQL reachable as ``host`` on the network (the Service name on the cluster)."""
    name = f"{PREFIX}-{host}"
    podman("rm", "--force", "--ignore", name)
    podman("run", "--detach", "--name", name, "--network", NETWORK, "--network-alias", host,
           "--publish", "127.0.0.1::5432", "--env", "POSTGRES_USER", "--env", "POSTGRES_PASSWORD",
           "--env", "POSTGRES_DB", POSTGRES_IMAGE,
           env={"POSTGRES_USER": user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": database})
    port = podman("port", name, "5432/tcp").stdout.strip().rsplit(":", 1)[1]
    deadline = time.monotonic() + 120
    while podman("exec", name, "/usr/lib/postgresql/15/bin/pg_isready", "-q", "-h", "127.0.0.1",
                 "-d", database, "-U", user, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise PodmanError(f"{host} is not ready:\n{podman('logs', name, check=False).stderr}")
        time.sleep(0.5)
    return Database(host, database, user, password, int(port))


def remove_containers() -> None:
    """Remove every container and pod of the end-to-end (the images stay for a rerun)."""
    pods = podman("pod", "ps", "--quiet", "--filter", "label=app.kubernetes.io/part-of=northwind",
                  check=False).stdout.split()
    if pods:
        podman("pod", "rm", "--force", *pods, check=False)
    names = podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
    for name in names:
        if name.startswith(f"{PREFIX}-"):
            podman("rm", "--force", name, check=False)


def run_pod(manifests: str, pod_name: str, container: str, timeout: float = 600) -> tuple[int, str]:
    """``podman kube play`` the YAML, wait for ``container`` to exit; return its code and log."""
    podman("kube", "play", "--network", NETWORK, "-", input=manifests)
    full = f"{pod_name}-{container}"
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(podman("inspect", full).stdout)[0]["State"]
        if state["Status"] in ("exited", "stopped"):
            break
        if time.monotonic() > deadline:
            raise PodmanError(f"{full} still {state['Status']} after {timeout} s")
        time.sleep(0.5)
    logs = podman("logs", full, check=False)
    return int(state["ExitCode"]), logs.stdout + logs.stderr


def remove_pod(pod_name: str) -> None:
    """Remove a played pod and its containers."""
    podman("pod", "rm", "--force", "--ignore", pod_name, check=False)

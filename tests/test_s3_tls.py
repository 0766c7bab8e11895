"""Issue 22 point 16: the data tree on an S3 store that serves HTTPS only, its certificate checked.

A real ``weed`` serves S3 over TLS with a certificate that a CA made here signs. The steps' client
(:func:`northwind_elt.treefs.open_root`) trusts that CA through ``AWS_CA_BUNDLE``; any other CA, or
none, is refused in one line naming the object, and a plain-HTTP client gets nothing through.
"""

import os
import subprocess
import urllib.error
import urllib.request

import pyarrow.fs as pafs
import pytest
from northwind_elt.errors import SettingError, StorageError
from northwind_elt.treefs import open_root
from pipeline import assert_ok, run_step
from s3server import TLSFiles, start_or_fail, with_server
from tls_certs import CA


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """``weed`` serving S3 over TLS only, with a certificate for 127.0.0.1 from a fresh CA."""
    folder = tmp_path_factory.mktemp("seaweedfs-tls")
    ca = CA.new("northwind test objectstore CA")
    cert, key = ca.issue(folder / "tls", ["127.0.0.1", "localhost"])
    server = start_or_fail(folder, tls=TLSFiles(cert, key, ca.write(folder / "ca.crt")))
    yield server
    server.stop()


@pytest.fixture
def tls_env(tls_server, monkeypatch):
    """The process environment of a step on the TLS server (endpoint, keys, AWS_CA_BUNDLE)."""
    for name, value in tls_server.env.items():
        monkeypatch.setenv(name, value)
    return tls_server.env


def test_the_store_serves_https_and_the_ca_bundle_is_what_the_client_trusts(tls_server, tls_env):
    assert tls_server.endpoint.startswith("https://")
    fs, root = open_root(tls_server.new_root())

    fs.write_bytes(root / "probe.json", b'{"ok": true}\n')

    assert fs.read_bytes(root / "probe.json") == b'{"ok": true}\n'
    assert fs.children(root) == ["probe.json"]
    fs.delete(root / "probe.json")
    assert fs.size(root / "probe.json") is None


@pytest.mark.parametrize("trust", ["another CA", "the system's CAs"])
def test_a_certificate_from_an_untrusted_ca_is_refused_in_one_line(tls_server, tls_env, tmp_path,
                                                                     monkeypatch, trust):
    if trust == "another CA":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(CA.new("someone else").write(tmp_path / "ca.crt")))
    else:
        monkeypatch.delenv("AWS_CA_BUNDLE")
    raw = tls_server.new_root()
    fs, root = open_root(raw)

    with pytest.raises(StorageError) as refused:
        fs.write_bytes(root / "probe", b"x")

    message = str(refused.value)
    assert message.startswith(f"cannot write {raw}/probe: ") and "\n" not in message
    assert "SSL" in message or "certificate" in message, message
    assert tls_server.filesystem().get_file_info(f"{raw.removeprefix('s3://')}/probe").type \
        == pafs.FileType.NotFound


def test_a_plain_http_client_gets_nothing_through_the_tls_port(tls_server, tls_env, monkeypatch):
    plain = tls_server.endpoint.replace("https://", "http://")
    monkeypatch.setenv("AWS_ENDPOINT_URL", plain)
    raw = tls_server.new_root()
    fs, root = open_root(raw)

    with pytest.raises(StorageError, match=f"^cannot write {raw}/probe: "):
        fs.write_bytes(root / "probe", b"x")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{plain}/", timeout=10)  # noqa: S310 - loopback test server
    assert answer.value.code == 400  # Go's answer to HTTP on a TLS port; no S3 request was read
    assert tls_server.filesystem().get_file_info(f"{raw.removeprefix('s3://')}/probe").type \
        == pafs.FileType.NotFound


def test_a_missing_ca_bundle_is_one_line_naming_the_setting(tls_env, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-ca.crt"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(missing))

    with pytest.raises(SettingError) as refused:
        open_root("s3://bucket/prefix")
    assert str(refused.value) == (f"AWS_CA_BUNDLE={missing}: no such file (the CA certificate "
                                  "that signed the S3 endpoint's)")

    status = subprocess.run(["northwind", "status"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NORTHWIND_DATA_ROOT": "s3://bucket/prefix"},
                            check=False)
    assert status.returncode == 1
    assert status.stderr.strip() == f"northwind status: error: {refused.value}"


@pytest.mark.slow
def test_a_step_runs_against_the_tls_store(tls_server, pipeline_env, meltano_project, tmp_path):
    env = with_server(pipeline_env, tls_server, tls_server.new_root())
    assert env["AWS_CA_BUNDLE"] and env["AWS_ENDPOINT_URL"].startswith("https://")

    assert_ok(run_step("extract-csv", "2024-01-02", env))

    fs, root = tls_server.filesystem(), env["NORTHWIND_DATA_ROOT"].removeprefix("s3://")
    commit = fs.get_file_info(f"{root}/_commits/2024-01-02/extract-csv.json")
    assert commit.type == pafs.FileType.File

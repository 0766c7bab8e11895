"""How files reach S3-compatible object storage (a real SeaweedFS server on loopback).

A published file arrives whole whatever its size, or not at all; an upload holds a bounded
window in memory, not the file, also while it follows a file still growing; a report's JSON the
server renders streams to the bucket like its files. Whole days on S3: tests/test_s3_backend.py.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
from northwind_elt import report, tree_s3
from northwind_elt.tree_s3 import S3Tree
from northwind_elt.treefs import CHUNK, UPLOAD_WINDOW, Outbox, TreeFS, open_root

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
#: How much larger than a window the file of the memory tests is.
WINDOWS = 12

#: Runs first in the memory tests' own process: the client and its threads exist before the
#: baseline, so what is measured is the upload.
_BASELINE = """
import os, resource, sys
from pathlib import Path
from northwind_elt.treefs import CHUNK, UPLOAD_WINDOW, Outbox, open_root
fs, root = open_root(sys.argv[1])
fs.write_bytes(root / "warm-up", b"x")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""
#: Publishes the file argv[2] with put_file.
_UPLOAD = "fs.put_file(Path(sys.argv[2]), root / 'big.bin')"
#: Grows a file through an S3 outbox (folder argv[2]), which uploads it meanwhile.
_STREAMED = f"""
with Outbox(fs, root, Path(sys.argv[2])).file("big.bin") as staged:
    for size in range(CHUNK, {WINDOWS} * UPLOAD_WINDOW + 1, CHUNK):
        os.truncate(staged.path, size)  # grows by sparse zeros, faster than any upload
        staged.grew()
"""
_PEAK = "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)"


def _added_peak(s3_server, root: str, work: str, argument: str) -> int:
    """The peak RSS (bytes) that ``work`` adds in a process of its own, with root and argument."""
    done = subprocess.run([sys.executable, "-c", "\n".join((_BASELINE, work, _PEAK)), root, argument],
                          env={**os.environ, **s3_server.env}, capture_output=True, text=True,
                          check=True)
    return int(done.stdout.strip())


def _size(s3_server, root: str, name: str) -> int:
    return s3_server.filesystem().get_file_info(f"{root.removeprefix('s3://')}/{name}").size


@pytest.mark.parametrize("column", ["'0044-03-15 BC'::date", "'2024-01-02 03:04'::timestamp"])
def test_a_json_the_server_renders_is_streamed_to_s3_like_the_files(databases, s3_server,
                                                                     tmp_path, monkeypatch,
                                                                     column):
    # A BC date: the JSON built from the CSV is dropped mid-upload, the server's uploaded instead.
    # A timestamp: the server renders the JSON on a second connection while the CSV streams.
    with databases.warehouse(autocommit=True) as conn:
        conn.execute("CREATE SCHEMA snapshots")
        conn.execute("CREATE TABLE snapshots.orders (order_id int4, snapshot_date date, note text)")
        conn.execute(f"CREATE TABLE snapshots.order_details (order_id int4, snapshot_date date, "
                     f"moment {column.split('::')[1]})")
        conn.execute("INSERT INTO snapshots.orders VALUES (1, %s, 'a\"b')", (DAY,))
        conn.execute(f"INSERT INTO snapshots.order_details VALUES (1, %s, {column})", (DAY,))
    monkeypatch.setattr(report, "loaded_days", lambda cur: {dt.date.fromisoformat(DAY)})
    fs, folder = S3Tree(s3_server.filesystem()), PurePosixPath(
        s3_server.new_root().removeprefix("s3://"))
    outbox = Outbox(fs, folder, tmp_path / "staging")
    with databases.warehouse() as conn, databases.warehouse() as second:
        assert report.write_report(conn, dt.date.fromisoformat(DAY), outbox, second) == 1
        assert report.write_report(conn, dt.date.fromisoformat(DAY), tmp_path / "local") == 1

    assert outbox.published in ([report.CSV_NAME, report.JSON_NAME],
                                [report.JSON_NAME, report.CSV_NAME])
    for name in outbox.published:
        assert fs.read_bytes(folder / name) == (tmp_path / "local" / name).read_bytes()
    assert list((tmp_path / "staging").iterdir()) == []


def test_an_upload_holds_a_bounded_window_in_memory_not_the_file(s3_server, tmp_path):
    root = s3_server.new_root()
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:
        out.truncate(WINDOWS * UPLOAD_WINDOW)  # sparse: cheap to make, read back as zeros

    added = _added_peak(s3_server, root, _UPLOAD, str(big))

    # pyarrow's background uploads alone held the whole file; waiting for them every window
    # keeps one or two in memory, beside the client's own.
    assert added < 4 * UPLOAD_WINDOW
    assert not big.exists()
    assert _size(s3_server, root, "big.bin") == WINDOWS * UPLOAD_WINDOW


@pytest.fixture
def s3_tree(s3_server, monkeypatch) -> tuple[TreeFS, PurePosixPath]:
    """A fresh data root on the S3 server, opened as a step opens it (from its environment)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return open_root(s3_server.new_root())


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
def test_a_published_file_arrives_whole_whatever_its_size(s3_tree, tmp_path, monkeypatch, size):
    fs, root = s3_tree
    local = tmp_path / "file.bin"
    local.write_bytes(os.urandom(size))
    sent = local.read_bytes()
    asked = []

    def recording(source, most):
        asked.append(most)
        return chunks(source, most)

    chunks = tree_s3._next_chunk
    monkeypatch.setattr(tree_s3, "_next_chunk", recording)
    fs.put_file(local, root / "file.bin")

    assert fs.read_bytes(root / "file.bin") == sent
    assert not local.exists()
    # Buffers sized by what is left of the file, at most a chunk: a small file takes a small one.
    assert [most for most in asked if most > 0] == [min(CHUNK, size - done)
                                                     for done in range(0, size, CHUNK)]


def test_an_upload_failing_part_way_leaves_no_truncated_object(s3_tree, tmp_path, monkeypatch):
    fs, root = s3_tree
    fs.write_bytes(root / "file.bin", b"the previous run's")
    local = tmp_path / "file.bin"
    local.write_bytes(os.urandom(2 * CHUNK + 7))
    chunks = tree_s3._next_chunk

    def failing_second_read(source, most):
        if source.tell() >= CHUNK:
            raise OSError("disk read error")
        return chunks(source, most)

    monkeypatch.setattr(tree_s3, "_next_chunk", failing_second_read)
    with pytest.raises(OSError, match="disk read error"):
        fs.put_file(local, root / "file.bin")

    # pyarrow completed the upload with the first chunk; the failure deleted it again.
    assert fs.size(root / "file.bin") is None
    assert local.exists()  # the staged file stays for the step's own cleanup


def test_an_upload_that_follows_a_growing_file_holds_a_bounded_window(s3_server, tmp_path):
    root, staging = s3_server.new_root(), tmp_path / "staging"

    added = _added_peak(s3_server, root, _STREAMED, str(staging))

    assert added < 4 * UPLOAD_WINDOW
    assert list(staging.iterdir()) == []
    assert _size(s3_server, root, "big.bin") == WINDOWS * UPLOAD_WINDOW

"""`make up`'s data folder (issue 22 point 6): group DATA_GID, mode 2770, nothing open to others.

The recipe `data-folder` of mk/cluster.mk runs for real on a temp folder, with the data tree's
group given on the command line (the rest comes from cluster.env, as in `make up`).
"""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import helm
import pytest
from dag_support import TASK_IDS, build_pod, utc_day
from northwind.cluster import load

CLUSTER_MK = helm.ROOT / "mk" / "cluster.mk"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play another user")
#: A group the test may give: any group for root, else the user's own.
GID = 4242 if os.geteuid() == 0 else os.getgid()


def _make(folder: Path, gid: int = GID, user: int | None = None) -> subprocess.CompletedProcess:
    command = ["make", "-s", "-C", str(helm.ROOT), "data-folder", f"DATA_DIR={folder}",
               f"DATA_GID={gid}"]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_up_makes_the_data_folder_and_never_opens_it_to_all():
    text = CLUSTER_MK.read_text()
    assert "0777" not in text and "a+w" not in text and "o+w" not in text
    up = next(line for line in text.splitlines() if line.startswith("up:"))
    assert "data-folder" in up


def test_a_new_data_folder_is_setgid_and_the_groups_only(tmp_path):
    result = _make(tmp_path / "data")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert _mode(data) == 0o2770
    assert data.stat().st_gid == GID


def test_an_old_world_writable_tree_is_closed_and_put_in_the_group(tmp_path):
    # What the old `make up` (chmod 0777) and the old umask 0 of the steps left.
    old = tmp_path / "data" / "_status" / "2024-01-02"
    old.mkdir(parents=True)
    for folder in (tmp_path / "data", tmp_path / "data" / "_status", old):
        folder.chmod(0o777)
    marker = old / "extract-csv.json"
    marker.write_text("{}")
    marker.chmod(0o644)
    result = _make(tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert _mode(old) == _mode(tmp_path / "data" / "_status") == 0o2770
    assert _mode(marker) == 0o660
    assert {p.stat().st_gid for p in (old, marker)} == {GID}
    assert _make(tmp_path / "data").returncode == 0  # again: nothing left to change


@ROOT_ONLY
def test_someone_elses_open_file_is_named_not_ignored(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    stray = data / "left-by-a-pod.json"
    stray.write_text("{}")
    os.chown(stray, 10001, 10001)
    stray.chmod(0o666)
    result = _make(data)
    assert result.returncode != 0
    assert str(stray) in result.stderr and "sudo chmod -R g+rwX,o=" in result.stderr


@ROOT_ONLY
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
def test_a_user_outside_the_group_gets_one_line():
    nobody = 65534
    # Outside pytest's temp folders, which other users cannot enter.
    with tempfile.TemporaryDirectory(prefix="sec2-data-folder-") as folder:
        _as_nobody(Path(folder), nobody)


def _as_nobody(home: Path, nobody: int) -> None:
    os.chown(home, nobody, nobody)
    result = _make(home / "data", gid=4242, user=nobody)
    assert result.returncode != 0
    line = next(line for line in result.stderr.splitlines() if "cannot give it group 4242" in line)
    assert "DATA_GID=65534" in line and "usermod" in line
    # Its own gid works, as the line says.
    assert _make(home / "data", gid=nobody, user=nobody).returncode == 0
    assert _mode(home / "data") == 0o2770


def test_cluster_env_names_the_group():
    assert int(load().data_gid) > 0


def test_step_pods_hold_the_data_trees_group():
    gid = int(load().data_gid)
    for task_id in TASK_IDS:
        pod = build_pod(task_id, logical_date=utc_day("2024-01-02"))
        assert pod.spec.security_context.fs_group == gid, task_id


def _test_pod(values: dict | None = None) -> dict:
    docs = helm.render("northwind-pipeline", values)
    return next(d for d in helm.by_kind(docs, "Pod") if d["metadata"]["name"].endswith("test-connection"))


def test_the_charts_test_pod_holds_the_data_trees_group():
    assert _test_pod()["spec"]["securityContext"]["fsGroup"] == int(load().data_gid)
    assert _test_pod({"data": {"gid": 4242}})["spec"]["securityContext"]["fsGroup"] == 4242

"""Issue 22 point 6: the data tree is shared by one group, never by everyone.

Folders 0o770 and files 0o660 at most, set explicitly whatever the umask (no library code changes
the process umask); a folder keeps the setgid bit of a shared top folder (`make up`'s 2770).
"""

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from northwind_elt import atomic
from northwind_elt.layout import DataTree
from pipeline import assert_ok, run_day

FOLDER_MOST = 0o2770
FILE_MOST = 0o660


def _too_open(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        most = FOLDER_MOST if stat.S_ISDIR(mode) else FILE_MOST
        if stat.S_IMODE(mode) & ~most:
            found.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(mode):o}")
    return found


@pytest.fixture
def umask():
    """Set the process umask for a test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def test_constructing_a_data_tree_keeps_the_umask(tmp_path, umask):
    umask(0o027)
    DataTree.from_setting(str(tmp_path / "data"))
    assert os.umask(0o027) == 0o027


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_written_files_are_group_shared_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    tree = DataTree.from_setting(str(tmp_path / "data"))
    tree.fs.write_json(tree.status_file("extract-csv", dt.date(2024, 1, 2)), {})
    for path in [tmp_path / "data", *(tmp_path / "data").rglob("*")]:
        expected = 0o770 if path.is_dir() else 0o660
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_folders_keep_the_setgid_bit_of_a_shared_top_folder(tmp_path, umask):
    umask(0o022)
    top = tmp_path / "data"
    top.mkdir()
    top.chmod(0o2770)
    atomic.make_folders(top / "_status" / "2024-01-02")
    for folder in (top / "_status", top / "_status" / "2024-01-02"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o2770


def test_a_local_day_leaves_nothing_world_readable(pipeline_env, meltano_project, umask):
    # 022 is the usual umask: under the old code the tree came out 0777/0666 (umask 0), and with
    # a plain mkdir it would be 0755/0644 (world-readable, and the tree's group could not write).
    umask(0o022)
    for result in run_day("2024-01-02", pipeline_env).values():
        assert_ok(result)
    root = Path(pipeline_env["NORTHWIND_DATA_ROOT"])
    assert any(root.rglob("*.parquet")), "the day wrote nothing"
    assert _too_open(root) == []
    assert os.umask(0o022) == 0o022

"""Fault injection at every publish point of the commit protocol, on both backends.

Each step is made to SIGKILL itself (``NORTHWIND_KILL_AT``) at a named point of its publish:
between two partitions, before and after its commit, between the report's CSV and JSON, between
the load's warehouse commit and its marker. The day was run once before, and the source changed
since, so the old and the new output differ. After each kill a reader (what the next step reads
through the commits) sees the previous committed output whole, or the new one whole once
committed, never a mix; the killed attempt's marker shows ``dead``; and a plain rerun heals.
"""

import datetime as dt
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from northwind_elt import steps
from northwind_elt.commits import FOLDER_OF_STEP, committed_files, read_commit
from northwind_elt.faults import KILL_AT_VARIABLE
from northwind_elt.layout import DataTree
from northwind_elt.manifest import verify_partition
from pipeline import assert_ok, output, run_day, run_step, warehouse_digest
from s3server import with_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
D = dt.date.fromisoformat(DAY)
PUBLISHING = tuple(FOLDER_OF_STEP)


@pytest.fixture(params=["local", "s3"])
def env(request, databases, monkeypatch) -> dict[str, str]:
    """The step environment on a local data tree, or on a fresh prefix of the S3 server."""
    # Reruns of a day read the changed source again (a rerun keeps a succeeded extract else).
    base = {**databases.env, "NORTHWIND_REEXTRACT": "true"}
    if request.param == "local":
        return base
    server = request.getfixturevalue("s3_server")
    found = with_server(base, server, server.new_root())
    for key, value in found.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)  # this process reads the tree too
    return found


def tree_of(env: dict[str, str]) -> DataTree:
    return DataTree.from_setting(env["NORTHWIND_DATA_ROOT"])


def view(tree: DataTree, step: str, copies: Path) -> dict[str, str] | None:
    """What a reader of ``step``'s day sees: each committed file's digest (None: nothing).

    Every partition is verified against its manifest: a mix of attempts would fail here.
    """
    commit = read_commit(tree, step, D)
    if commit is None:
        return None
    if step != steps.PUBLISH_REPORT:
        for stream in commit.details["streams"]:
            verify_partition(tree.partition(commit.details["source"], stream, D, commit.attempt),
                             copies / commit.attempt / stream)
    return {str(path.relative_to(tree.root)).replace(f"/{commit.attempt}/", "/"):
            hashlib.sha256(tree.fs.read_bytes(path)).hexdigest()
            for path in committed_files(tree, step, D) if not path.name.endswith(".json")
            or step == steps.PUBLISH_REPORT}


def attempt_folders(tree: DataTree, step: str) -> set[str]:
    """Every attempt folder name of ``step``'s day, in any of its folders."""
    return {name for folder in tree.day_folders(FOLDER_OF_STEP[step], D)
            for name in tree.fs.children(folder)}


def change_source(databases) -> None:
    """New values in several tables and in the CSV: the next extract differs from the last."""
    with databases.source() as conn:
        for table, change in (("customers", "company_name = upper(company_name)"),
                              ("orders", "freight = freight + 1"),
                              ("products", "unit_price = unit_price + 1"),
                              ("suppliers", "company_name = lower(company_name)")):
            conn.execute(f"UPDATE {table} SET {change}")
    csv = Path(databases.env["ORDER_DETAILS_CSV"])
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text(lines[0] + lines[1].replace(",12,", ",13,", 1) + "".join(lines[2:]))


def status_of(env: dict[str, str], step: str) -> str:
    result = subprocess.run(["northwind", "status", "--date", DAY], env={**os.environ, **env},
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return next(line.split()[2] for line in result.stdout.splitlines()
                if line.split()[1:2] == [step])


def killed(step: str, point: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = run_step(step, DAY, {**env, KILL_AT_VARIABLE: point})
    assert result.returncode != 0, f"{step} was not killed at {point}:\n{output(result)[-3000:]}"
    return result


def assert_healed(tree: DataTree, step: str, env: dict[str, str]) -> None:
    """A plain rerun succeeds and leaves one attempt (the committed one), no work file."""
    assert_ok(run_step(step, DAY, env))
    marker = steps.read_marker(tree, step, D)
    assert marker.status == steps.SUCCESS
    if step in PUBLISHING:
        assert attempt_folders(tree, step) == {read_commit(tree, step, D).attempt}
        assert marker.commit == read_commit(tree, step, D).attempt


EXTRACT_POINTS = [(steps.EXTRACT_POSTGRES, "between-partitions"),
                  (steps.EXTRACT_CSV, "before-commit"),
                  (steps.EXTRACT_POSTGRES, "after-commit")]


@pytest.mark.parametrize("step, point", EXTRACT_POINTS)
def test_an_extract_killed_while_publishing_shows_one_commit_and_a_rerun_heals(
        databases, env, tmp_path, step, point):
    for result in run_day(DAY, env).values():
        assert_ok(result)
    tree = tree_of(env)
    before = view(tree, step, tmp_path / "before")
    change_source(databases)

    killed(step, point, env)
    during = view(tree, step, tmp_path / "during")
    if point == "after-commit":
        assert during != before  # the new attempt, whole: its commit was written
    else:
        assert during == before  # the previous commit, whole
        assert len(attempt_folders(tree, step)) == 2  # the killed attempt's files are there ...
    assert status_of(env, step) == steps.DEAD  # ... and its marker is not stuck on running
    refused = run_step(steps.LOAD_WAREHOUSE, DAY, env)
    assert refused.returncode != 0 and f"{step} is dead for {DAY}" in output(refused)
    assert status_of(env, steps.LOAD_WAREHOUSE) == steps.STALE  # it read the previous extract

    assert_healed(tree, step, env)
    healed = view(tree, step, tmp_path / "healed")
    assert healed != before and healed.keys() == before.keys()
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY, env))
    assert status_of(env, steps.LOAD_WAREHOUSE) == steps.SUCCESS


def test_a_load_killed_between_its_commit_and_its_marker_is_found_by_its_id(
        databases, env, tmp_path):
    for result in run_day(DAY, env).values():
        assert_ok(result)
    tree = tree_of(env)
    change_source(databases)
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV):
        assert_ok(run_step(step, DAY, env))

    killed(steps.LOAD_WAREHOUSE, "after-commit", env)
    marker = steps.read_marker(tree, steps.LOAD_WAREHOUSE, D)
    assert steps.state_of(tree, marker) == steps.DEAD
    with databases.warehouse() as wh:
        # The warehouse committed: _loads names the attempt the dead marker announced.
        (attempt,) = wh.execute("SELECT attempt FROM northwind.loads WHERE snapshot_date = %s",
                                (D,)).fetchone()
        assert attempt == marker.commit
        loaded = warehouse_digest(wh)
    refused = run_step(steps.PUBLISH_REPORT, DAY, env)
    assert refused.returncode != 0 and f"load-warehouse is dead for {DAY}" in output(refused)
    assert status_of(env, steps.PUBLISH_REPORT) == steps.STALE

    assert_healed(tree, steps.LOAD_WAREHOUSE, env)
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded  # the same data, loaded again whole
    assert_ok(run_step(steps.PUBLISH_REPORT, DAY, env))
    report = steps.read_marker(tree, steps.PUBLISH_REPORT, D)
    load = steps.read_marker(tree, steps.LOAD_WAREHOUSE, D)
    assert report.inputs == {steps.LOAD_WAREHOUSE: load.commit}
    assert report.details["load"] == {"attempt": load.commit,
                                      "loaded_at": load.details["loaded_at"]}


@pytest.mark.parametrize("point", ["between-evidence-files", "after-commit"])
def test_a_report_killed_between_its_files_keeps_the_previous_pair(
        databases, env, tmp_path, point):
    for result in run_day(DAY, env).values():
        assert_ok(result)
    tree = tree_of(env)
    before = view(tree, steps.PUBLISH_REPORT, tmp_path)
    change_source(databases)
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV, steps.LOAD_WAREHOUSE):
        assert_ok(run_step(step, DAY, env))
    # A newer load: the evidence of the previous one is stale until the report is rerun.
    assert status_of(env, steps.PUBLISH_REPORT) == steps.STALE

    killed(steps.PUBLISH_REPORT, point, env)
    during = view(tree, steps.PUBLISH_REPORT, tmp_path)
    assert sorted(during) == [f"reports/{DAY}/orders_with_details.{ext}" for ext in ("csv", "json")]
    if point == "after-commit":
        assert during[f"reports/{DAY}/orders_with_details.csv"] != \
            before[f"reports/{DAY}/orders_with_details.csv"]
    else:
        assert during == before  # the old CSV and the old JSON: never a new CSV beside an old JSON
    assert status_of(env, steps.PUBLISH_REPORT) == steps.DEAD

    assert_healed(tree, steps.PUBLISH_REPORT, env)
    healed = view(tree, steps.PUBLISH_REPORT, tmp_path)
    assert all(healed[name] != before[name] for name in before)
    assert status_of(env, steps.PUBLISH_REPORT) == steps.SUCCESS
    leftovers = [name for folder in tree.day_folders("reports", D)
                 for name in tree.fs.children(folder)]
    assert leftovers == [read_commit(tree, steps.PUBLISH_REPORT, D).attempt]
    if tree.fs.is_local:  # no temporary file of the killed attempt stays anywhere
        assert [p for p in Path(tree.root).rglob("*.tmp") if ".staging" not in p.parts] == []
    commit = json.loads(tree.fs.read_bytes(tree.commit_file(steps.PUBLISH_REPORT, D)))
    assert commit["details"]["files"] == ["orders_with_details.csv", "orders_with_details.json"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of its own (mounting needs root: skipped, saying so, elsewhere)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with a file of real bytes, leaving about ``leave`` bytes free."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_fails_an_extract_with_its_reason_and_the_previous_commit_stays(
        databases, small_disk, tmp_path):
    env = {**databases.env, "NORTHWIND_DATA_ROOT": str(small_disk / "data"),
           "NORTHWIND_REEXTRACT": "true"}
    assert_ok(run_step(steps.EXTRACT_CSV, DAY, env))
    tree = tree_of(env)
    before = view(tree, steps.EXTRACT_CSV, tmp_path / "before")
    # The day grows past what is left of the disk: room to start, not for the day's files.
    csv = Path(databases.env["ORDER_DETAILS_CSV"])
    with open(csv, "a") as out:
        out.writelines(f"{20_000 + n // 8},{n % 8 + 1},{n * 7919 % 100_003 / 100},{n % 97 + 1},0\n"
                       for n in range(100_000))  # (order_id, product_id) stays a key
    filler = fill(small_disk, leave=64 << 10)

    failed = run_step(steps.EXTRACT_CSV, DAY, env)
    assert failed.returncode != 0
    marker = steps.read_marker(tree, steps.EXTRACT_CSV, D)
    # Not stuck on running: the attempt freed its work files, then recorded why it failed.
    assert marker.status == steps.FAILED, output(failed)[-4000:]
    assert "no space left on device" in marker.error.lower()
    assert view(tree, steps.EXTRACT_CSV, tmp_path / "during") == before
    assert attempt_folders(tree, steps.EXTRACT_CSV) == {read_commit(tree, steps.EXTRACT_CSV,
                                                                   D).attempt}

    filler.unlink()
    assert_healed(tree, steps.EXTRACT_CSV, env)
    assert view(tree, steps.EXTRACT_CSV, tmp_path / "healed") != before

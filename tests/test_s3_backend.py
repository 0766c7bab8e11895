"""The data tree on S3-compatible object storage (a real SeaweedFS server on loopback).

A day on ``s3://bucket/prefix`` must give the same partitions (by checksum), warehouse and evidence as
on the file system; reruns change nothing; and the fault tests of the file system hold without any
rename: kills mid-extract, mid-publish and mid-load, a report failing while its files upload, a
corrupted object, two runs of one day at once, hostile table names whose keys stay under the prefix.
How single files reach the bucket: tests/test_s3_uploads.py.
"""

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from northwind_elt import cli, report, steps
from northwind_elt.errors import PartitionError, PrerequisiteError
from northwind_elt.layout import DataTree, path_segment
from pipeline import (
    assert_ok,
    committed_key,
    committed_view,
    output,
    run_day,
    run_step,
    tree_digest,
    warehouse_digest,
)
from psycopg import sql
from s3server import BUCKET, FreezingProxy, with_server
from settings import SOURCE_ROWS
from tap_datatree.tap import TapDataTree
from test_faults import backends, kill_group, start_step, wait_for
from test_hostile_input import HOSTILE_TABLES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"


def objects(server, root: str, raw: bool = False) -> dict[str, bytes]:
    """Every object under the ``s3://`` root a reader sees (or, ``raw``, every one), by key
    relative to it, without attempt folders (see pipeline.committed_view)."""
    fs, base = server.filesystem(), root.removeprefix("s3://")
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as stream:
                found[info.path.removeprefix(base + "/")] = stream.read()
    return found if raw else committed_view(found)


def published(found: dict[str, bytes]) -> dict[str, object]:
    """Data checksums and manifests (but for their extraction time) of every partition."""
    result: dict[str, object] = {}
    for key, data in found.items():
        if key.endswith(".parquet"):
            result[key] = hashlib.sha256(data).hexdigest()
        elif key.endswith(".manifest.json"):
            manifest = json.loads(data)
            manifest.pop("extracted_at")
            manifest.pop("provenance")  # when and from which source snapshot: each run's own
            result[key] = manifest
    return result


def local_published(root) -> dict[str, object]:
    manifests = {key: json.loads(p.read_text()) for p in root.glob("**/*.manifest.json")
                 if ".staging" not in p.parts
                 and (key := committed_key(root, p.relative_to(root))) is not None}
    for manifest in manifests.values():
        manifest.pop("extracted_at")
        manifest.pop("provenance")
    return tree_digest(root) | manifests


def marker(found: dict[str, bytes], step: str) -> dict | None:
    data = found.get(f"_status/{DAY}/{step}.json")
    return json.loads(data) if data is not None else None


def northwind(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["northwind", *args], env={**os.environ, **env},
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def s3_env(databases, s3_server):
    """The step environment of ``databases`` with its data tree on a fresh S3 prefix."""
    return with_server(databases.env, s3_server, s3_server.new_root())


def test_a_day_on_s3_equals_the_day_on_the_file_system_and_a_rerun_changes_nothing(
        databases, s3_server, s3_env):
    for result in run_day(DAY, databases.env).values():
        assert_ok(result)
    local = databases.data_root
    expected = local_published(local)
    evidence = {key: p.read_bytes() for p in local.glob("reports/**/*")
                if p.is_file() and (key := committed_key(local, p.relative_to(local)))}
    with databases.warehouse() as wh:
        loaded = warehouse_digest(wh)

    root = s3_env["NORTHWIND_DATA_ROOT"]
    for result in run_day(DAY, s3_env).values():
        assert_ok(result)
    found = objects(s3_server, root)
    assert published(found) == expected
    assert {k: v for k, v in found.items() if k.startswith("reports/")} == evidence
    assert {marker(found, step)["status"] for step in steps.STEPS} == {steps.SUCCESS}
    attempt = json.loads(found[f"_commits/{DAY}/publish-report.json"])["attempt"]
    assert marker(found, steps.PUBLISH_REPORT)["details"]["files"] == [
        f"{root}/reports/{DAY}/{attempt}/orders_with_details.csv",
        f"{root}/reports/{DAY}/{attempt}/orders_with_details.json"]
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded
    # Nothing but the tree's objects: no staging or batch files on the bucket ...
    assert {k.split("/")[0] for k in found} == {"postgres", "csv", "reports", "_status",
                                                "_commits"}
    # ... and the local work files are gone.
    staging = s3_env["NORTHWIND_STAGING_DIR"]
    assert [p for p in Path(staging).rglob("*") if p.is_file()] == []

    status = northwind("status", "--date", DAY, env=s3_env)
    assert status.returncode == 0, status.stderr
    assert [line.split()[2] for line in status.stdout.splitlines()[1:]] == ["success"] * len(steps.STEPS)

    # A rerun: the same bytes everywhere but the markers and manifests' extraction times.
    for result in run_day(DAY, s3_env).values():
        assert_ok(result)
    again = objects(s3_server, root)
    assert published(again) == expected
    assert {k: v for k, v in again.items() if k.endswith(".parquet") or k.startswith("reports/")} \
        == {k: v for k, v in found.items() if k.endswith(".parquet") or k.startswith("reports/")}
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded


def test_kills_mid_extract_mid_publish_and_mid_load_leave_a_visible_state_a_rerun_heals(
        databases, s3_server, s3_env, tmp_path):
    root, env = s3_env["NORTHWIND_DATA_ROOT"], s3_env
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV, steps.LOAD_WAREHOUSE):
        assert_ok(run_step(step, DAY, env))
    before = published(objects(s3_server, root))
    with databases.warehouse() as wh:
        loaded = warehouse_digest(wh)

    # Mid-publish: the source changed, the rerun has uploaded categories into its attempt
    # (published beside the others) and is held, by a proxy, at the upload of orders; then
    # killed. Readers still see the previous commit, whole; the old success does not stand.
    with databases.source(autocommit=True) as src:
        src.execute("UPDATE categories SET description = description || ' (v2)'")
    proxy = FreezingProxy(s3_server.endpoint, re.compile(
        rb"(PUT|POST) /" + BUCKET.encode() + rb"/[^ ]*/postgres/orders/"))
    categories = f"postgres/categories/{DAY}/categories.parquet"
    try:
        extract = start_step(steps.EXTRACT_POSTGRES, with_server(
            {**databases.env, "NORTHWIND_REEXTRACT": "1"}, s3_server, root, proxy.endpoint),
            tmp_path / "killed-publish.log")
        wait_for(proxy.frozen.is_set, "the extract to upload orders", timeout=180)
        wait_for(lambda: sum(k.startswith(f"postgres/categories/{DAY}/") and
                             k.endswith("categories.parquet")
                             for k in objects(s3_server, root, raw=True)) == 2,
                 "the extract to upload categories into its attempt")
        kill_group(extract)
    finally:
        proxy.close()
    found = objects(s3_server, root)
    assert published(found) == before  # the new categories are not current: no mix
    assert marker(found, steps.EXTRACT_POSTGRES)["status"] == steps.RUNNING
    load = run_step(steps.LOAD_WAREHOUSE, DAY, env)
    assert load.returncode != 0
    assert "extract-postgres is dead" in output(load)
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded
    assert_ok(run_step(steps.EXTRACT_POSTGRES, DAY, env))
    healed = published(objects(s3_server, root))
    assert healed[categories] != before[categories]
    assert {k: v for k, v in healed.items() if "categories" not in k} == {
        k: v for k, v in before.items() if "categories" not in k}
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY, env))
    with databases.warehouse() as wh:
        loaded = warehouse_digest(wh)
        assert wh.execute("SELECT count(*) FROM categories WHERE description LIKE '%(v2)'"
                          ).fetchone() == (8,)
    files = published(objects(s3_server, root))

    # Mid-load: the load waits for snapshots.orders (earlier tables replaced in its transaction).
    with databases.warehouse() as lock, databases.warehouse(autocommit=True) as watch:
        lock.execute("LOCK TABLE snapshots.orders IN ACCESS EXCLUSIVE MODE")
        killed = start_step(steps.LOAD_WAREHOUSE, env, tmp_path / "killed-load.log")
        wait_for(lambda: any(kind == "Lock" and "orders" in query
                             for kind, _, query in backends(watch, "northwind-warehouse")),
                 "the load to wait for snapshots.orders")
        kill_group(killed)
        lock.rollback()
        wait_for(lambda: not backends(watch, "northwind-warehouse"), "the killed load to roll back")
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded
    found = objects(s3_server, root)
    assert marker(found, steps.LOAD_WAREHOUSE)["status"] in (steps.RUNNING, steps.FAILED)
    assert published(found) == files

    # Mid-extract: the extract waits for the source's orders; nothing is on the bucket yet.
    with databases.source() as lock, databases.source(autocommit=True) as watch:
        lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        killed = start_step(steps.EXTRACT_POSTGRES, {**env, "NORTHWIND_REEXTRACT": "1"},
                            tmp_path / "killed-extract.log")
        staging = Path(env["NORTHWIND_STAGING_DIR"])
        wait_for(lambda: any(kind == "Lock" for kind, _, _ in backends(watch, "northwind-source"))
                 and any(staging.rglob("*.parquet")),
                 "the extract to wait for orders with earlier tables staged locally")
        kill_group(killed)
    found = objects(s3_server, root)
    assert published(found) == files
    assert marker(found, steps.EXTRACT_POSTGRES)["status"] in (steps.RUNNING, steps.FAILED)
    for step in (steps.EXTRACT_POSTGRES, steps.LOAD_WAREHOUSE):
        assert_ok(run_step(step, DAY, env))
    assert published(objects(s3_server, root)) == files
    with databases.warehouse() as wh:
        assert warehouse_digest(wh) == loaded


def test_a_report_failing_while_its_files_upload_leaves_no_evidence_and_a_failed_marker(
        databases, s3_server, s3_env, monkeypatch):
    root = s3_env["NORTHWIND_DATA_ROOT"]
    for result in run_day(DAY, s3_env).values():
        assert_ok(result)
    evidence = {k: v for k, v in objects(s3_server, root).items() if k.startswith("reports/")}
    assert len(evidence) == 2
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)

    # The warehouse connection breaks a few hand-overs into the CSV, while the JSON follows it
    # and both uploads follow their files.
    monkeypatch.setattr(report, "FOLLOW_ROWS", 256)
    real = report._hand_over

    calls = 0

    def breaking(out, staged):  # called every FOLLOW_ROWS rows
        nonlocal calls
        real(out, staged)
        calls += 1
        if calls == 3:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(report, "_hand_over", breaking)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli.main(["report", "--date", DAY]) == 1
    assert err.getvalue().startswith("northwind report: error: the warehouse database ")
    assert err.getvalue().endswith(": connection lost: server closed the connection unexpectedly\n")

    found = objects(s3_server, root)
    # The previous evidence is still current, and no object of the failed attempt stays.
    assert {k: v for k, v in found.items() if k.startswith("reports/")} == evidence
    assert len([k for k in objects(s3_server, root, raw=True) if k.startswith("reports/")]) == 2
    failed = marker(found, steps.PUBLISH_REPORT)
    assert failed["status"] == steps.FAILED
    assert "server closed the connection unexpectedly" in failed["error"]
    staging = Path(s3_env["NORTHWIND_STAGING_DIR"])
    assert [p for p in staging.rglob("*") if p.is_file()] == []

    # A rerun publishes the same evidence again.
    monkeypatch.setattr(report, "_hand_over", real)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["report", "--date", DAY]) == 0
    found = objects(s3_server, root)
    assert {k: v for k, v in found.items() if k.startswith("reports/")} == evidence
    assert marker(found, steps.PUBLISH_REPORT)["status"] == steps.SUCCESS


def test_a_corrupted_object_is_refused_naming_it(databases, s3_server, s3_env, monkeypatch):
    root, env = s3_env["NORTHWIND_DATA_ROOT"], s3_env
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV):
        assert_ok(run_step(step, DAY, env))
    fs = s3_server.filesystem()
    attempt = json.loads(objects(s3_server, root)[f"_commits/{DAY}/extract-postgres.json"])[
        "attempt"]
    key = f"{root.removeprefix('s3://')}/postgres/orders/{DAY}/{attempt}/orders.parquet"
    with fs.open_input_stream(key) as stream:
        intact = stream.read()
    corrupt = bytearray(intact)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with fs.open_output_stream(key) as out:
        out.write(bytes(corrupt))
    changed = run_step(steps.LOAD_WAREHOUSE, DAY, env)
    assert changed.returncode != 0
    reason = f"partition file s3://{key} fails its checksum"
    assert reason in output(changed)
    found = marker(objects(s3_server, root), steps.LOAD_WAREHOUSE)
    assert found["status"] == steps.FAILED and reason in found["error"]
    with databases.warehouse() as wh:
        assert wh.execute("SELECT to_regnamespace('snapshots')").fetchone() == (None,)

    # Truncated: refused before anything is sent (in-process), and no local copy is left behind.
    with fs.open_output_stream(key) as out:
        out.write(intact[: len(intact) // 2])
    for name, value in env.items():
        if name.startswith("AWS_") or name == "NORTHWIND_STAGING_DIR":
            monkeypatch.setenv(name, value)
    config = {"data_root": root, "run_date": DAY, "step": "load-warehouse"}
    with pytest.raises(PartitionError, match=re.escape(
            f"partition file s3://{key} has {len(intact) // 2} bytes, its manifest says "
            f"{len(intact)}: it was truncated")), contextlib.redirect_stdout(io.StringIO()):
        TapDataTree(config=config).sync_all()
    staging = Path(env["NORTHWIND_STAGING_DIR"])  # only the attempt's note of its failure
    assert [p.name for p in staging.rglob("*") if p.is_file()] == [
        steps.failure_note(DataTree.from_setting(root), steps.LOAD_WAREHOUSE,
                           dt.date.fromisoformat(DAY)).name]
    with pytest.raises(PrerequisiteError):
        steps.require_prerequisites(DataTree.from_setting(root), steps.PUBLISH_REPORT,
                                    dt.date.fromisoformat(DAY))


def test_two_runs_of_one_day_at_once_end_as_one_verified_day(databases, s3_server, s3_env,
                                                             tmp_path):
    root, env = s3_env["NORTHWIND_DATA_ROOT"], s3_env
    logs = [tmp_path / f"{step}-{n}.log"
            for n in (1, 2) for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV)]
    runs = [start_step(log.name.rsplit("-", 1)[0], env, log) for log in logs]
    for run, log in zip(runs, logs, strict=True):
        assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    loads = [start_step(steps.LOAD_WAREHOUSE, env, tmp_path / f"load-{n}.log") for n in (1, 2)]
    for n, load in enumerate(loads, 1):
        assert load.wait(timeout=300) == 0, (tmp_path / f"load-{n}.log").read_text()[-3000:]
    found = objects(s3_server, root)
    assert {marker(found, s)["status"] for s in steps.STEPS[:3]} == {steps.SUCCESS}
    with databases.warehouse() as wh:
        (days,) = wh.execute("SELECT array_agg(snapshot_date::text) FROM northwind.loads").fetchone()
        assert days == [DAY]
        assert wh.execute("SELECT count(*) FROM snapshots.orders").fetchone() == (SOURCE_ROWS["orders"],)


def test_hostile_table_names_keep_their_keys_under_the_prefix(databases, s3_server, s3_env):
    with databases.source(autocommit=True) as src:
        for name in HOSTILE_TABLES:
            src.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, {} text)").format(
                sql.Identifier(name), sql.Identifier(f'Value of "{name}"')))
            src.execute(sql.SQL("INSERT INTO {} VALUES (1, %s)").format(sql.Identifier(name)),
                        (name,))
    root = s3_env["NORTHWIND_DATA_ROOT"]
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV, steps.LOAD_WAREHOUSE):
        assert_ok(run_step(step, DAY, s3_env))
    # Every object of the bucket lies under this run's prefix, in its table's folder.
    everything = objects(s3_server, f"s3://{BUCKET}")
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    strays = [k for k in everything if not k.startswith(prefix) and not k.startswith("runs/")]
    assert strays == []
    found = objects(s3_server, root)
    for name in HOSTILE_TABLES:
        segment = path_segment(name)
        assert sorted(k for k in found if k.startswith(f"postgres/{segment}/")) == [
            f"postgres/{segment}/{DAY}/{segment}.manifest.json",
            f"postgres/{segment}/{DAY}/{segment}.parquet"]
        data = found[f"postgres/{segment}/{DAY}/{segment}.parquet"]
        assert pq.read_table(pa.BufferReader(data)).num_rows == 1
    with databases.warehouse() as wh:
        for name in HOSTILE_TABLES:
            rows = wh.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name))).fetchall()
            assert rows == [(1, name)]


def test_a_bad_s3_root_is_one_clear_line(tmp_path):
    result = northwind("status", env={"NORTHWIND_DATA_ROOT": "s3://"})
    assert result.returncode == 1
    assert result.stderr.strip() == ("northwind status: error: data root 's3://': expected "
                                     "s3://bucket/prefix (settings such as the endpoint come from "
                                     "AWS_* variables, not the URL)")

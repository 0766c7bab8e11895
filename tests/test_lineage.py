"""OpenLineage (issue 25 point 2): every step sends START and COMPLETE or FAIL run events, with
its datasets, to an HTTP sink started here (what Marquez would receive at /api/v1/lineage).
"""

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from northwind_elt import lineage
from northwind_elt.steps import STEPS, StepMarker
from pipeline import assert_ok, run_step
from settings import ORDER_DETAILS_ROWS, ROOT

DAY = "2024-01-02"
TASK_OF_STEP = {step: step.replace("-", "_") for step in STEPS}


@pytest.fixture
def http_sink():
    """An HTTP server on a free port of 127.0.0.1 that keeps every JSON body POSTed to it."""
    events, paths = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            events.append(json.loads(body))
            paths.append(self.path)
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", events, paths
    server.shutdown()
    server.server_close()


def of_step(events, step):
    return [e for e in events if e["job"]["name"] == step]


def names(datasets):
    return {(d["namespace"], d["name"]) for d in datasets}


def marker_of(root: Path, step: str, day: str = DAY) -> dict:
    return json.loads((root / "_status" / day / f"{step}.json").read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_a_day_sends_the_event_graph_sources_partitions_warehouse_evidence(databases, http_sink):
    url, events, paths = http_sink
    parents = {step: str(uuid.uuid4()) for step in STEPS}
    root_run = str(uuid.uuid4())
    for step in STEPS:
        env = {**databases.env, "OPENLINEAGE_URL": url, "OPENLINEAGE_NAMESPACE": "northwind",
               "OPENLINEAGE_PARENT_ID": f"default/northwind_daily.{TASK_OF_STEP[step]}/{parents[step]}",
               "OPENLINEAGE_ROOT_PARENT_ID": f"default/northwind_daily/{root_run}"}
        assert_ok(run_step(step, DAY, env))

    assert set(paths) == {"/api/v1/lineage"}
    root = databases.data_root
    final = {}
    for step in STEPS:
        sent = of_step(events, step)
        assert [e["eventType"] for e in sent] == ["START", "COMPLETE"], step
        start, complete = sent
        assert start["run"]["runId"] == complete["run"]["runId"]
        assert complete["job"]["namespace"] == "northwind"
        parent = complete["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == parents[step]
        job = f"northwind_daily.{TASK_OF_STEP[step]}"
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("default", job)
        assert parent["root"]["run"]["runId"] == root_run
        assert complete["run"]["facets"]["nominalTime"]["nominalStartTime"] == f"{DAY}T00:00:00Z"
        final[step] = complete

    # 14 source datasets: the 13 tables of the source database and the CSV file.
    extract_pg, extract_csv = final["extract-postgres"], final["extract-csv"]
    sources = names(extract_pg["inputs"]) | names(extract_csv["inputs"])
    assert len(sources) == 14
    database = databases.env["SOURCE_PGDATABASE"]
    assert {ns for ns, _ in names(extract_pg["inputs"])} == {"postgres://localhost:5432"}
    assert ("postgres://localhost:5432", f"{database}.public.orders") in sources
    assert names(extract_csv["inputs"]) == {("file", databases.env["ORDER_DETAILS_CSV"])}

    # Each step's outputs are the next one's inputs.
    partitions = names(extract_pg["outputs"]) | names(extract_csv["outputs"])
    assert len(partitions) == 14
    assert ("file", f"{root}/postgres/orders/{DAY}/orders.parquet") in partitions
    assert ("file", f"{root}/csv/{DAY}/order_details.parquet") in partitions
    load = final["load-warehouse"]
    assert names(load["inputs"]) == partitions
    warehouse = names(load["outputs"])
    wh_db = databases.env["WAREHOUSE_PGDATABASE"]
    assert len(warehouse) == 14 and ("postgres://localhost:5432", f"{wh_db}.snapshots.orders") in warehouse
    report = final["publish-report"]
    assert names(report["inputs"]) == {("postgres://localhost:5432", f"{wh_db}.snapshots.{t}")
                                       for t in ("orders", "order_details")} <= warehouse
    assert names(final["check-warehouse"]["inputs"]) == warehouse
    assert final["check-warehouse"]["outputs"] == []

    # The evidence files: their version is the report's attempt folder, where they are.
    evidence = report["outputs"]
    assert {Path(d["name"]).name for d in evidence} == {"orders_with_details.csv",
                                                        "orders_with_details.json"}
    commit = marker_of(root, "publish-report")["commit"]
    for dataset in evidence:
        assert dataset["facets"]["version"]["datasetVersion"] == commit
        path = Path(dataset["name"])
        assert (path.parent / commit / path.name).is_file()
        assert dataset["outputFacets"]["outputStatistics"]["rowCount"] == ORDER_DETAILS_ROWS

    # Row counts are the markers'; schemas the manifests'.
    for step, event in (("extract-postgres", extract_pg), ("extract-csv", extract_csv),
                        ("load-warehouse", load)):
        rows = marker_of(root, step)["rows"]
        counted = {d["name"].rsplit("/", 1)[-1].removesuffix(".parquet").rsplit(".", 1)[-1]:
                   d["outputFacets"]["outputStatistics"]["rowCount"] for d in event["outputs"]}
        assert counted == rows, step
    source_rows = {d["name"].rsplit(".", 1)[-1]: d["inputFacets"]["inputStatistics"]["rowCount"]
                   for d in extract_pg["inputs"]}
    assert source_rows == marker_of(root, "extract-postgres")["rows"]
    orders = next(d for d in extract_pg["outputs"] if d["name"].endswith("/orders.parquet"))
    manifest = next((root / "postgres" / "orders" / DAY).glob("*/orders.manifest.json"))
    columns = json.loads(manifest.read_text())["columns"]
    fields = [{k: f[k] for k in ("name", "type")} for f in orders["facets"]["schema"]["fields"]]
    assert fields == [{"name": c["name"], "type": c["sql_type"]} for c in columns]
    assert orders["outputFacets"]["outputStatistics"]["size"] == json.loads(manifest.read_text())["bytes"]
    assert orders["facets"]["version"]["datasetVersion"] == marker_of(root, "extract-postgres")["commit"]


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_a_broken_csv_day_sends_fail_with_the_reason(databases, http_sink):
    url, events, _ = http_sink
    csv_file = Path(databases.env["ORDER_DETAILS_CSV"])
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join([lines[0], "10248,11,14,twelve,0\n", *lines[2:]]))

    result = run_step("extract-csv", DAY, {**databases.env, "OPENLINEAGE_URL": url})

    assert result.returncode != 0
    sent = of_step(events, "extract-csv")
    kinds = [e["eventType"] for e in sent]
    assert kinds.count("FAIL") == 1 and "COMPLETE" not in kinds, kinds
    fail = next(e for e in sent if e["eventType"] == "FAIL")
    assert "twelve" in fail["run"]["facets"]["errorMessage"]["message"]
    assert names(fail["inputs"]) == {("file", str(csv_file))} and fail["outputs"] == []
    assert "parent" not in fail["run"]["facets"]  # no OPENLINEAGE_PARENT_ID: no parent
    assert {e["run"]["runId"] for e in sent} == {fail["run"]["runId"]}


#: Runs the DAG for a day through the local Airflow in a fresh interpreter, so the OpenLineage
#: provider's plugin is loaded with the sink configured (it reads the settings once, at load).
RUN_DAG = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import dag_support
dag_support.migrate_metadata_db()
result = dag_support.run_dag({DAY!r}, {{}})
print("TASK_STATES=" + json.dumps(result.task_states))
"""


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_through_airflow_the_providers_task_runs_are_the_parents_of_the_steps(databases, http_sink,
                                                                              tmp_path):
    url, events, _ = http_sink
    env = {**os.environ, **databases.env, "OPENLINEAGE_URL": url,
           "NORTHWIND_TEST_AIRFLOW_HOME": str(tmp_path / "airflow")}
    (tmp_path / "airflow").mkdir()

    done = subprocess.run([sys.executable, "-c", RUN_DAG], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    [states] = [line for line in done.stdout.splitlines() if line.startswith("TASK_STATES=")]
    assert json.loads(states.removeprefix("TASK_STATES=")) == dict.fromkeys(TASK_OF_STEP.values(), "success")
    dag_runs = {e["run"]["runId"] for e in events if e["job"]["name"] == "northwind_daily"}
    assert len(dag_runs) == 1
    for step, task in TASK_OF_STEP.items():
        task_events = [e for e in events if e["job"]["name"] == f"northwind_daily.{task}"]
        assert {e["eventType"] for e in task_events} == {"START", "COMPLETE"}, task
        [task_run] = {e["run"]["runId"] for e in task_events}
        sent = of_step(events, step)
        assert [e["eventType"] for e in sent] == ["START", "COMPLETE"], step
        for event in sent:
            parent = event["run"]["facets"]["parent"]
            assert (parent["job"]["name"], parent["run"]["runId"]) == (f"northwind_daily.{task}", task_run)
            assert parent["job"]["namespace"] == task_events[0]["job"]["namespace"]
            assert {parent["root"]["run"]["runId"]} == dag_runs


def test_lineage_is_off_without_openlineage_settings_and_the_client_is_not_imported(tmp_path):
    assert not lineage.enabled({})
    assert not lineage.enabled({"OPENLINEAGE_NAMESPACE": "northwind", "OPENLINEAGE_URL": " "})
    assert lineage.enabled({"OPENLINEAGE_URL": "http://marquez:5000"})
    assert lineage.enabled({"OPENLINEAGE__TRANSPORT__TYPE": "file"})
    assert lineage.enabled({"OPENLINEAGE_CONFIG": "/etc/openlineage.yml"})
    assert not lineage.enabled({"OPENLINEAGE_URL": "http://marquez:5000", "OPENLINEAGE_DISABLED": "true"})
    # A step's whole life, start to finish, in a fresh interpreter with no OPENLINEAGE_* set.
    code = f"""
import datetime as dt, os, sys
for name in [n for n in os.environ if n.startswith("OPENLINEAGE")]:
    del os.environ[name]
from northwind_elt import steps
from northwind_elt.layout import DataTree
tree = DataTree.from_setting({str(tmp_path / 'data')!r})
marker, heartbeat = steps.start_attempt(tree, steps.EXTRACT_CSV, dt.date(2024, 1, 2))
heartbeat.stop()
steps.finish(tree, marker)
print(sorted(m for m in sys.modules if m.startswith("openlineage")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_file_transport_writes_the_events(tmp_path, monkeypatch):
    monkeypatch.setattr(lineage, "_client", None)
    log = tmp_path / "events.jsonl"
    environ = {"OPENLINEAGE__TRANSPORT__TYPE": "file", "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(log),
               "OPENLINEAGE__TRANSPORT__APPEND": "true"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # A failed extract-csv: its event needs nothing from the data tree.
    marker = StepMarker(step="extract-csv", run_date=DAY, status="failed", started_at="x",
                        attempt="host:1:2", error="line 2: 'twelve' is not an integer")

    lineage.step_finished(None, marker, environ)

    [event] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (event["eventType"], event["job"]["name"]) == ("FAIL", "extract-csv")
    assert event["run"]["runId"] == lineage.run_id(marker)
    assert event["run"]["facets"]["errorMessage"]["message"] == marker.error


def test_a_send_error_is_logged_once_and_never_raises(caplog, monkeypatch):
    monkeypatch.setattr(lineage, "_client", None)
    monkeypatch.setattr(lineage, "_failed", False)
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]  # closed at the end of the block: nobody listens
    # The client's own settings; no retries, so the test does not wait for them.
    environ = {"OPENLINEAGE__TRANSPORT__TYPE": "http", "OPENLINEAGE__TRANSPORT__URL": f"http://127.0.0.1:{port}",
               "OPENLINEAGE__TRANSPORT__RETRY__TOTAL": "0", "OPENLINEAGE__TRANSPORT__RETRY__CONNECT": "0"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    marker = StepMarker(step="extract-csv", run_date=DAY, status="failed", started_at="x",
                        attempt="host:1:2", error="boom")

    lineage.step_started(None, marker, environ)
    lineage.step_finished(None, marker, environ)

    warnings = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("lineage event START of extract-csv for 2024-01-02 not sent (nor any later")


def test_the_parent_id_is_the_providers_three_parts():
    run = str(uuid.uuid4())
    assert lineage.parse_parent(f"default/northwind_daily.load_warehouse/{run}") == (
        "default", "northwind_daily.load_warehouse", run)
    assert lineage.parse_parent("default/northwind_daily.load_warehouse/not-a-uuid") is None
    assert lineage.parse_parent("") is None


def test_a_tree_on_s3_names_its_datasets_by_bucket_and_key(monkeypatch):
    from northwind_elt.layout import DataTree

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                        "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}.items():
        monkeypatch.setenv(name, value)
    tree = DataTree.from_setting("s3://bucket/pre/fix")  # no request: only paths are named

    dataset = lineage.path_dataset(tree, tree.root / "postgres" / "orders" / DAY / "orders.parquet")

    assert dataset.namespace == "s3://bucket"
    assert dataset.name == f"pre/fix/postgres/orders/{DAY}/orders.parquet"

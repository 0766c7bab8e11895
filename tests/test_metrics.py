"""Metrics (issue 25 point 3): steps send StatsD metrics to a UDP socket bound here; the chart runs
Airflow's statsd exporter and lets Airflow and the step pods reach it.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import configparser
import datetime as dt
import socket
import sys
from pathlib import Path

import helm
import pytest
import yaml
from netpol import Endpoint, allowed
from northwind_elt import metrics
from northwind_elt.steps import StepMarker
from official_chart import render_airflow
from pipeline import assert_ok, run_step

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))
from northwind.pods import STEPS, step_pod_kwargs  # noqa: E402

DAY = "2024-01-02"


@pytest.fixture
def udp_sink():
    """A UDP socket on a free port of 127.0.0.1; yields it and the env that points steps at it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        env = {metrics.HOST_VARIABLE: "127.0.0.1", metrics.PORT_VARIABLE: str(sock.getsockname()[1])}
        yield sock, env


def received(sock) -> list[str]:
    """Every metric line the socket holds (waits up to 0.5 s for each datagram)."""
    lines = []
    while True:
        try:
            datagram = sock.recv(65536)
        except TimeoutError:
            return lines
        lines += datagram.decode().splitlines()


def parse(line: str) -> tuple[str, float, str, dict[str, str]]:
    """``name:value|kind|#k:v,...`` -> (name, value, kind, tags)."""
    head, kind, tags = line.split("|")
    name, value = head.rsplit(":", 1)
    return name, float(value), kind, dict(t.split(":", 1) for t in tags.removeprefix("#").split(","))


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_a_day_of_steps_sends_duration_rows_bytes_and_outcome(databases, udp_sink):
    sock, env = udp_sink
    extract = run_step("extract-csv", DAY, {**databases.env, **env})
    assert_ok(extract)

    metrics_of = [parse(line) for line in received(sock)]
    by_name = {name: (value, kind, tags) for name, value, kind, tags in metrics_of}
    tags = {"step": "extract-csv", "day": DAY}
    assert by_name["northwind.step.succeeded"] == (1, "c", tags)
    assert by_name["northwind.step.rows"] == (2155, "g", {**tags, "table": "order_details"})
    duration, kind, _ = by_name["northwind.step.duration"]
    assert kind == "ms" and 0 <= duration < 120_000
    published = sum(p.stat().st_size for p in (databases.data_root / "csv" / DAY).rglob("*") if p.is_file())
    assert by_name["northwind.step.bytes"] == (published, "g", tags) and published > 10_000
    assert "northwind.step.failed" not in by_name

    # A step that fails: line 2 of the CSV has a quantity that is not an integer.
    csv_file = Path(databases.env["ORDER_DETAILS_CSV"])
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join([lines[0], "10248,11,14,twelve,0\n", *lines[2:]]))
    failed = run_step("extract-csv", "2024-01-03", {**databases.env, **env})
    assert failed.returncode != 0
    names = [(name, tags["step"], tags["day"]) for name, _, _, tags in map(parse, received(sock))]
    assert names.count(("northwind.step.failed", "extract-csv", "2024-01-03")) == 1
    assert not [name for name, *_ in names if name in ("northwind.step.rows", "northwind.step.succeeded")]


def test_metrics_are_off_without_a_host_and_a_bad_port_names_the_setting():
    assert metrics.address({}) is None
    assert metrics.address({metrics.HOST_VARIABLE: "statsd"}) == ("statsd", 9125)
    with pytest.raises(ValueError, match=r"^NORTHWIND_STATSD_PORT='x': expected a UDP port"):
        metrics.address({metrics.HOST_VARIABLE: "statsd", metrics.PORT_VARIABLE: "x"})


def test_a_send_error_is_logged_once_and_never_raises(caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_warned", False)
    marker = StepMarker(step="extract-csv", run_date=DAY, status="success", started_at="x", rows={"t": 1})
    bad = {metrics.HOST_VARIABLE: "no-such-host.invalid"}

    metrics.step_finished(None, marker, bad)
    metrics.step_finished(None, marker, bad)

    warnings = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("metrics of extract-csv for 2024-01-02 not sent: ")


def test_tag_values_cannot_inject_tags_or_lines():
    marker = StepMarker(step="extract-csv", run_date=DAY, status="success",
                        started_at="2024-01-03T00:00:00+00:00", rows={"a,b|c:d\n#e": 3})
    lines = metrics.step_lines(marker, None, now=dt.datetime(2024, 1, 3, 0, 0, 2, tzinfo=dt.UTC))

    assert lines == [
        "northwind.step.succeeded:1|c|#step:extract-csv,day:2024-01-02",
        "northwind.step.duration:2000|ms|#step:extract-csv,day:2024-01-02",
        "northwind.step.rows:3|g|#step:extract-csv,day:2024-01-02,table:a_b_c_d__e",
    ]


def test_importing_the_steps_does_not_import_socket_machinery_for_metrics():
    source = Path(metrics.__file__).read_text()
    # socket is imported inside send(): a step with metrics off pays nothing for it.
    assert "\nimport socket" not in source


@pytest.fixture(scope="module")
def airflow_docs():
    docs = render_airflow()
    for doc in docs:
        doc["metadata"].setdefault("namespace", helm.NAMESPACE)
    return docs


def named(docs, kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_chart_runs_the_statsd_exporter_and_airflow_sends_to_it(airflow_docs):
    exporter = named(airflow_docs, "Deployment", "airflow-statsd")
    [container] = exporter["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("quay.io/prometheus/statsd-exporter:")
    service = named(airflow_docs, "Service", "airflow-statsd")
    ports = {(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]}
    assert {(9125, "UDP"), (9102, "TCP")} <= ports  # ingest, Prometheus scrape
    annotations = service["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "9102")
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(named(airflow_docs, "ConfigMap", "airflow-config")["data"]["airflow.cfg"])
    wanted = {"statsd_on": "True", "statsd_host": "airflow-statsd", "statsd_port": "9125"}
    assert {key: config["metrics"].get(key) for key in wanted} == wanted


def test_steps_and_airflow_reach_the_exporter_on_udp_9125_only(airflow_docs):
    plain = [d for d in yaml.safe_load_all((helm.ROOT / "k8s" / "network-policies.yaml").read_text()) if d]
    pipeline = helm.render("northwind-pipeline")
    for doc in pipeline:
        doc["metadata"].setdefault("namespace", helm.NAMESPACE)
    policies = [d for d in [*plain, *pipeline, *airflow_docs] if d["kind"] == "NetworkPolicy"]
    labels = named(airflow_docs, "Deployment", "airflow-statsd")["spec"]["template"]["metadata"]["labels"]
    exporter = Endpoint("airflow-statsd", helm.NAMESPACE, labels)
    steps_namespace = step_pod_kwargs(STEPS[0])["namespace"]
    scheduler_labels = named(airflow_docs, "Deployment", "airflow-scheduler")["spec"]["template"]["metadata"]
    scheduler = Endpoint("airflow-scheduler", helm.NAMESPACE, scheduler_labels["labels"])

    for step in STEPS:
        pod = Endpoint(step, steps_namespace, step_pod_kwargs(step)["labels"])
        assert allowed(policies, pod, exporter, 9125, "UDP"), step
        assert not allowed(policies, pod, exporter, 9102), step  # Prometheus' port, not the steps'
    assert allowed(policies, scheduler, exporter, 9125, "UDP")
    stranger = Endpoint("step-stranger", steps_namespace, {"app": "anything"})
    assert not allowed(policies, stranger, exporter, 9125, "UDP")
    # Without the pipeline chart's metrics policies the default deny drops the steps' datagrams.
    others = [p for p in policies if "metrics" not in p["metadata"]["name"]
              and "statsd-from-steps" not in p["metadata"]["name"]]
    step_pod = Endpoint(STEPS[0], steps_namespace, step_pod_kwargs(STEPS[0])["labels"])
    assert not allowed(others, step_pod, exporter, 9125, "UDP")

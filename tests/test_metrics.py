"""Metrics (issue 25 point 3): steps send StatsD metrics to a UDP socket bound here; the chart runs
Airflow's statsd exporter and lets Airflow and the step pods reach it.
"""

import datetime as dt
import socket
from pathlib import Path

import pytest
from northwind_elt import metrics
from northwind_elt.steps import StepMarker
from pipeline import assert_ok, run_step

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
    assert ("northwind.step.failed", "extract-csv", "2024-01-03") in names
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

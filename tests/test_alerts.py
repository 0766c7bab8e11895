"""Alerts (issue 25 point 1): a failed day notifies a real SMTP server and webhook; a green day not.

The day runs through the local Airflow (``northwind_local.day_run``: real task instances, real
``meltano run`` steps); the sinks are socket servers started here; the Airflow connections are the
``AIRFLOW_CONN_<ID>`` environment variables an operator would set.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import asyncio
import datetime as dt
import email
import json
import logging
import socketserver
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dag_support import DAGS_FOLDER, run_dag

for folder in (DAGS_FOLDER, dag_support.SCRIPTS_FOLDER):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))

from northwind import alerts  # noqa: E402 - needs the DAG folder on sys.path

DAY = "2024-01-02"
#: A day of its own: a rerun keeps the extract of a day that succeeded (the green one).
FAILED_DAY = "2024-01-03"
#: The late day: a day has one run (dag_id, logical_date is unique).
LATE_DAY = "2024-01-05"


class SmtpSink(socketserver.ThreadingTCPServer):
    """A minimal SMTP server (RFC 5321 without extensions) that keeps every message it receives."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.messages: list[email.message.Message] = []


class SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 sink ready")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.server.messages.append(email.message_from_bytes(data))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # EHLO, HELO, MAIL, RCPT, RSET, NOOP
                self.reply("250 ok")


class WebhookSink(ThreadingHTTPServer):
    """An HTTP server that keeps the JSON body of every POST."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), WebhookHandler)
        self.posts: list[dict] = []


class WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        """Quiet: the test reads what was posted."""


@contextmanager
def serving(server) -> Iterator:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, WebhookSink, dict[str, str]]]:
    """Both sinks running, and the environment that points the alert connections at them."""
    with serving(SmtpSink()) as smtp, serving(WebhookSink()) as webhook:
        smtp_conn = {
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.server_address[1],
            "extra": {"from_email": "airflow@example.com", "to": "data-oncall@example.com",
                      "disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
        }
        webhook_conn = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook.server_address[1]}/hooks/nw"}
        env = {
            "AIRFLOW_CONN_NORTHWIND_ALERT_SMTP": json.dumps(smtp_conn),
            "AIRFLOW_CONN_NORTHWIND_ALERT_WEBHOOK": json.dumps(webhook_conn),
            alerts.SMTP_CONN_VARIABLE: "northwind_alert_smtp",
            alerts.WEBHOOK_CONN_VARIABLE: "northwind_alert_webhook",
        }
        yield smtp, webhook, env


@pytest.fixture(scope="module")
def airflow_db():
    dag_support.migrate_metadata_db()


def break_csv(path) -> None:
    """Make line 2 of the CSV say ``twelve`` where a quantity (an integer) belongs."""
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "10248,11,14,twelve,0\n"
    path.write_text("".join(lines))


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project", "airflow_db")
def test_a_failed_day_alerts_once_per_channel_a_green_day_not_at_all(databases, sinks):
    smtp, webhook, alert_env = sinks
    env = {**databases.env, **alert_env}

    green = run_dag(DAY, env, only="extract_csv")

    assert green.task_states["extract_csv"] == "success"
    assert (smtp.messages, webhook.posts) == ([], [])

    break_csv(Path(databases.env["ORDER_DETAILS_CSV"]))
    failed = run_dag(FAILED_DAY, env, only="extract_csv")

    assert failed.task_states["extract_csv"] == "failed"
    reason = "tap-csvtyped: "
    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
    message = smtp.messages[0]
    assert message["Subject"] == f"northwind_daily {FAILED_DAY}: extract_csv failed"
    assert message["To"] == "data-oncall@example.com"
    body = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True)
    text = body.decode()
    assert f"day: {FAILED_DAY}" in text and "task: extract_csv" in text and "step: extract-csv" in text
    assert f"reason: step extract-csv (RUN_DATE={FAILED_DAY}): " + reason in text
    assert "line 2, column quantity: &#x27;twelve&#x27; is not an integer" in text
    assert len(webhook.posts) == 1
    post = webhook.posts[0]
    assert post["path"] == "/hooks/nw"
    assert {k: post["body"][k] for k in ("kind", "dag_id", "day", "task", "step")} == {
        "kind": "failed", "dag_id": "northwind_daily", "day": FAILED_DAY, "task": "extract_csv",
        "step": "extract-csv"}
    assert post["body"]["reason"].startswith(f"step extract-csv (RUN_DATE={FAILED_DAY}): {reason}")
    assert post["body"]["reason"].endswith("line 2, column quantity: 'twelve' is not an integer")
    assert "\n" not in post["body"]["reason"]
    assert post["body"]["text"].startswith(f"northwind_daily {FAILED_DAY}: extract_csv failed\n")


class Kept(logging.Handler):
    """Keeps the records of the logger it is attached to (Airflow's logging may bypass caplog)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unreachable_webhook_is_logged_in_one_line_and_does_not_raise(monkeypatch):
    with serving(WebhookSink()) as closed:
        port = closed.server_address[1]
    down = {"conn_type": "http", "host": f"http://127.0.0.1:{port}/"}
    monkeypatch.setenv("AIRFLOW_CONN_NORTHWIND_DOWN", json.dumps(down))
    # A run of the DAG in this process may have reconfigured logging (disabling loggers it did not
    # know); in a task process the DAG's modules are imported after that, so their logger works.
    monkeypatch.setattr(alerts.log, "disabled", False)
    kept = Kept()
    alerts.log.addHandler(kept)
    alert = alerts.Alert("failed", "northwind_daily", DAY, "extract_csv", "extract-csv", "boom")
    try:
        assert alerts.deliver(alert, {}, {alerts.WEBHOOK_CONN_VARIABLE: "northwind_down"}) == 0
    finally:
        alerts.log.removeHandler(kept)

    [record] = kept.records
    message = record.getMessage()
    assert "through connection 'northwind_down' not delivered: <urlopen error" in message
    assert "\n" not in message and record.exc_info is None


def test_no_connection_configured_sends_nothing_and_logs_nothing(monkeypatch):
    monkeypatch.delenv(alerts.SMTP_CONN_VARIABLE, raising=False)
    monkeypatch.delenv(alerts.WEBHOOK_CONN_VARIABLE, raising=False)
    monkeypatch.setattr(alerts.log, "disabled", False)  # see the unreachable-webhook test
    kept = Kept()
    alerts.log.addHandler(kept)
    alert = alerts.Alert("failed", "northwind_daily", DAY, "extract_csv", "extract-csv", "boom")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert alerts.deliver(alert, {}) == 0
    finally:
        alerts.log.removeHandler(kept)

    assert kept.records == []


@pytest.mark.usefixtures("airflow_db")
def test_a_queued_day_past_its_deadline_alerts_through_the_scheduler_and_triggerer(sinks):
    """The deadline as Airflow runs it: stored with the DAG, created with a queued run, found missed
    by the scheduler's query (``Deadline.handle_miss``), sent by the triggerer's ``CallbackTrigger``."""
    from airflow import settings
    from airflow._shared.module_loading import import_string
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.trigger import Trigger
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from northwind_local.day_run import sync_bag_to_db
    from sqlalchemy import select

    _, webhook, alert_env = sinks
    logical_date = dag_support.utc_day(LATE_DAY)
    # A deadline 0.36 s after queueing; the DAG stored again even if a test stored it < 30 s ago.
    short_deadline = {alerts.DEADLINE_VARIABLE: "0.0001",
                      "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"}
    with dag_support.patched_environ({**alert_env, **short_deadline}):
        bag = dag_support.load_dagbag()
        sync_bag_to_db(bag, bag.dags[dag_support.DAG_ID])
        with settings.Session() as session:
            stored = SerializedDagModel.get_dag(dag_support.DAG_ID, session=session)
            run_id = DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=logical_date,
                                            run_after=logical_date)
            for old in session.scalars(select(DagRun).where(DagRun.dag_id == dag_support.DAG_ID,
                                                            DagRun.logical_date == logical_date)):
                session.delete(old)
            session.flush()
            stored.create_dagrun(
                run_id=run_id, logical_date=logical_date, data_interval=(logical_date, logical_date),
                run_after=logical_date, run_type=DagRunType.SCHEDULED,
                triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.QUEUED, session=session)
            session.commit()
            time.sleep(0.5)
            # The scheduler's loop: every deadline past due and not yet missed.
            missed = session.scalars(select(Deadline).where(
                Deadline.deadline_time < dt.datetime.now(dt.UTC), ~Deadline.missed)).all()
            assert len(missed) == 1
            missed[0].handle_miss(session)
            session.commit()
            # The triggerer's part: the queued trigger, built from its row and run.
            [row] = [t for t in session.scalars(select(Trigger)) if t.classpath.endswith("CallbackTrigger")
                     and t.kwargs["callback_kwargs"]["context"]["dag_run"]["dag_run_id"] == run_id]
            trigger = import_string(row.classpath)(**row.kwargs)

            async def events():
                return [event.payload async for event in trigger.run()]

            payloads = asyncio.run(events())
            for made in session.scalars(select(DagRun).where(DagRun.run_id == run_id)):
                session.delete(made)  # the other tests run days of their own
            session.commit()
    # Store the DAG with its usual deadline again, for the tests that follow in this session.
    with dag_support.patched_environ({"AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"}):
        bag = dag_support.load_dagbag()
        sync_bag_to_db(bag, bag.dags[dag_support.DAG_ID])

    assert payloads[-1]["state"] == "success", payloads
    [post] = webhook.posts
    body = post["body"]
    assert (body["kind"], body["day"], body["dag_id"]) == ("late", LATE_DAY, "northwind_daily")
    # The deadline counts from the queueing (now), not from the logical date.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert body["reason"].startswith(f"run {run_id} is queued at its deadline {today} ")
    assert body["text"].startswith(f"northwind_daily {LATE_DAY}: not finished by its deadline\n")


def test_the_dag_has_the_deadline_and_the_failure_callback():
    dag = dag_support.load_dag()

    [deadline] = dag.deadline
    assert deadline.interval.total_seconds() == alerts.DEFAULT_DEADLINE_HOURS * 3600
    assert type(deadline.reference).__name__ == "DagRunQueuedAtDeadline"
    assert all(task.on_failure_callback == [alerts.on_task_failure] or
               task.on_failure_callback == alerts.on_task_failure for task in dag.tasks)


def test_a_pod_failure_alerts_with_the_steps_error_line_from_the_termination_message():
    # What KubernetesPodOperator raises: its headline, then the container's termination message.
    error = ("Pod northwind-extract-csv-1a2b returned a failure.\n"
             "2026-12-07T20:45:51Z [info ] meltano Block run started\n"
             "tap-csvtyped: error: /data/order_details.csv: line 2, column quantity: 'twelve' is not "
             "an integer\n"
             "target-datatree: error: the tap failed: see its reason")
    task = type("Task", (), {"task_id": "extract_csv", "step": "extract-csv",
                             "env_vars": {"RUN_DATE": DAY}})()
    alert = alerts.failure_alert({"task": task, "exception": error})

    assert alert.reason == ("step extract-csv: tap-csvtyped: /data/order_details.csv: line 2, column "
                            "quantity: 'twelve' is not an integer")
    assert (alert.day, alert.task, alert.step) == (DAY, "extract_csv", "extract-csv")
    # Without a step's error line, the headline.
    assert alerts.reason_line("Pod p returned a failure.\nremote_pod: {...}", "extract-csv") == (
        "Pod p returned a failure.")


@pytest.mark.parametrize("value, hours", [("", 6.0), ("off", None), ("0", None), ("1.5", 1.5)])
def test_deadline_hours(value, hours):
    assert alerts.deadline_hours({alerts.DEADLINE_VARIABLE: value}) == hours


def test_a_bad_deadline_names_the_setting():
    with pytest.raises(ValueError, match=r"^NORTHWIND_DEADLINE_HOURS='soon': expected a positive number"):
        alerts.deadline_hours({alerts.DEADLINE_VARIABLE: "soon"})

"""Alerts of the pipeline: a task that failed for good, a day not finished by its deadline.

Both go through Airflow notifiers to the Airflow connections named by two settings, read when
the alert fires (never when the DAG is parsed), so an operator turns alerts on or off without a
deploy:

- ``NORTHWIND_ALERT_SMTP_CONN_ID``: an SMTP connection (``SmtpNotifier``); its extra holds
  ``from_email`` and ``to`` (comma-separated recipients).
- ``NORTHWIND_ALERT_WEBHOOK_CONN_ID``: an HTTP connection whose host (with schema, port and
  path) is the URL a JSON message is POSTed to; ``{"text": ...}`` is what a Slack incoming webhook
  reads, the other keys are for any other receiver.

Neither set: no alert, no error, no warning. An alert that cannot be delivered is logged; it never
changes the outcome of the task or run. ``NORTHWIND_DEADLINE_HOURS`` (default 6) sets how long after
it is queued a run may still be running before its day is late: counted from the queue time, not
the logical date, so a backfill of an old day is not late at once. It is read when the DAG is
parsed, since Airflow stores the deadline with the DAG.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

SMTP_CONN_VARIABLE = "NORTHWIND_ALERT_SMTP_CONN_ID"
WEBHOOK_CONN_VARIABLE = "NORTHWIND_ALERT_WEBHOOK_CONN_ID"
DEADLINE_VARIABLE = "NORTHWIND_DEADLINE_HOURS"
#: A day takes minutes; a scheduled run of day D is queued at D+1 00:00 UTC, so late at 06:00.
DEFAULT_DEADLINE_HOURS = 6.0
#: How long a webhook may take before the alert is given up (logged).
WEBHOOK_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Alert:
    """What an alert says: which day, which task and step, and why.

    Attributes:
        kind: ``failed`` or ``late``.
        dag_id: The DAG.
        day: The run's day (``RUN_DATE``), ``YYYY-MM-DD``.
        task: The task id, or None for a run-level alert.
        step: The Meltano step of the task, or None.
        reason: One line: the first line of the failure's reason, or the missed deadline.
    """

    kind: str
    dag_id: str
    day: str
    task: str | None
    step: str | None
    reason: str

    @property
    def subject(self) -> str:
        """The one-line title: ``northwind_daily 2024-01-02: extract_csv failed``."""
        what = f"{self.task} failed" if self.kind == "failed" else "not finished by its deadline"
        return f"{self.dag_id} {self.day}: {what}"

    @property
    def text(self) -> str:
        """The message body, one ``field: value`` per line."""
        lines = [self.subject, f"day: {self.day}"]
        if self.task:
            lines += [f"task: {self.task}", f"step: {self.step or '-'}"]
        return "\n".join([*lines, f"reason: {self.reason}"])

    def as_json(self) -> dict:
        """The webhook's body: Slack's ``text`` plus every field."""
        return {"text": self.text, "kind": self.kind, "dag_id": self.dag_id, "day": self.day,
                "task": self.task, "step": self.step, "reason": self.reason}


def first_line(value: object) -> str:
    """Return the first non-blank line of ``value``'s text (the reason's headline)."""
    for line in str(value).splitlines():
        if line.strip():
            return line.strip()
    return "(no reason given)"


def reason_line(error: object, step: str | None) -> str:
    r"""Return the one-line reason of a failed step's exception.

    Locally the operator's message starts with it (``step extract-csv (RUN_DATE=D): <reason>``).
    On a cluster the KubernetesPodOperator's first line is ``Pod <name> returned a failure.``,
    followed by the container's termination message (its last log lines with
    ``terminationMessagePolicy: FallbackToLogsOnError``): the step's ``<plugin>: error: <reason>``
    line is taken from there when present.

    Example:
        >>> reason_line("Pod p returned a failure.\nx\ntap-csvtyped: error: bad line 2", "extract-csv")
        'step extract-csv: tap-csvtyped: bad line 2'
    """
    from northwind.operators import USER_ERROR_LINE

    headline = first_line(error)
    if headline.startswith("step "):
        return headline
    for line in str(error).splitlines():
        found = USER_ERROR_LINE.search(line.rstrip())
        if found:
            return f"step {step or '?'}: {found.group(1)}: {found.group(2).strip()}"
    return headline


def _run_date(task, context: Mapping) -> str:
    """The day the task ran for: its rendered ``RUN_DATE``, else the run's logical date."""
    env_vars = getattr(task, "env_vars", None) or []
    pairs = env_vars.items() if isinstance(env_vars, dict) else ((v.name, v.value) for v in env_vars)
    for name, value in pairs:
        if name == "RUN_DATE" and value and "{{" not in str(value):
            return str(value)
    run = context.get("dag_run")
    when = getattr(run, "logical_date", None) or getattr(run, "run_after", None)
    return when.date().isoformat() if when else "unknown"


def failure_alert(context: Mapping) -> Alert:
    """Build the alert of a failed task from its callback context."""
    task = context.get("task")
    ti = context.get("ti")
    return Alert(
        kind="failed",
        dag_id=getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?"),
        day=_run_date(task, context),
        task=getattr(ti, "task_id", None) or getattr(task, "task_id", None),
        step=getattr(task, "step", None),
        reason=reason_line(context.get("exception") or "the task failed", getattr(task, "step", None)),
    )


def late_alert(context: Mapping) -> Alert:
    """Build the alert of a missed deadline from the context Airflow gives a deadline callback.

    ``dag_run`` is the REST API's DAG run (``dag_run_id``, ``logical_date``, ``state``, ``conf``...).
    """
    run = context.get("dag_run") or {}
    conf = run.get("conf") or {}
    when = run.get("logical_date") or run.get("run_after") or ""
    deadline = (context.get("deadline") or {}).get("deadline_time")
    run_id = run.get("dag_run_id") or run.get("run_id", "?")
    return Alert(
        kind="late",
        dag_id=run.get("dag_id", "?"),
        day=conf.get("date") or str(when)[:10] or "unknown",
        task=None,
        step=None,
        reason=f"run {run_id} is {run.get('state', 'unfinished')} at its deadline {deadline}",
    )


def send_email(conn_id: str, alert: Alert, context: Mapping) -> None:
    """Send ``alert`` with Airflow's ``SmtpNotifier`` to the ``to`` of the connection's extra."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import BaseHook

    recipients = BaseHook.get_connection(conn_id).extra_dejson.get("to")
    if not recipients:
        raise ValueError(f"connection {conn_id!r} has no 'to' in its extra")
    body = "<pre>" + html.escape(alert.text) + "</pre>"
    # notify(), not __call__: the reason is text, never a Jinja template to render.
    SmtpNotifier(to=recipients, subject=alert.subject, html_content=body, smtp_conn_id=conn_id).notify(
        dict(context)
    )


def webhook_url(connection) -> str:
    """Return the URL of an HTTP connection: ``schema://host[:port]/path`` (host may hold it all)."""
    host = connection.host or ""
    if "://" not in host:
        port = f":{connection.port}" if connection.port else ""
        host = f"{connection.schema or 'https'}://{host}{port}"
    return host


def post_webhook(conn_id: str, alert: Alert) -> None:
    """POST ``alert`` as JSON to the URL of the connection (its password, if any, as a bearer token)."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    headers = {"Content-Type": "application/json"}
    if connection.password:
        headers["Authorization"] = f"Bearer {connection.password}"
    url = webhook_url(connection)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"connection {conn_id!r}: the webhook URL must be http:// or https://")
    body = json.dumps(alert.as_json()).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - checked above
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
        response.read()


def deliver(alert: Alert, context: Mapping, environ: Mapping[str, str] = os.environ) -> int:
    """Send ``alert`` through every configured connection; return how many took it.

    A delivery that fails is logged (connection id and error, never the connection's secrets).
    """
    sent = 0
    channels = (
        (environ.get(SMTP_CONN_VARIABLE, "").strip(), lambda conn_id: send_email(conn_id, alert, context)),
        (environ.get(WEBHOOK_CONN_VARIABLE, "").strip(), lambda conn_id: post_webhook(conn_id, alert)),
    )
    for conn_id, send in channels:
        if not conn_id:
            continue
        try:
            send(conn_id)
            sent += 1
        except Exception as error:  # noqa: BLE001 - an alert never fails the task it reports
            log.error("alert %r through connection %r not delivered: %s", alert.subject, conn_id,
                      first_line(error))
    return sent


def on_task_failure(context: Mapping) -> None:
    """``on_failure_callback`` of every task: Airflow calls it once the task has no retry left."""
    deliver(failure_alert(context), context)


async def on_deadline_missed(context: Mapping, **_kwargs) -> None:
    """Deadline callback (runs in the triggerer): alert that the run's day is late."""
    alert = late_alert(context)
    await asyncio.to_thread(deliver, alert, context)


def deadline_hours(environ: Mapping[str, str] = os.environ) -> float | None:
    """Return the hours after it is queued a run must be finished by; None turns it off.

    ``NORTHWIND_DEADLINE_HOURS`` set to ``0`` or ``off`` turns the deadline off.

    Raises:
        ValueError: A value that is neither a positive number nor ``off``, named in one line.
    """
    raw = environ.get(DEADLINE_VARIABLE, "").strip().lower()
    if not raw:
        return DEFAULT_DEADLINE_HOURS
    if raw in ("0", "off"):
        return None
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise ValueError(f"{DEADLINE_VARIABLE}={raw!r}: expected a positive number of hours or 'off'")
    return hours


def deadline(environ: Mapping[str, str] = os.environ):
    """Return the DAG's ``DeadlineAlert`` (queued at + ``NORTHWIND_DEADLINE_HOURS``), or None."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    hours = deadline_hours(environ)
    if hours is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=hours),
        callback=AsyncCallback(on_deadline_missed),
        name="northwind_day_late",
    )

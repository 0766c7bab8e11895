"""The daily Northwind pipeline: extract both sources, load the warehouse, publish the report."""

import datetime as dt

from airflow.sdk import DAG, Param
from northwind.alerts import deadline, on_task_failure
from northwind.operators import MeltanoStepOperator
from northwind.pods import (
    EXTRACT_CSV,
    EXTRACT_POSTGRES,
    LOAD_WAREHOUSE,
    PUBLISH_REPORT,
    step_pod_kwargs,
)

DOC_MD = """
### Northwind daily ELT

Every day, for the run's date `D` (`RUN_DATE`):

1. `extract_postgres` and `extract_csv` (in parallel) write every Northwind table and the
   order-details CSV to the data tree (`postgres/<table>/D/`, `csv/D/`);
2. `load_warehouse` loads that day's files into the warehouse PostgreSQL;
3. `publish_report` writes `reports/D/orders_with_details.csv` and `.json`.

Each task runs one command of the Meltano project (`meltano run <step>`): in a pod of the Meltano
image, or as a local process when `NORTHWIND_RUNTIME=local` (`make run`, `make airflow`).

**Date.** `D` is the `date` param when given, else the run's logical date, else (a manual trigger
without a logical date) the day the run was queued for. Every step is idempotent per date.

**Reruns.** A day whose extract succeeded keeps it: a rerun does not read today's source into
a past day. Trigger with `reextract` on to read the sources again for that day.

**Past days.** `catchup` is off: deploying never starts a burst of old runs. Use
`airflow backfill create --dag-id northwind_daily --from-date A --to-date B` or
`airflow dags trigger northwind_daily --logical-date D`.

**Failures.** Pods of failed steps are kept: `kubectl -n northwind logs -l
northwind.io/step=<step>,northwind.io/run-date=<D>`. Markers: `<data>/_status/D/<step>.json`.
See `docs/airflow.md`.
"""

#: Retry policy of every task (default_args below).
RETRIES = 3
EXECUTION_TIMEOUT = dt.timedelta(hours=1)
#: The backoff's cap, so also the longest wait before any retry.
MAX_RETRY_DELAY = dt.timedelta(minutes=30)
#: A task's worst case: every try runs to its timeout, with the longest wait before each retry.
TASK_BUDGET = (RETRIES + 1) * EXECUTION_TIMEOUT + RETRIES * MAX_RETRY_DELAY
#: Tasks in a row on the longest path (extract, load, report).
LONGEST_PATH = 3

with DAG(
    dag_id="northwind_daily",
    description="Extract Northwind (PostgreSQL, CSV) to the data tree, load the warehouse, report.",
    doc_md=DOC_MD,
    schedule="@daily",
    # The first day the pipeline is responsible for; earlier days only by explicit backfill.
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    # Off: a new deployment runs today's date only. Past days are an operator's decision
    # (`airflow backfill create`), never a side effect of unpausing.
    catchup=False,
    # Runs of different days never load the warehouse at the same time.
    max_active_runs=1,
    # Longer than a run that uses every retry (a shorter timeout would kill the retries it
    # schedules), shorter than a day, so a stuck run still frees max_active_runs for the next.
    dagrun_timeout=LONGEST_PATH * TASK_BUDGET,
    # A day still running NORTHWIND_DEADLINE_HOURS after it was queued alerts (docs/operations.md).
    deadline=deadline(),
    params={
        "date": Param(
            None,
            type=["null", "string"],
            # ASCII digits, a month and a day in range, nothing after (maxLength: JSON Schema's $
            # may match before a final newline): the raw value becomes a pod label.
            pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
            maxLength=10,
            # No `format: date`: the UI would swap the text field for a locale date picker. A day
            # the calendar lacks (2024-02-30) fits the pattern and is refused by every step.
            description="Day to process (YYYY-MM-DD); empty means the run's logical date.",
        ),
        "reextract": Param(
            False,
            type="boolean",
            description="Read the sources again for a day whose extracts already succeeded "
                        "(default: keep that day's extracts, the record of its sources).",
        ),
    },
    default_args={
        "owner": "data-engineering",
        "retries": RETRIES,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "execution_timeout": EXECUTION_TIMEOUT,
        # After the last retry only; sends nothing unless an alert connection is set.
        "on_failure_callback": on_task_failure,
    },
    tags=["northwind", "elt", "meltano", "kubernetes"],
) as dag:
    extract_postgres = MeltanoStepOperator(**step_pod_kwargs(EXTRACT_POSTGRES))
    extract_csv = MeltanoStepOperator(**step_pod_kwargs(EXTRACT_CSV))
    # Backfills set their own max_active_runs: one load (and report) at a time, whatever runs.
    load_warehouse = MeltanoStepOperator(**step_pod_kwargs(LOAD_WAREHOUSE), max_active_tis_per_dag=1)
    publish_report = MeltanoStepOperator(**step_pod_kwargs(PUBLISH_REPORT), max_active_tis_per_dag=1)

    [extract_postgres, extract_csv] >> load_warehouse >> publish_report

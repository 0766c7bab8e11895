"""OpenLineage run events of each step, through the ``openlineage-python`` client.

Off unless the client's own settings are in the environment: ``OPENLINEAGE_URL`` (an HTTP
endpoint such as Marquez), ``OPENLINEAGE_CONFIG`` (a YAML file) or ``OPENLINEAGE__TRANSPORT__*``
(for example ``OPENLINEAGE__TRANSPORT__TYPE=file``); ``OPENLINEAGE_DISABLED=true`` turns it off
again. Off, the client is never imported: a step pays nothing for it.

A step attempt is one OpenLineage run (its id derived from the attempt, so the tap and the
target of one ``meltano run`` agree on it) of the job ``<step>`` in the namespace
``OPENLINEAGE_NAMESPACE`` (default ``northwind``). It sends ``START`` when the attempt begins
(:func:`northwind_elt.steps.start_attempt`) and ``COMPLETE`` or ``FAIL`` (with the reason) when
its final marker is written (:func:`northwind_elt.steps.finish`), with its datasets:

- extract-postgres: the source tables (``postgres://host:port``, ``db.schema.table``) -> the
  day's partitions of the data tree (namespace ``file`` or ``s3://bucket``, name the partition's
  file without its attempt folder; the attempt is the dataset version);
- extract-csv: the CSV file -> its partition;
- load-warehouse: the partitions its prerequisites committed -> ``<db>.snapshots.<table>`` of
  the warehouse;
- publish-report: ``snapshots.orders`` and ``snapshots.order_details`` -> the evidence files;
- check-warehouse: the tables the load wrote.

Row counts are the marker's (``inputStatistics`` / ``outputStatistics``), schemas the
partitions' manifests. ``OPENLINEAGE_PARENT_ID`` (``namespace/job/run id``, as the Airflow
provider's ``lineage_parent_id`` macro renders it; the DAG's operator sets it) makes the Airflow
task run the parent, ``OPENLINEAGE_ROOT_PARENT_ID`` the root. Sending never fails a step: an
error is logged once per process and the step goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from northwind_elt import logger

SWITCHES = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")
TRANSPORT_PREFIX = "OPENLINEAGE__TRANSPORT__"
DISABLED_VARIABLE = "OPENLINEAGE_DISABLED"
NAMESPACE_VARIABLE = "OPENLINEAGE_NAMESPACE"
DEFAULT_NAMESPACE = "northwind"
PARENT_VARIABLE = "OPENLINEAGE_PARENT_ID"
ROOT_VARIABLE = "OPENLINEAGE_ROOT_PARENT_ID"
PRODUCER = "urn:northwind-pipeline:northwind-elt"
#: The warehouse tables the report reads (northwind_elt.report).
REPORT_TABLES = ("orders", "order_details")

_client = None
#: Set by the first failed send: the process sends no more (one wait for a server that is down).
_failed = False


@dataclass
class Dataset:
    """A dataset of a run event, before it is an OpenLineage object."""

    namespace: str
    name: str
    rows: int | None = None
    size: int | None = None
    #: ``(name, type)`` of each column, in order; None when unknown.
    columns: list[tuple[str, str]] | None = None
    version: str | None = None


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment configures the client (and does not disable it)."""
    if environ.get(DISABLED_VARIABLE, "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in SWITCHES) or any(
        name.startswith(TRANSPORT_PREFIX) and value.strip() for name, value in environ.items())


def run_id(marker) -> str:
    """The run id of a step attempt: the same in its tap and target (from ``marker.attempt``)."""
    key = f"northwind:{marker.step}:{marker.run_date}:{marker.attempt}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def postgres_namespace(prefix: str, environ: Mapping[str, str]) -> str:
    """``postgres://host:port`` of the server that ``<prefix>HOST``/``PORT`` name (a socket: localhost)."""
    host = environ.get(f"{prefix}HOST", "").strip() or "localhost"
    port = environ.get(f"{prefix}PORT", "").strip() or "5432"
    return f"postgres://{'localhost' if host.startswith('/') else host}:{port}"


def path_dataset(tree, path, **kwargs) -> Dataset:
    """A file of the data tree: namespace ``file`` (local) or ``s3://bucket``, name its path."""
    url = tree.fs.url(path)
    if url.startswith("s3://"):
        bucket, _, key = url[len("s3://"):].partition("/")
        return Dataset(f"s3://{bucket}", key, **kwargs)
    return Dataset("file", url, **kwargs)


def partition_datasets(tree, marker, commit: str | None = None, manifests: bool = False
                       ) -> list[tuple[Dataset, dict]]:
    """The partitions of a successful extract ``marker`` with each one's provenance."""
    from northwind_elt.manifest import read_manifest

    source, day = (marker.details or {}).get("source"), dt.date.fromisoformat(marker.run_date)
    commit = commit or marker.commit
    found = []
    for stream, rows in (marker.rows or {}).items() if source and commit else ():
        partition = tree.partition(source, stream, day, commit)
        dataset = path_dataset(tree, partition.day_folder / partition.data_file.name, rows=rows,
                               version=commit)
        provenance = {}
        if manifests:
            try:
                manifest = read_manifest(partition)
            except Exception as error:  # noqa: BLE001 - a missing schema never stops the events
                logger.warning("lineage: no schema for %s: %s", dataset.name, error)
            else:
                dataset.size = manifest.bytes
                dataset.columns = [(c["name"], c["sql_type"]) for c in manifest.columns]
                provenance = manifest.provenance or {}
        found.append((dataset, provenance))
    return found


def warehouse_table(table: str, environ: Mapping[str, str], rows: int | None = None) -> Dataset:
    """The snapshot table of ``table`` in the warehouse."""
    database = environ.get("WAREHOUSE_PGDATABASE", "").strip() or "warehouse"
    return Dataset(postgres_namespace("WAREHOUSE_PG", environ), f"{database}.snapshots.{table}",
                   rows=rows)


def step_datasets(tree, marker, environ: Mapping[str, str] = os.environ
                  ) -> tuple[list[Dataset], list[Dataset]]:
    """The inputs and outputs of a step's event (outputs only once it succeeded)."""
    from northwind_elt import steps

    done = marker.status == steps.SUCCESS
    day = dt.date.fromisoformat(marker.run_date)
    inputs: list[Dataset] = []
    outputs: list[Dataset] = []
    if marker.step in steps.SOURCE_OF_STEP:
        for dataset, provenance in partition_datasets(tree, marker, manifests=True) if done else ():
            outputs.append(dataset)
            if marker.step == steps.EXTRACT_POSTGRES:
                name = ".".join(str(provenance.get(key) or default) for key, default in (
                    ("database", environ.get("SOURCE_PGDATABASE", "")), ("schema", "public"),
                    ("table", dataset.name.rsplit("/", 1)[-1].removesuffix(".parquet"))))
                inputs.append(Dataset(postgres_namespace("SOURCE_PG", environ), name,
                                      rows=dataset.rows, columns=dataset.columns))
            elif provenance.get("file"):
                inputs.append(Dataset("file", str(provenance["file"]), rows=dataset.rows,
                                      size=provenance.get("file_bytes"), columns=dataset.columns))
        if marker.step == steps.EXTRACT_CSV and not inputs and environ.get("ORDER_DETAILS_CSV"):
            inputs.append(Dataset("file", environ["ORDER_DETAILS_CSV"]))
    elif marker.step == steps.LOAD_WAREHOUSE:
        for needed in steps.PREREQUISITES[marker.step]:
            extract = steps.read_marker(tree, needed, day)
            if extract is not None and extract.status == steps.SUCCESS:
                commit = (marker.inputs or {}).get(needed) or extract.commit
                inputs += [dataset for dataset, _ in partition_datasets(tree, extract, commit)]
        if done:
            outputs = [warehouse_table(table, environ, rows) for table, rows in marker.rows.items()]
    elif marker.step == steps.PUBLISH_REPORT:
        inputs = [warehouse_table(table, environ) for table in REPORT_TABLES]
        if done and marker.commit:
            folder = tree.report_folder(day, marker.commit)
            rows = sum(marker.rows.values()) if marker.rows else None
            outputs = [path_dataset(tree, folder.parent / name, rows=rows, version=marker.commit)
                       for name in sorted(tree.fs.children(folder))]
    elif marker.step == steps.CHECK_WAREHOUSE:
        load = steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)
        if load is not None and load.status == steps.SUCCESS:
            inputs = [warehouse_table(table, environ) for table in load.rows]
    return inputs, outputs


def parse_parent(value: str | None) -> tuple[str, str, str] | None:
    """``namespace/job/run id`` -> its three parts; None when unset or not of that form."""
    parts = (value or "").strip().split("/")
    if len(parts) < 3:
        return None
    try:
        run = str(uuid.UUID(parts[-1]))
    except ValueError:
        return None
    return parts[0], "/".join(parts[1:-1]), run


def run_event(event_type: str, marker, inputs: list[Dataset], outputs: list[Dataset],
              environ: Mapping[str, str] = os.environ):
    """The OpenLineage ``RunEvent`` of a step attempt (imports the client)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        input_statistics_input_dataset,
        job_type_job,
        nominal_time_run,
        output_statistics_output_dataset,
        parent_run,
        schema_dataset,
    )

    input_statistics = input_statistics_input_dataset.InputStatisticsInputDatasetFacet
    output_statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet

    def facets(dataset: Dataset) -> dict:
        found = {}
        if dataset.columns is not None:
            found["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name=name, type=kind)
                for name, kind in dataset.columns])
        if dataset.version:
            found["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=dataset.version)
        return found

    def statistics(dataset: Dataset, kind: str, facet) -> dict:
        return {} if dataset.rows is None else {kind: facet(rowCount=dataset.rows, size=dataset.size)}

    run_facets: dict = {"nominalTime": nominal_time_run.NominalTimeRunFacet(
        nominalStartTime=f"{marker.run_date}T00:00:00Z")}
    if (parent := parse_parent(environ.get(PARENT_VARIABLE))) is not None:
        root = parse_parent(environ.get(ROOT_VARIABLE)) or parent
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent[2]),
            job=parent_run.Job(namespace=parent[0], name=parent[1]),
            root=parent_run.Root(run=parent_run.RootRun(runId=root[2]),
                                 job=parent_run.RootJob(namespace=root[0], name=root[1])))
    if event_type == "FAIL" and marker.error:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=marker.error, programmingLanguage="python")
    namespace = environ.get(NAMESPACE_VARIABLE, "").strip() or DEFAULT_NAMESPACE
    job_facets = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="MELTANO", jobType="TASK")}
    return RunEvent(
        eventType=getattr(RunState, event_type),
        eventTime=dt.datetime.now(dt.UTC).isoformat(),
        run=Run(runId=run_id(marker), facets=run_facets),
        job=Job(namespace=namespace, name=marker.step, facets=job_facets),
        producer=PRODUCER,
        inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=facets(d),
                             inputFacets=statistics(d, "inputStatistics", input_statistics))
                for d in inputs],
        outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=facets(d),
                               outputFacets=statistics(d, "outputStatistics", output_statistics))
                 for d in outputs],
    )


def emit(event_type: str, tree, marker, environ: Mapping[str, str] = os.environ) -> None:
    """Send the ``event_type`` event of ``marker``'s attempt when lineage is on; never raise."""
    global _client, _failed
    if _failed or not enabled(environ):
        return
    try:
        inputs, outputs = step_datasets(tree, marker, environ)
        event = run_event(event_type, marker, inputs, outputs, environ)
        if _client is None:
            from openlineage.client import OpenLineageClient

            _client = OpenLineageClient()
        _client.emit(event)
    except Exception as error:  # noqa: BLE001 - lineage never fails the step it describes
        _failed = True
        logger.warning("lineage event %s of %s for %s not sent (nor any later one of this "
                       "process): %s", event_type, marker.step, marker.run_date,
                       " ".join(str(error).split()) or type(error).__name__)


def step_started(tree, marker, environ: Mapping[str, str] = os.environ) -> None:
    """``START`` of a step attempt (off unless ``OPENLINEAGE_*`` configures the client)."""
    emit("START", tree, marker, environ)


def step_finished(tree, marker, environ: Mapping[str, str] = os.environ) -> None:
    """``COMPLETE`` or ``FAIL`` (the marker says which) of a step attempt."""
    emit("FAIL" if marker.error else "COMPLETE", tree, marker, environ)

"""The DAG without a cluster: it parses, its graph and policies, and every pod it would start.

The pods are built in-process by the provider (``build_pod_request_obj(dry_run=True)``) after
rendering the task's templates, exactly what the operator does on a worker before calling the
Kubernetes API.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import datetime as dt
import doctest
import importlib
import json
import re
import sys
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client import ApiClient

import helm
from dag_support import DAG_ID, DAGS_FOLDER, TASK_IDS, build_pod, load_dag, utc_day
from settings import MELTANO_PROJECT

pytestmark = [
    # pathspec, as Airflow calls it for .airflowignore; not ours to fix.
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    # Our DAG modules warn about nothing.
    pytest.mark.filterwarnings("error::Warning:northwind"),
]

DAY = "2024-01-02"


@pytest.fixture(scope="module")
def dag():
    return load_dag()


@pytest.fixture(scope="module")
def names():
    from northwind.cluster import CLUSTER

    return CLUSTER


@pytest.fixture(scope="module")
def pods():
    """The V1Pod of every task for a scheduled run of DAY."""
    return {task_id: build_pod(task_id, logical_date=utc_day(DAY)) for task_id in TASK_IDS}


def env_of(pod) -> dict:
    return {var.name: var for var in pod.spec.containers[0].env}


def test_dag_folder_imports_without_errors():
    bag = dag_support.load_dagbag()

    assert bag.import_errors == {}
    assert list(bag.dags) == [DAG_ID]


def test_dependency_graph_is_exactly_extracts_then_load_then_report_and_checks(dag):
    graph = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}

    # The checks run beside the report: a failed check never holds back the evidence.
    assert graph == {
        "extract_postgres": {"load_warehouse"},
        "extract_csv": {"load_warehouse"},
        "load_warehouse": {"publish_report", "check_warehouse"},
        "publish_report": set(),
        "check_warehouse": set(),
    }


def test_schedule_is_daily_without_catchup_and_one_run_loads_at_a_time(dag):
    # "@daily" is a cron trigger in Airflow 3: the run of day D starts at D 00:00 UTC, ds = D.
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    assert dag.start_date == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    # Backfills have their own max_active_runs: the load and the report guard themselves too.
    for task_id in ("load_warehouse", "publish_report", "check_warehouse"):
        assert dag.get_task(task_id).max_active_tis_per_dag == 1


def test_every_task_retries_with_exponential_backoff(dag):
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff >= 2, task.task_id
        assert task.retry_delay >= dt.timedelta(minutes=1), task.task_id
        assert task.max_retry_delay is not None, task.task_id
        assert task.execution_timeout is not None, task.task_id


def test_dag_is_tagged_documented_and_owned(dag):
    assert {"northwind", "meltano"} <= set(dag.tags)
    assert "RUN_DATE" in dag.doc_md and "backfill" in dag.doc_md
    assert all(task.owner == "data-engineering" for task in dag.tasks)


def test_date_param_is_optional_and_must_be_a_day(dag):
    from airflow.sdk import Param

    param = dag.params.get_param("date")

    assert param.resolve() is None
    assert Param(None, **param.schema).resolve("2024-01-31") == "2024-01-31"
    with pytest.raises(Exception, match="does not match"):
        Param(None, **param.schema).resolve("2024/01/31")


def test_dags_folder_holds_no_secret_literals():
    credential = re.compile(r"(password|passwd|secret|token)\w*\s*[:=]\s*['\"][^'\"{}]+['\"]", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(DAGS_FOLDER)}: {match.group(0)}"
        for path in DAGS_FOLDER.rglob("*")
        if path.is_file() and path.suffix in {".py", ".env", ".yaml", ".yml", ".json"}
        for match in credential.finditer(path.read_text(encoding="utf-8"))
        # Secret *names* (the Kubernetes objects to read from) are not secrets.
        if not re.match(r"\w*_DB_SECRET=", match.group(0))
    ]

    assert offenders == []


def test_dag_steps_are_the_pipelines_steps_and_the_meltano_jobs():
    if str(DAGS_FOLDER) not in sys.path:
        sys.path.insert(0, str(DAGS_FOLDER))
    from northwind.pods import STEPS, step_command
    from northwind_elt import steps

    project = yaml.safe_load((MELTANO_PROJECT / "meltano.yml").read_text())
    jobs = {job["name"] for job in project["jobs"]}

    assert STEPS == steps.STEPS
    assert {step_command(step)[-1] for step in STEPS} <= jobs


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pod_runs_the_step_command_of_the_image_for_the_run_date(pods, names, task_id):
    pod = pods[task_id]
    container = pod.spec.containers[0]
    step = task_id.replace("_", "-")

    # The step pods' own namespace (issue 22): the launcher may create pods there only.
    assert pod.metadata.namespace == names.step_namespace == "northwind-steps"
    assert container.image == names.image == f"{names.image_repository}:{names.image_tag}"
    assert container.command + container.args == ["meltano", "run", "--no-state-update", step]
    assert env_of(pod)["RUN_DATE"].value == DAY
    assert env_of(pod)["MELTANO_PROJECT_ROOT"].value == names.meltano_project_dir
    assert pod.spec.restart_policy == "Never"


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pod_mounts_the_data_volume_and_a_private_tmp(pods, names, task_id):
    pod = pods[task_id]
    volumes = {volume.name: volume for volume in pod.spec.volumes}
    mounts = {mount.mount_path: mount.name for mount in pod.spec.containers[0].volume_mounts}
    env = env_of(pod)

    assert names.data_mount_path == "/data"
    assert volumes[mounts["/data"]].persistent_volume_claim.claim_name == names.data_pvc
    assert volumes[mounts["/tmp"]].empty_dir is not None
    assert env["NORTHWIND_DATA_ROOT"].value == "/data"
    # Meltano's system DB: the one migrated into the image, read-only (no migration per step).
    assert env["MELTANO_DATABASE_URI"].value == (
        "sqlite:///file:/project/images/meltano/.meltano/meltano.db?mode=ro&immutable=1&uri=true")


#: The databases each step logs in to; every other pod gets no credential of it.
STEP_DATABASES = {"extract_postgres": {"SOURCE_PG"}, "extract_csv": set(),
                  "load_warehouse": {"WAREHOUSE_PG"}, "publish_report": {"WAREHOUSE_PG"},
                  "check_warehouse": {"WAREHOUSE_PG"}}


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pod_reads_only_its_own_credentials_from_secrets(pods, names, task_id):
    env = env_of(pods[task_id])

    n = names
    # The report and the checks read the warehouse as its read-only role; hosts carry the
    # databases' namespace.
    warehouse = n.warehouse_reader_secret if task_id in ("publish_report", "check_warehouse") \
        else n.warehouse_db_secret
    for prefix, secret, host, database in (
        ("SOURCE_PG", n.source_db_secret, n.service_host(n.source_db_host), n.source_db_name),
        ("WAREHOUSE_PG", warehouse, n.service_host(n.warehouse_db_host), n.warehouse_db_name),
    ):
        # The password is a file of the Secret (tests/test_password_files.py), never a variable.
        assert prefix + "PASSWORD" not in env
        volumes = {v.secret.secret_name for v in pods[task_id].spec.volumes if v.secret}
        if prefix not in STEP_DATABASES[task_id]:
            assert prefix + "USER" not in env and prefix + "PASSWORD_FILE" not in env
            continue
        assert secret in volumes
        var = env[prefix + "USER"]
        assert var.value is None
        assert (var.value_from.secret_key_ref.name, var.value_from.secret_key_ref.key) == (
            secret, "username")
        assert env[prefix + "HOST"].value == host
        assert env[prefix + "PORT"].value == names.db_port
        assert env[prefix + "DATABASE"].value == database
    literal = [var.name for var in env.values() if "PASSWORD" in var.name and var.value
               and not var.name.endswith("PASSWORD_FILE")]
    assert literal == []
    assert not pods[task_id].spec.containers[0].env_from


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pod_has_resources_and_a_restricted_security_context(pods, task_id):
    pod = pods[task_id]
    container = pod.spec.containers[0]
    security = container.security_context

    assert set(container.resources.requests) == set(container.resources.limits) == {
        "cpu", "memory", "ephemeral-storage"}
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert security.allow_privilege_escalation is False
    assert security.capabilities.drop == ["ALL"]
    assert security.read_only_root_filesystem is True
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.enable_service_links is False  # no variables of other Services
    assert pod.spec.service_account_name == "northwind-step"  # created by northwind-pipeline
    manifest = ApiClient().sanitize_for_serialization(pod)
    assert helm.restricted_violations(manifest["spec"]) == []
    helm.validate(manifest)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pod_labels_find_it_by_step_and_date(pods, task_id):
    labels = pods[task_id].metadata.labels

    assert labels["app.kubernetes.io/part-of"] == "northwind"
    assert labels["northwind.io/step"] == task_id.replace("_", "-")
    assert labels["northwind.io/run-date"] == DAY


def test_operator_streams_logs_keeps_failed_pods_and_deletes_succeeded_ones(dag):
    for task in dag.tasks:
        assert task.get_logs is True
        assert task.on_finish_action.value == "delete_succeeded_pod"
        assert task.log_events_on_failure is True


def test_manual_trigger_without_logical_date_renders_the_day_it_was_queued_for():
    queued = utc_day("2024-03-04") + dt.timedelta(hours=13)
    pod = build_pod("extract_csv", logical_date=None, run_after=queued)

    assert env_of(pod)["RUN_DATE"].value == "2024-03-04"
    assert pod.metadata.labels["northwind.io/run-date"] == "2024-03-04"


def test_date_param_overrides_the_logical_date():
    pod = build_pod("load_warehouse", logical_date=utc_day(DAY), date_param="2023-12-31")

    assert env_of(pod)["RUN_DATE"].value == "2023-12-31"
    assert pod.metadata.labels["northwind.io/run-date"] == "2023-12-31"


def test_local_mode_keeps_the_run_date_and_takes_cluster_names_from_its_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_PGHOST", "/run/local-socket")
    monkeypatch.delenv("NORTHWIND_DATA_ROOT", raising=False)
    monkeypatch.delenv("MELTANO_DATABASE_URI", raising=False)
    dag = load_dag()
    task = dag.get_task("extract_postgres")
    context = dag_support.task_context(dag, task, logical_date=utc_day(DAY))
    task.render_template_fields(context)

    env = task.local_env()

    assert env["RUN_DATE"] == DAY
    assert env["SOURCE_PGHOST"] == "/run/local-socket"
    assert "NORTHWIND_DATA_ROOT" not in env
    assert "MELTANO_DATABASE_URI" not in env


def _load_task_rendered_with(variables: dict[str, str]):
    dag = load_dag()
    task = dag.get_task("load_warehouse")
    context = dag_support.task_context(dag, task, logical_date=utc_day(DAY))
    # The template reads ``var.value.get(name, default)``, as the task runner's accessor offers.
    context["var"] = SimpleNamespace(value=variables)
    task.render_template_fields(context)
    return dag, task, context


def test_only_the_load_gets_the_retention_of_the_airflow_variable(monkeypatch):
    monkeypatch.setenv("NORTHWIND_KEEP_DAYS", "9")
    dag, task, context = _load_task_rendered_with({"northwind_keep_days": "3"})

    pod = task.build_pod_request_obj(context, dry_run=True)

    assert env_of(pod)["NORTHWIND_KEEP_DAYS"].value == "3"
    assert task.local_env()["NORTHWIND_KEEP_DAYS"] == "3"  # the Variable wins locally too
    for other in ("extract_postgres", "extract_csv", "publish_report"):
        assert "NORTHWIND_KEEP_DAYS" not in env_of(dag_support.build_pod(other, logical_date=utc_day(DAY)))


def test_without_the_variable_a_local_load_keeps_its_environments_retention(monkeypatch):
    monkeypatch.setenv("NORTHWIND_KEEP_DAYS", "9")
    _, task, context = _load_task_rendered_with({})

    assert env_of(task.build_pod_request_obj(context, dry_run=True))["NORTHWIND_KEEP_DAYS"].value == ""
    assert task.local_env()["NORTHWIND_KEEP_DAYS"] == "9"


def test_runtime_is_kubernetes_by_default_and_rejects_unknown_values():
    from airflow.sdk.exceptions import AirflowFailException
    from northwind.operators import runtime

    assert runtime({}) == runtime({"NORTHWIND_RUNTIME": " "}) == "kubernetes"
    assert runtime({"NORTHWIND_RUNTIME": "local"}) == "local"
    with pytest.raises(AirflowFailException) as refused:
        runtime({"NORTHWIND_RUNTIME": "k8s"})
    assert str(refused.value) == "NORTHWIND_RUNTIME='k8s' is not one of local, kubernetes"


def test_a_task_without_the_runtime_setting_asks_kubernetes_for_a_pod(tmp_path, monkeypatch):
    from kubernetes.config import ConfigException

    # No cluster here: an empty kubeconfig makes the pod path fail at its first call to the API,
    # and a missing project would make the local path fail on meltano.yml instead.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    monkeypatch.delenv("NORTHWIND_RUNTIME", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("NORTHWIND_MELTANO_PROJECT", str(tmp_path / "no-project"))
    dag = load_dag()
    task = dag.get_task("extract_csv")
    context = dag_support.task_context(dag, task, logical_date=utc_day(DAY))
    task.render_template_fields(context)

    with pytest.raises(ConfigException, match="kube-config"):
        task.execute(context)


def test_cluster_env_parser_rejects_malformed_lines_and_missing_names():
    from northwind.cluster import ClusterEnvError, ClusterNames, parse_env_file

    with pytest.raises(ClusterEnvError, match="cluster.env:2: expected KEY=value"):
        parse_env_file("NAMESPACE=a\nexport IMAGE_TAG 1\n")
    with pytest.raises(ClusterEnvError, match="NAMESPACE is set twice"):
        parse_env_file("NAMESPACE=a\nNAMESPACE=b\n")
    with pytest.raises(ClusterEnvError, match="lacks .*IMAGE_TAG"):
        ClusterNames.from_mapping({"NAMESPACE": "a"})


@pytest.mark.parametrize("module", ["northwind.cluster", "northwind.pods", "northwind.pod_settings",
                                    "northwind.operators"])
def test_docstring_examples_run(module):
    load_dag()  # puts the DAG folder on sys.path, as the DAG processor does
    result = doctest.testmod(importlib.import_module(module))

    assert result.failed == 0


def local_operator(tmp_path, monkeypatch, script: str):
    """A real MeltanoStepOperator whose command is a small Python script, in a stand-in project."""
    from northwind.operators import MeltanoStepOperator
    from northwind.pods import step_pod_kwargs

    project = tmp_path / "project"
    project.mkdir()
    (project / "meltano.yml").write_text("version: 1\n")
    monkeypatch.setenv("NORTHWIND_MELTANO_PROJECT", str(project))
    monkeypatch.setenv("NORTHWIND_RUNTIME", "local")
    kwargs = step_pod_kwargs("extract-csv") | {
        "cmds": [sys.executable],
        "arguments": ["-c", script],
        "env_vars": {"RUN_DATE": DAY, "SOURCE_PGHOST": "northwind-source-db"},
    }
    return MeltanoStepOperator(**kwargs)


def test_local_step_runs_its_command_in_the_project_with_the_run_date(tmp_path, monkeypatch):
    out = tmp_path / "seen.json"
    monkeypatch.setenv("SOURCE_PGHOST", "/local/socket")
    script = (
        "import json, os, sys; json.dump({'cwd': os.getcwd(), 'date': os.environ['RUN_DATE'], "
        "'host': os.environ['SOURCE_PGHOST']}, "
        f"open({str(out)!r}, 'w'))"
    )
    operator = local_operator(tmp_path, monkeypatch, script)

    operator.execute(context={})

    seen = json.loads(out.read_text())
    assert seen["cwd"] == str(tmp_path / "project")
    assert seen["date"] == DAY
    assert seen["host"] == "/local/socket"  # the cluster's host name is not used locally


def test_local_step_failure_names_the_step_and_repeats_its_last_lines(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    script = "import sys; print('reading'); print('line 3, quantity: bad', file=sys.stderr); sys.exit(3)"
    operator = local_operator(tmp_path, monkeypatch, script)

    with pytest.raises(AirflowFailException, match=r"(?s)step extract-csv failed \(exit 3\).*quantity: bad"):
        operator.execute(context={})


def test_local_step_user_error_is_its_one_line_reason_without_the_output_tail(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    script = (
        "import sys; print('[info ] tap-csvtyped tap-csvtyped: error: x.csv: line 3, column quantity: bad');"
        "print('[info ] target-datatree-csv target-datatree: error: the extractor ended early');"
        "print('Traceback (most recent call last):'); sys.exit(1)"
    )
    operator = local_operator(tmp_path, monkeypatch, script)

    with pytest.raises(AirflowFailException) as failure:
        operator.execute(context={})

    assert str(failure.value) == (
        f"step extract-csv (RUN_DATE={DAY}): tap-csvtyped: x.csv: line 3, column quantity: bad"
    )


def test_the_tests_run_steps_with_the_dags_command():
    if str(DAGS_FOLDER) not in sys.path:
        sys.path.insert(0, str(DAGS_FOLDER))
    import pipeline
    from northwind import pods

    assert pipeline.MELTANO_RUN == pods.MELTANO_RUN


def test_the_reextract_param_reaches_the_extract_steps_only():
    """A rerun keeps a day's succeeded extracts unless the run's ``reextract`` param is on."""
    for reextract, expected in ((False, "false"), (True, "true")):
        dag = dag_support.load_dag()
        for task_id in ("extract_postgres", "extract_csv"):
            task = dag.get_task(task_id)
            context = dag_support.task_context(dag, task, logical_date=utc_day(DAY))
            context["params"]["reextract"] = reextract
            task.render_template_fields(context)
            pod = task.build_pod_request_obj(context, dry_run=True)
            assert env_of(pod)["NORTHWIND_REEXTRACT"].value == expected
            assert task.local_env()["NORTHWIND_REEXTRACT"] == expected
    for other in ("load_warehouse", "publish_report"):
        assert "NORTHWIND_REEXTRACT" not in env_of(dag_support.build_pod(other, logical_date=utc_day(DAY)))
    assert dag.params["reextract"] is False

"""Step pods get their database passwords as files of the Secrets, never as env variables."""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import sys

import pytest
from dag_support import TASK_IDS, build_pod, utc_day
from kubernetes.client import ApiClient
from northwind_elt import pgconn
from northwind_elt.errors import SettingError

if str(dag_support.DAGS_FOLDER) not in sys.path:
    sys.path.insert(0, str(dag_support.DAGS_FOLDER))

# pathspec, as Airflow calls it for .airflowignore; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

CONFIG = {"host": "db", "dbname": "warehouse", "user": "warehouse_reader"}


def test_the_password_comes_from_the_file_the_variable_names(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3cr:et/with#chars")  # a Secret volume's file: no newline
    monkeypatch.setenv("WAREHOUSE_PGPASSWORD_FILE", str(secret))
    assert pgconn.connection_kwargs(CONFIG, "warehouse")["password"] == "s3cr:et/with#chars"
    # A password set directly wins; another database's variable is not read.
    assert pgconn.connection_kwargs({**CONFIG, "password": "given"}, "warehouse")["password"] == "given"
    assert "password" not in pgconn.connection_kwargs(CONFIG, "source")


def test_an_unreadable_password_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_PGPASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingError, match=r"SOURCE_PGPASSWORD_FILE=.*missing: No such file"):
        pgconn.connection_kwargs({**CONFIG, "dbname": "northwind"}, "source")


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_step_pods_carry_no_password_variable_but_the_file(task_id):
    pod = ApiClient().sanitize_for_serialization(build_pod(task_id, logical_date=utc_day("2024-01-02")))
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert [n for n in env if n.endswith("PASSWORD")] == []
    files = {n: e["value"] for n, e in env.items() if n.endswith("PASSWORD_FILE")}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert len(files) == len(secrets) == (0 if task_id == "extract_csv" else 1)
    for path in files.values():
        folder, _, name = path.rpartition("/")
        volume = next(v for v, mount in mounts.items() if mount == folder)
        assert secrets[volume]["items"] == [{"key": "password", "path": name}]

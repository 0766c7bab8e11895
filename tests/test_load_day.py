"""One load sequence: target-pgcopy and the benchmark both run :mod:`northwind_elt.warehouse_load`.

The step (``meltano run load-warehouse``) and the benchmark's in-process load of the same data tree
leave the same warehouse: partitions, views, history, load log. The target's retention and history
come from its settings (``keep_days``, ``history``: ``NORTHWIND_KEEP_DAYS``, ``NORTHWIND_HISTORY``
or Meltano's ``TARGET_PGCOPY_*``), and building the target changes nothing.
"""

import datetime as dt
import os

import psycopg
import pytest
from northwind_elt import steps
from northwind_elt.errors import SettingError
from northwind_elt.layout import DataTree
from pipeline import assert_ok, run_step
from psycopg import sql
from target_pgcopy.target import TargetPgCopy

from scripts.bench.inprocess import load_in_process

DAY1, DAY2 = "2024-01-02", "2024-01-03"
#: The warehouse's own schemas: tables by day, views of the newest day, history, load log.
SCHEMAS = ("snapshots", "snapshot_days", "public", "history", "northwind")


def warehouse_state(conn: psycopg.Connection) -> dict[str, str]:
    """Every relation of the warehouse's schemas, by a digest of its rows; the load log's facts.

    The load log's time and attempt id differ between any two loads, so only its days, rows and
    columns are compared.
    """
    relations = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'p') ORDER BY 1, 2""",
        (list(SCHEMAS),)).fetchall()
    state = {}
    for schema, name in relations:
        if (schema, name) == ("northwind", "loads"):
            continue
        (state[f"{schema}.{name}"],) = conn.execute(sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) || ':' || count(*) "
            "FROM {}.{} AS t").format(sql.Identifier(schema), sql.Identifier(name))).fetchone()
    state["loads"] = conn.execute("SELECT snapshot_date, rows, columns FROM northwind.loads "
                                  "ORDER BY 1").fetchall()
    return state


@pytest.fixture
def bench_warehouse(databases):
    """A second empty warehouse on the same server, for the benchmark's in-process load."""
    env = databases.env
    name = f"{env['WAREHOUSE_PGDATABASE']}_bench"
    admin = {"host": env["WAREHOUSE_PGHOST"], "port": env["WAREHOUSE_PGPORT"],
             "user": env["WAREHOUSE_PGUSER"], "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(**{**admin, "dbname": name}) as conn:
        yield conn


def extract(day: str, env: dict[str, str]) -> None:
    for step in (steps.EXTRACT_POSTGRES, steps.EXTRACT_CSV):
        assert_ok(run_step(step, day, env))


@pytest.mark.slow
def test_the_benchmark_loads_a_day_as_the_step_does(databases, bench_warehouse, meltano_project):
    env, tree = databases.env, DataTree(databases.data_root)
    extract(DAY1, env)
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY1, env))
    day1 = dt.date.fromisoformat(DAY1)
    load_in_process(bench_warehouse, tree, day1, day1, None)

    with databases.warehouse() as wh:
        loaded = warehouse_state(wh)
    assert loaded == warehouse_state(bench_warehouse)
    assert any(name.startswith("history.") for name in loaded)  # the history was spliced in too
    assert loaded["loads"][0][0] == day1

    # Retention through Meltano's own variable of the setting: the next day keeps only itself.
    extract(DAY2, env)
    assert_ok(run_step(steps.LOAD_WAREHOUSE, DAY2, {**env, "TARGET_PGCOPY_KEEP_DAYS": "1"}))
    day2 = dt.date.fromisoformat(DAY2)
    load_in_process(bench_warehouse, tree, day2, day2, 1)

    with databases.warehouse() as wh:
        loaded = warehouse_state(wh)
    assert loaded == warehouse_state(bench_warehouse)
    partitions = [name for name in loaded if name.startswith("snapshot_days.")]
    assert partitions and all(name.endswith(f"@{DAY2}") for name in partitions), partitions


def target_config(tmp_path, **settings) -> dict:
    return {"host": str(tmp_path / "no-server"), "dbname": "warehouse", "user": "postgres",
            "data_root": str(tmp_path / "data"), "run_date": DAY1, **settings}


def test_the_target_takes_retention_and_history_from_its_settings_not_the_environment(
        tmp_path, monkeypatch):
    # The variables are Meltano's to map into the settings (meltano.yml): the target ignores them.
    monkeypatch.setenv("NORTHWIND_KEEP_DAYS", "not a number")
    monkeypatch.setenv("NORTHWIND_HISTORY", "maybe")
    target = TargetPgCopy(config=target_config(tmp_path, keep_days="3", history="off"))
    assert (target.options.keep_days, target.options.history) == (3, False)
    assert TargetPgCopy(config=target_config(tmp_path)).options.keep_days is None

    with pytest.raises(SettingError, match=r"^NORTHWIND_KEEP_DAYS='-1' must be a whole number"):
        TargetPgCopy(config=target_config(tmp_path, keep_days="-1"))
    with pytest.raises(SettingError, match=r"^NORTHWIND_KEEP_DAYS=0 keeps no full day: it needs"):
        TargetPgCopy(config=target_config(tmp_path, keep_days="0", history="off"))
    # Building a target wrote nothing: no marker, no folder (the server is not even there).
    assert not (tmp_path / "data").exists()
    assert os.listdir(tmp_path) == []

"""Run the pipeline's steps exactly as a pod does (`meltano run <job>`), and look at what they left."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from northwind.meltano_local import own_run_folder
from settings import MELTANO_PROJECT

STEPS = ("extract-postgres", "extract-csv", "load-warehouse", "publish-report")
#: The start of every step command; equal to dags/northwind/pods.MELTANO_RUN (a DAG test checks).
MELTANO_RUN = ("meltano", "run", "--no-state-update")


@dataclass(frozen=True)
class Databases:
    """A fresh source (seeded) and warehouse (empty) pair, and the data tree of one test."""

    env: dict[str, str]

    def source(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(**self._conninfo("SOURCE_PG"), **kwargs)

    def warehouse(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(**self._conninfo("WAREHOUSE_PG"), **kwargs)

    def _conninfo(self, prefix: str) -> dict[str, str]:
        return {"host": self.env[f"{prefix}HOST"], "port": self.env[f"{prefix}PORT"],
                "dbname": self.env[f"{prefix}DATABASE"], "user": self.env[f"{prefix}USER"]}

    @property
    def data_root(self) -> Path:
        return Path(self.env["NORTHWIND_DATA_ROOT"])


def run_step(step: str, day: str | None, env: Mapping[str, str], timeout: float = 300
             ) -> subprocess.CompletedProcess:
    """``meltano run <step>`` in the Meltano project with RUN_DATE=day (unset if None).

    ``step`` is a job name or blocks separated by spaces (``tap-x target-y``).
    """
    full = {**os.environ, **env}
    full.pop("RUN_DATE", None)
    if day is not None:
        full["RUN_DATE"] = day
    with own_run_folder(MELTANO_PROJECT, full) as run_folder:
        return subprocess.run([*MELTANO_RUN, *step.split()],
                              cwd=MELTANO_PROJECT, env={**full, **run_folder}, text=True,
                              capture_output=True, timeout=timeout, check=False)


def run_day(day: str, env: Mapping[str, str]) -> dict[str, subprocess.CompletedProcess]:
    """Run the four steps of a day in order, stopping at the first failure."""
    results = {}
    for step in STEPS:
        results[step] = run_step(step, day, env)
        if results[step].returncode != 0:
            break
    return results


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"{result.args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def tree_digest(root: Path, pattern: str = "**/*.parquet") -> dict[str, str]:
    """SHA-256 of every file under ``root`` matching ``pattern``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob(pattern)) if p.is_file() and ".staging" not in p.parts}


def warehouse_digest(conn: psycopg.Connection) -> dict[str, str]:
    """An order-independent digest of every table and view of the warehouse's user schemas."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname IN ('snapshots', 'snapshot_days', 'public') AND c.relkind IN ('r', 'v')
           ORDER BY 1, 2""").fetchall()
    digest = {}
    for schema, name in rows:
        (value,) = conn.execute(psycopg.sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) || ':' || count(*) "
            "FROM {}.{} AS t").format(psycopg.sql.Identifier(schema), psycopg.sql.Identifier(name))
        ).fetchone()
        digest[f"{schema}.{name}"] = value
    return digest

"""Run the pipeline's steps exactly as a pod does (`meltano run <job>`), and look at what they left."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from northwind.meltano_local import own_run_folder
from northwind_elt.commits import FOLDER_OF_STEP
from northwind_elt.steps import STEPS
from settings import MELTANO_PROJECT

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


#: The step whose commit makes an attempt of each top folder current (northwind_elt.commits).
STEP_OF_FOLDER = {folder: step for step, folder in FOLDER_OF_STEP.items()}


def _day_index(parts: tuple[str, ...]) -> int | None:
    for index, part in enumerate(parts):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", part):
            return index
    return None


def current_attempt(root: Path, folder: str, day: str) -> str | None:
    """The attempt the commit of ``folder``'s step names on ``day`` (None: not committed)."""
    commit = root / "_commits" / day / f"{STEP_OF_FOLDER[folder]}.json"
    return json.loads(commit.read_text())["attempt"] if commit.is_file() else None


def committed(root: Path, *parts: str) -> Path:
    """A file of the current attempt: ``committed(root, "csv", DAY, "order_details.parquet")``.

    The parts are the layout's path without the attempt folder, which is put after the day.
    """
    day = _day_index(parts)
    attempt = current_attempt(root, parts[0], parts[day]) or "(not committed)"
    return root.joinpath(*parts[:day + 1], attempt, *parts[day + 1:])


def committed_key(root: Path, relative: Path) -> str | None:
    """``relative`` without its attempt folder if it is in the current attempt; None if not.

    Paths outside the published folders (markers, commits) are their own key.
    """
    parts = relative.parts
    day = _day_index(parts)
    if parts[0] not in STEP_OF_FOLDER or day is None or len(parts) <= day + 2:
        return None if parts[0] in STEP_OF_FOLDER else str(relative)
    if parts[day + 1] != current_attempt(root, parts[0], parts[day]):
        return None
    return str(Path(*parts[:day + 1], *parts[day + 2:]))


def committed_view(found: dict[str, bytes]) -> dict[str, bytes]:
    """Objects by key relative to the root, as a reader sees them: the current attempts only,
    keyed without their attempt folder; markers and commits as they are."""
    attempts = {key: json.loads(value)["attempt"] for key, value in found.items()
                if key.startswith("_commits/")}
    view = {}
    for key, value in found.items():
        parts = tuple(key.split("/"))
        day = _day_index(parts)
        if parts[0] in STEP_OF_FOLDER:
            commit = f"_commits/{parts[day]}/{STEP_OF_FOLDER[parts[0]]}.json" if day else ""
            if day is None or len(parts) <= day + 2 or parts[day + 1] != attempts.get(commit):
                continue
            key = "/".join(parts[:day + 1] + parts[day + 2:])
        view[key] = value
    return view


def tree_digest(root: Path, pattern: str = "**/*.parquet") -> dict[str, str]:
    """SHA-256 of every committed file under ``root`` matching ``pattern``, by its path without
    the attempt folder (what a reader of the day sees)."""
    found = {}
    for path in sorted(root.glob(pattern)):
        if not path.is_file() or ".staging" in path.parts:
            continue
        key = committed_key(root, path.relative_to(root))
        if key is not None:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


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

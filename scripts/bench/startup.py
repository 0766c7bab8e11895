"""Each step's fixed start-up (an empty source), and what it is made of, each part timed alone."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT

from .measure import Measurement, measure, median_of
from .meltano_steps import FS_SIDE, Side, meltano_executable, run_steps
from .settings import DETAILS, MELTANO_PROJECT, STARTUP_RUNS
from .source import Server, empty_source


def startup(server: Server, folder: Path, steps: Sequence[str], runs: int = STARTUP_RUNS,
            sides: Sequence[Side] = (FS_SIDE,)) -> list[dict[str, Measurement]]:
    """Each step on an empty source (and a one-row CSV): its fixed start-up, for each side."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "order_details.csv"
    empty_source(server, "northwind_empty", csv_path)
    counts = {DETAILS: 1}
    results = [run_steps(server, "northwind_empty", counts, csv_path, folder, steps, sides, 1)
               for _ in range(runs)]
    return [{step: median_of([run[side][step] for run in results]) for step in results[0][side]}
            for side in range(len(sides))]



#: The plugins of each step (meltano.yml's jobs) and the module each one's executable imports.
STEP_PLUGINS = {
    EXTRACT_POSTGRES: ("tap-pgcopy", "target-datatree"),
    EXTRACT_CSV: ("tap-csvtyped", "target-datatree"),
    LOAD_WAREHOUSE: ("tap-datatree", "target-pgcopy"),
    PUBLISH_REPORT: ("northwind",),
}

PLUGIN_MODULES = {
    "tap-pgcopy": ("extractors", "tap_pgcopy.tap"),
    "tap-csvtyped": ("extractors", "tap_csvtyped.tap"),
    "tap-datatree": ("extractors", "tap_datatree.tap"),
    "target-datatree": ("loaders", "target_datatree.target"),
    "target-pgcopy": ("loaders", "target_pgcopy.target"),
    "northwind": ("utilities", "northwind_elt.cli"),
}

MELTANO_CLI = "import meltano.cli"

MIGRATION = "meltano upgrade database (fresh DB)"

SDK = "import singer_sdk"



def plugin_python(plugin: str) -> Path:
    """The interpreter that runs ``plugin``: ours run from this venv (meltano.yml: no pip_url)."""
    del plugin  # every plugin of ours: one package, one venv
    return Path(sys.executable)



def has_bytecode(module_file: Path) -> bool:
    """Whether ``module_file`` has an up-to-date .pyc (written by ``make install``)."""
    cached = Path(importlib.util.cache_from_source(str(module_file)))
    return cached.is_file() and cached.stat().st_mtime >= module_file.stat().st_mtime



def startup_breakdown(folder: Path, runs: int = STARTUP_RUNS) -> dict[str, Measurement]:
    """What a step's start-up is made of, each part timed alone (median of ``runs``).

    Meltano's CLI import, the migration of a fresh system DB (which no step pays any more: the
    image migrates at build, a checkout at ``make install``), and each plugin's import in its own
    venv; the rest of a step's start-up is Meltano's project, config and process work.
    """
    folder.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    commands = {"python -c pass": [python, "-c", "pass"], MELTANO_CLI: [python, "-c", MELTANO_CLI]}
    commands[SDK] = [str(plugin_python("tap-pgcopy")), "-c", SDK]
    for plugin, (_, module) in PLUGIN_MODULES.items():
        commands[f"{plugin}: import {module}"] = [str(plugin_python(plugin)), "-c", f"import {module}"]
    found: dict[str, Measurement] = {}
    for label, command in commands.items():
        log = folder / f"{len(found)}.log"
        found[label] = median_of([measure(label, command, 0, log) for _ in range(runs)])
    migrations = []
    for n in range(runs):
        env = {**os.environ, "MELTANO_SYS_DIR_ROOT": str(folder / f"sys-{n}"),
               "MELTANO_DATABASE_URI": f"sqlite:///{folder / f'migrated-{n}.db'}"}
        migrations.append(measure(MIGRATION, [meltano_executable(), "upgrade", "database"], 0,
                                  folder / f"migration-{n}.log", env=env, cwd=MELTANO_PROJECT))
    found[MIGRATION] = median_of(migrations)
    return found

"""What a step pays before its first row: one venv with bytecode, no request to PyPI.

Where ``PYTHONDONTWRITEBYTECODE`` is set (CI, many shells and containers) Python never writes
``.pyc`` files, so a module without one is compiled again at every start, in each of a step's
processes: measured here, a step's start-up 5 s without them and 2 s with them (docs/benchmark.md).
``make install`` writes them once (Makefile); the image does at build (images/meltano/Dockerfile).
Our plugins run from the venv that runs Meltano (meltano.yml gives them no ``pip_url``): one
install of the lock, no plugin venv per plugin.
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import importlib.metadata
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from settings import MELTANO_PROJECT, ROOT

#: Modules a step's processes import: Meltano, and in the plugins the SDK, Arrow, the driver.
VENV_MODULES = ("meltano.cli", "sqlalchemy", "airflow.providers.cncf.kubernetes.operators.pod",
                "singer_sdk", "pyarrow", "pyarrow.parquet", "psycopg", "adbc_driver_postgresql")
OUR_SOURCES = MELTANO_PROJECT / "northwind-elt" / "src"
#: Plugins with a venv of their own (tests and `make bench` only; not in the image).
OWN_VENV = {"tap-postgres-stock"}


def compiled(source: Path) -> bool:
    """Whether ``source`` has a .pyc no older than itself."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    return cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime


@pytest.mark.parametrize("module", VENV_MODULES)
def test_the_repositorys_venv_has_bytecode(module, meltano_project):
    origin = Path(importlib.util.find_spec(module).origin)

    assert compiled(origin), f"{origin} has no bytecode: `make install` compiles it"


def test_our_plugin_sources_have_bytecode(meltano_project):
    stale = [p for p in OUR_SOURCES.rglob("*.py") if not compiled(p)]
    # A source edited since the install is only recompiled in memory: `make install` again.
    assert not stale, f"no bytecode for {[str(p.relative_to(ROOT)) for p in stale]}"


def test_every_plugin_of_ours_runs_from_the_venv_that_runs_meltano(meltano_project):
    from meltano.core.project import Project

    project = Project.find(meltano_project)
    venv_bin = Path(sys.executable).parent
    ours = [p for p in project.plugins.plugins() if p.name not in OWN_VENV]

    assert len(ours) >= 6
    for plugin in ours:
        # No pip_url: Meltano makes no venv and starts the executable found on PATH.
        assert plugin.pip_url is None, plugin.name
        found = shutil.which(plugin.executable)
        assert found and Path(found).parent == venv_bin, f"{plugin.name}: {found}"
        script = importlib.metadata.entry_points(group="console_scripts", name=plugin.executable)
        assert [s.dist.name for s in script] == ["northwind-elt"], plugin.name


def test_a_local_step_finds_our_plugins_where_the_venv_is_not_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # Airflow started by the venv's python, no `uv run`
    task = dag_support.load_dag().get_task("extract_csv")

    env = task.local_env()

    found = shutil.which("tap-csvtyped", path=env["PATH"])
    assert found == str(Path(sys.executable).parent / "tap-csvtyped")


def test_meltano_never_asks_pypi_for_its_newest_version(meltano_project):
    from meltano.core.project import Project

    project = Project.find(meltano_project)

    # The request would cost each step a round trip, and in the cluster a timeout (egress policy).
    assert project.settings.get("cli.disable_version_check") is True

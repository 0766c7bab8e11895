"""What a step pays before its first row: bytecode written at install, no request to PyPI.

Where ``PYTHONDONTWRITEBYTECODE`` is set (CI, many shells and containers) Python never writes
``.pyc`` files, so a module without one is compiled again at every start, in each of a step's
processes: measured here, a step's start-up 5 s without them and 2 s with them (docs/benchmark.md).
``make install`` writes them once (Makefile); the image does at build (images/meltano/Dockerfile).
"""

import importlib.util
from pathlib import Path

import pytest
from settings import MELTANO_PROJECT, ROOT

#: Modules every step's processes import, per interpreter: the repository's venv runs Meltano.
MAIN_VENV_MODULES = ("meltano.cli", "sqlalchemy", "airflow.providers.cncf.kubernetes.operators.pod")
#: (plugin venv, module): the SDK, Arrow, the driver and our own plugin code.
PLUGIN_MODULES = [
    ("extractors/tap-pgcopy", "singer_sdk/__init__.py"),
    ("extractors/tap-pgcopy", "pyarrow/__init__.py"),
    ("extractors/tap-pgcopy", "psycopg/__init__.py"),
    ("loaders/target-pgcopy", "singer_sdk/__init__.py"),
    ("utilities/northwind", "pyarrow/parquet/core.py"),
]
OUR_SOURCES = MELTANO_PROJECT / "northwind-elt" / "src"


def compiled(source: Path) -> bool:
    """Whether ``source`` has a .pyc no older than itself."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    return cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime


@pytest.mark.parametrize("module", MAIN_VENV_MODULES)
def test_the_repositorys_venv_has_bytecode(module, meltano_project):
    origin = Path(importlib.util.find_spec(module).origin)

    assert compiled(origin), f"{origin} has no bytecode: `make install` compiles it"


@pytest.mark.parametrize(("plugin", "module_path"), PLUGIN_MODULES)
def test_every_plugin_venv_has_bytecode(plugin, module_path, meltano_project):
    venv = meltano_project / ".meltano" / plugin / "venv"
    found = sorted(venv.glob(f"lib/python3*/site-packages/{module_path}"))

    assert found, f"{plugin} does not hold {module_path}"
    assert compiled(found[0]), f"{found[0]} has no bytecode: `make install` compiles it"


def test_our_plugin_sources_have_bytecode(meltano_project):
    stale = [p for p in OUR_SOURCES.rglob("*.py") if not compiled(p)]
    # A source edited since the install is only recompiled in memory: `make install` again.
    assert not stale, f"no bytecode for {[str(p.relative_to(ROOT)) for p in stale]}"


def test_meltano_never_asks_pypi_for_its_newest_version(meltano_project):
    from meltano.core.project import Project

    project = Project.find(meltano_project)

    # The request would cost each step a round trip, and in the cluster a timeout (egress policy).
    assert project.settings.get("cli.disable_version_check") is True

"""Every ``Example:`` section of our docstrings runs as a doctest, and passes.

The modules are those of the plugins' packages (images/meltano/northwind-elt/src), the DAG's
package (dags/northwind) and the tests' helpers whose source has a Google-style ``Example:``
heading; a module without one is not listed, so no test here passes having checked nothing. A
module's test fails when one of its headings yields no doctest that runs: no ``>>>`` under it, or
a docstring doctest cannot reach (a nested function, say).
"""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import doctest
import importlib
import re
from pathlib import Path

import pytest
from settings import ROOT

#: Folders of modules and the package prefix of their import names ("" for top-level modules).
SOURCES = {
    ROOT / "images" / "meltano" / "northwind-elt" / "src": None,  # one package per folder
    dag_support.DAGS_FOLDER / "northwind": "northwind.",
    ROOT / "tests": "",
}
HEADING = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)


def _module_files() -> dict[str, Path]:
    """Import name -> source file of every module under :data:`SOURCES`."""
    files = {}
    for folder, prefix in SOURCES.items():
        paths = folder.glob("*/*.py") if prefix is None else folder.glob("*.py")
        for path in paths:
            if path.name.startswith("test_") or path.name == "conftest.py":
                continue
            package = f"{path.parent.name}." if prefix is None else prefix
            name = package.rstrip(".") if path.stem == "__init__" else package + path.stem
            files[name] = path
    return files


FILES = _module_files()
WITH_EXAMPLES = sorted(name for name, path in FILES.items() if HEADING.search(path.read_text()))


def test_the_modules_with_examples_are_found():
    # Guards the discovery itself: a wrong folder would list nothing and test nothing.
    packages = {name.split(".")[0] for name in WITH_EXAMPLES}
    assert {"northwind_elt", "tap_pgcopy", "northwind", "official_chart"} <= packages


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_every_example_section_runs_and_passes(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    headings = len(HEADING.findall(FILES[name].read_text()))
    found = sum(len(HEADING.findall(t.docstring or "")) for t in tests)
    assert found == headings, (f"{FILES[name]}: {headings - found} of its {headings} Example: "
                               "sections hold no doctest that runs")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)

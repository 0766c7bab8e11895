"""tests/skip_guard.py in a pytest run of its own (pytester): under CI a skip is a failure.

Each test writes a tiny test file and runs pytest on it with the guard loaded, with and without
``CI`` set, and reads the outcomes and the lines pytest prints.
"""

import subprocess
import sys

import official_chart
import pytest
import skip_guard
from settings import ROOT

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

@pytest.fixture
def podman():
    pytest.skip("podman not on PATH")

def test_skips_in_its_body():
    pytest.skip("chromium is not installed")

@pytest.mark.skipif(True, reason="make is not installed")
def test_skipif():
    pass

def test_skips_in_a_fixture(podman):
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False

@pytest.mark.cluster
def test_needs_a_cluster():
    pytest.skip("no reachable cluster kind-northwind with the Airflow release (run `make up`)")

def test_passes():
    pass
"""
MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_here", reason="no_such_module_here is not installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def run(pytester, monkeypatch):
    """Run pytest with the guard on the files written so far, with ``CI`` as given (None: unset)."""
    pytester.makeini("[pytest]\nmarkers =\n    cluster: needs a Kubernetes cluster\n")

    def run_with(ci):
        if ci is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", ci)
        return pytester.runpytest("-p", "skip_guard", "-ra")

    return run_with


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_without_ci_every_skip_stays_a_skip(pytester, run, ci):
    pytester.makepyfile(test_tiny=SKIPPING, test_module_skip=MODULE_SKIP)
    result = run(ci)
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["SKIPPED * chromium is not installed"])


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_skip_fails_with_its_reason(pytester, run, ci):
    pytester.makepyfile(test_tiny=SKIPPING)
    result = run(ci)
    # A skip in setup (skipif, a fixture) is an error at setup; one in the test body a failure.
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    prefix = f"skipped under CI={ci}, where only tests marked cluster may skip: "
    for reason in ("chromium is not installed", "make is not installed", "podman not on PATH"):
        result.stdout.fnmatch_lines([f"{prefix}{reason}"])
    result.stdout.fnmatch_lines(["SKIPPED * no reachable cluster kind-northwind *"])


def test_under_ci_a_module_skipped_at_collection_fails(pytester, run):
    pytester.makepyfile(test_module_skip=MODULE_SKIP)
    result = run("true")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest stops on a collection error
    result.stdout.fnmatch_lines(["*skipped under CI=true, * no_such_module_here is not installed"])


def test_a_missing_official_chart_names_its_path_and_what_to_do(pytester, run, tmp_path):
    missing = tmp_path / "shared" / "airflow-chart"
    pytester.makepyfile(test_chart=f"""
from pathlib import Path

import official_chart

def test_renders(monkeypatch):
    monkeypatch.setattr(official_chart, "AIRFLOW_CHART", Path({str(missing)!r}))
    official_chart.render_airflow()
""")
    assert official_chart.AIRFLOW_CHART.name == "airflow-chart"
    result = run("true")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"skipped under CI=true, *: official Airflow chart copy not found "
                                 f"at {missing}: *"])
    assert "Traceback" not in result.stdout.str()
    without_ci = run(None)
    without_ci.assert_outcomes(skipped=1)


def test_the_suite_loads_the_guard(pytestconfig):
    hooks = pytestconfig.pluginmanager.hook.pytest_runtest_makereport.get_hookimpls()
    assert skip_guard.pytest_runtest_makereport in [hook.function for hook in hooks]


def test_only_the_kind_end_to_end_may_skip_under_ci(tmp_path):
    # The allowance is a marker: a test that carries it without needing a cluster hides a skip.
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path), "-m", " or ".join(skip_guard.CI_MAY_SKIP), str(ROOT / "tests")],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids and {i.split("::")[0] for i in ids} == {"tests/test_e2e_kind.py"}, ids

"""Under CI a skipped test fails: a missing or broken dependency must not leave CI green.

A test skips when something it needs is absent here (podman, chromium, the official chart copy,
a tmpfs mount, root). On a developer's machine that is fine and the reason is shown (``-ra``).
With ``CI`` set (``CI=true``, as CI services and .ci/run set it) the same skip is turned into a
failure that keeps the reason, so a failed install cannot make the suite pass with tests unrun.
Only tests marked with one of :data:`CI_MAY_SKIP` may still skip there: they need what no CI
machine of this project has (a Kubernetes cluster with the releases installed).

Loaded by tests/conftest.py; tests/test_skip_guard.py runs it with pytester.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

#: Markers of tests that may skip under CI, with why they cannot run there.
CI_MAY_SKIP = {"cluster": "needs a reachable Kubernetes cluster, which CI machines do not have"}
#: Values of CI that mean "not under CI" (an unset or empty CI does too).
CI_OFF = frozenset({"0", "false", "no", "off"})


def ci_value(environ: Mapping[str, str] = os.environ) -> str | None:
    """The value of ``CI`` when it says this run is CI, else None.

    Example:
        >>> ci_value({"CI": "true"}), ci_value({"CI": "false"}), ci_value({})
        ('true', None, None)
    """
    value = environ.get("CI", "").strip()
    return value if value and value.lower() not in CI_OFF else None


def skip_reason(longrepr: object) -> str:
    """The reason of a skip report (pytest keeps it as ``(path, line, "Skipped: reason")``).

    Example:
        >>> skip_reason(("tests/test_x.py", 3, "Skipped: podman not on PATH"))
        'podman not on PATH'
    """
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(text).removeprefix("Skipped: ")


def _may_skip(item: pytest.Item | None) -> bool:
    return item is not None and any(item.get_closest_marker(name) for name in CI_MAY_SKIP)


def _fail_under_ci(report: pytest.TestReport | pytest.CollectReport, item: pytest.Item | None
                   ) -> None:
    ci = ci_value()
    if ci is None or not report.skipped or hasattr(report, "wasxfail") or _may_skip(item):
        return
    allowed = ", ".join(sorted(CI_MAY_SKIP))
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI={ci}, where only tests marked {allowed} may skip: "
                       f"{skip_reason(report.longrepr)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Turn a test's skip (in setup, call or teardown) into a failure under CI."""
    report = yield
    _fail_under_ci(report, item)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """The same for a whole module skipped while collected (``pytest.importorskip``)."""
    report = yield
    _fail_under_ci(report, None)
    return report

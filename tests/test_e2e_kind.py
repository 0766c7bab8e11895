"""End to end on a real kind cluster: scripts/e2e_kind.sh (make up is assumed done).

Skipped, with the reason, where no cluster with the releases is reachable; never faked.
"""

import os
import shutil
import subprocess

import helm
import pytest
from test_names_in_step import cluster_env

ROOT = helm.ROOT

pytestmark = pytest.mark.cluster


def _cluster_reason() -> str | None:
    """Why the end-to-end test cannot run here, or None when it can."""
    for tool in ("kubectl", "helm", "docker", "kind", "make"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    names = cluster_env()
    context = f"kind-{names['CLUSTER_NAME']}"
    probe = subprocess.run(
        ["kubectl", "--context", context, "--namespace", names["NAMESPACE"], "get",
         f"deploy/{names['AIRFLOW_RELEASE']}-scheduler", "--request-timeout=5s"],
        capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"no reachable cluster {context} with the Airflow release (run `make up`)"
    return None


def test_a_day_runs_end_to_end():
    reason = _cluster_reason()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "e2e_kind.sh")],
        env={**os.environ, "E2E_SKIP_UP": "1"}, cwd=ROOT, text=True, capture_output=True,
        timeout=2400, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "E2E PASSED" in result.stdout

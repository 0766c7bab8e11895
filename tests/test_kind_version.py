"""`make up` refuses a kind older than v0.24 in one line, before creating anything.

Older kind ignores NetworkPolicies (its CNI enforced none before v0.24), which hold every flow of
the pipeline; no kind binary is on these machines, so a script answers `kind version`.
"""

import shutil
import subprocess

import helm
import pytest
from fake_tool_support import make_with_fake_tool

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.mark.parametrize(("output", "passes"), [
    ("kind v0.20.0 go1.20.4 linux/amd64", False),
    ("kind v0.23.0 go1.22.2 linux/amd64", False),
    ("kind v0.24.0 go1.22.6 linux/amd64", True),
    ("kind v0.27.0 go1.23.6 linux/amd64", True),
    ("kind v1.0.0-alpha go1.24 linux/arm64", True),
    ("", False),
])
def test_make_up_refuses_an_old_kind_in_one_line(tmp_path, output, passes):
    result = make_with_fake_tool(tmp_path, "kind-version", "KIND", output)
    assert (result.returncode == 0) is passes, result.stderr
    if not passes:
        assert result.stderr.splitlines()[0].startswith("make up needs kind 0.24.0 or newer")


def test_make_up_checks_kind_before_it_builds_anything():
    result = subprocess.run(["make", "-n", "up"], cwd=helm.ROOT, capture_output=True, text=True,
                            check=False)
    lines = result.stdout.splitlines()
    check = next(i for i, line in enumerate(lines) if "make up needs kind" in line)
    build = next(i for i, line in enumerate(lines) if "docker build" in line or "kind create" in line)
    assert check < build

""".ci/run: a failed install of the container or browser tools stops CI in one line.

.ci/run runs here from a copy of the checkout's ``.ci/`` in a folder of the test, whose Makefile
only records that `make test` ran and with which ``CI``. Its PATH is one folder: the real shell,
grep and make, and small scripts for apt-get, dpkg-query, ``id`` and the tools that answer as on
a root Debian machine whose mirror fails or works. Nothing is installed, nothing of the real
suite runs.
"""

import shutil
import subprocess

import pytest
from settings import ROOT

MAKEFILE = "test:\n\t@echo \"make test ran with CI=$$CI\" > ran\n"
#: The real programs .ci/run and the Makefile above call.
REAL_TOOLS = ("bash", "sh", "dirname", "grep", "make")


def _script(path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path):
    """A folder with .ci/run and a Makefile, and fake bin/ tools of a root Debian machine."""
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "Makefile").write_text(MAKEFILE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in REAL_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    _script(bin_dir / "id", 'if [ "$1" = -u ]; then echo 0; else exec /usr/bin/id "$@"; fi')
    _script(bin_dir / "dpkg-query", "exit 1")  # nothing installed yet
    _script(bin_dir / "apt-get", "exit 0")
    for tool in ("podman", "debootstrap"):
        _script(bin_dir / tool, "exit 0")
    _script(tmp_path / "scripts" / "install_browser.sh", "exit 0")
    return tmp_path


def _ci_run(checkout, **env):
    bin_dir = checkout / "bin"
    return subprocess.run([str(bin_dir / "bash"), str(checkout / ".ci" / "run")], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), **env}, timeout=60, check=False)


def test_installed_tools_run_the_suite_with_ci_set(checkout):
    result = _ci_run(checkout)
    assert result.returncode == 0, result.stderr
    assert (checkout / "ran").read_text() == "make test ran with CI=true\n"


def test_a_ci_value_of_the_service_is_kept(checkout):
    assert _ci_run(checkout, CI="1").returncode == 0
    assert (checkout / "ran").read_text() == "make test ran with CI=1\n"


def test_a_failed_apt_install_fails_ci_in_one_line(checkout):
    _script(checkout / "bin" / "apt-get", 'echo "E: Unable to locate package podman" >&2; exit 100')
    result = _ci_run(checkout)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("ci: error: apt-get could not install podman ")
    assert "skip" not in result.stdout + result.stderr
    assert not (checkout / "ran").exists()


def test_a_tool_missing_after_its_install_fails_ci(checkout):
    (checkout / "bin" / "debootstrap").unlink()
    result = _ci_run(checkout)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("ci: error: debootstrap is not on PATH")
    assert not (checkout / "ran").exists()


def test_a_failed_browser_install_fails_ci_in_one_line(checkout):
    _script(checkout / "scripts" / "install_browser.sh",
            'echo "install_browser: needs root and apt-get to install chromium" >&2; exit 1')
    result = _ci_run(checkout)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "ci: error: could not install chromium and chromium-driver")
    assert not (checkout / "ran").exists()

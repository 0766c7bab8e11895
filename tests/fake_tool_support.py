"""`make` run against a stand-in for a tool these machines lack (helm, kind): a script that answers.

The version checks of mk/cluster.mk read a tool's own version line; a two-line shell script that
prints a chosen line stands in for the binary, named on make's command line (``HELM=``, ``KIND=``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from settings import ROOT


def make_with_fake_tool(folder: Path, target: str, variable: str, answer: str
                        ) -> subprocess.CompletedProcess:
    """Run ``make -s target`` with ``variable`` naming a script in ``folder`` that prints ``answer``.

    Args:
        folder: Where the script is written (a test's own tmp_path).
        target: The make target, e.g. ``helm-version``.
        variable: The makefile variable that names the tool, e.g. ``HELM``; also the script's name.
        answer: The one line the script prints, whatever it is asked.

    Returns:
        The finished make, its output captured as text (never raises on failure).
    """
    fake = folder / variable.lower()
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    return subprocess.run(["make", "-s", target, f"{variable}={fake}"], cwd=ROOT,
                          capture_output=True, text=True, check=False)

"""What a make target of the checkout would run, from ``make -n`` (nothing is run).

Tests of mk/cluster.mk read the commands make itself expands, with the variables given on the
command line, instead of the makefile's text: a rename or a reshuffle of variables that keeps the
commands keeps the tests green, and a wrong expansion fails them.
"""

from __future__ import annotations

import shlex
import subprocess

from settings import ROOT


def dry_run(target: str, *assignments: str) -> list[str]:
    """The shell commands `make -n target assignments...` prints, one string per command.

    A recipe line continued with a backslash becomes one command, as the shell would read it.
    """
    result = subprocess.run(["make", "--no-print-directory", "-n", target, *assignments], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"make -n {target}: {result.stderr.strip()}"
    return join_continued(result.stdout)


def join_continued(text: str) -> list[str]:
    r"""Join lines that end with a backslash to the next one.

    Example:
        >>> join_continued("helm upgrade \\\n\t-f a.yaml\necho done\n")
        ['helm upgrade  -f a.yaml', 'echo done']
    """
    commands, pending = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((pending + line.strip()).strip())
        pending = ""
    return [command for command in commands if command]


def helm_installs(commands: list[str]) -> dict[str, list[str]]:
    """Chart -> arguments of each `helm ... upgrade --install <release> <chart> ...` command.

    Example:
        >>> helm_installs(["helm --namespace n upgrade --install db charts/db -f x.yaml", "true"])
        {'charts/db': ['helm', '--namespace', 'n', 'upgrade', '--install', 'db', 'charts/db', '-f', 'x.yaml']}
    """
    installs = {}
    for command in commands:
        if not command.split()[0].endswith("helm"):
            continue  # not every recipe line is one command for shlex (a `# comment`, say)
        words = shlex.split(command)
        if "--install" in words:
            chart = words[words.index("--install") + 2]
            installs[chart] = words
    return installs


def option_values(words: list[str], option: str) -> list[str]:
    """Every value of ``option`` in an argument list (``-f a -f b`` gives both).

    Example:
        >>> option_values(["helm", "-f", "a.yaml", "--wait", "-f", "b.yaml"], "-f")
        ['a.yaml', 'b.yaml']
    """
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == option]

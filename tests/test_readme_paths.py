"""Every `make` target and repository path the README and docs/ name exists.

Candidates are the words of inline code spans and fenced code blocks, and the targets of
relative links. A word is a repository path when its first segment is a top-level entry git
tracks (``dags/...``, ``scripts/...``, ``Makefile``) or one of our Python packages
(``northwind_elt/...``, resolved under the plugin package's ``src``); data-tree paths
(``reports/<D>/...``), placeholders and URLs are not.
"""

import re
import subprocess
from pathlib import Path

import pytest
from settings import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILES = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
PACKAGES = ROOT / "images" / "meltano" / "northwind-elt" / "src"

CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
#: A rule's targets: ``name:`` or ``a b:`` at the start of a line, not a ``:=`` assignment.
RULE = re.compile(r"^([A-Za-z0-9_.%/ -]+?)\s*::?(?!=)", re.MULTILINE)
#: Parts of a word that make it a pattern or an example, not a path.
PLACEHOLDER = re.compile(r"[<>{}*$…]|\.\.\.")


def code_text(markdown: str) -> list[str]:
    """The inline code spans and fenced code blocks of ``markdown``."""
    blocks = FENCE.findall(markdown)
    rest = FENCE.sub("", markdown)
    return blocks + CODE_SPAN.findall(rest)


def make_targets(text: str) -> list[str]:
    """The targets ``make <target>`` in ``text`` asks for (variables and options skipped)."""
    targets = []
    for line in text.splitlines():
        for match in re.finditer(r"(?:^|[\s;&|(])make((?:\s+[^\s;&|)#]+)+)", line):
            words = [w for w in match.group(1).split() if "=" not in w and not w.startswith("-")]
            if words and re.fullmatch(r"[a-z][a-z0-9-]*", words[0]):
                targets.append(words[0])
    return targets


def defined_targets(makefiles: list[Path]) -> set[str]:
    """Every explicit rule target of ``makefiles``."""
    targets = set()
    for path in makefiles:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for match in RULE.finditer(text):
            targets |= {t for t in match.group(1).split() if not t.startswith(".")}
    return targets


def tracked_roots(root: Path) -> set[str]:
    """The first segment of every file git tracks (top-level folders and files)."""
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    return {line.split("/", 1)[0] for line in listed.stdout.splitlines()}


def repository_paths(text: str, roots: set[str], packages: set[str]) -> list[str]:
    """The words of ``text`` that name a path of the repository or of our Python packages."""
    paths = []
    for word in re.split(r"[\s=,;()\[\]\"']+", text):
        word = word.split("::")[0].rstrip(".:")
        if not word or PLACEHOLDER.search(word) or "://" in word:
            continue
        first = word.removeprefix("./").split("/", 1)[0]
        if first in roots or (first in packages and "/" in word):
            paths.append(word.removeprefix("./"))
    return paths


def resolve(path: str, packages: set[str]) -> Path:
    """Where ``path`` lives: the repository, or the plugin package's ``src`` for our packages."""
    first = path.split("/", 1)[0]
    return (PACKAGES if first in packages and not (ROOT / first).exists() else ROOT) / path


def missing_names(doc: Path) -> list[str]:
    """Every `make` target, repository path and relative link of ``doc`` that does not exist."""
    markdown = doc.read_text(encoding="utf-8")
    roots, packages = tracked_roots(ROOT), {p.name for p in PACKAGES.iterdir() if p.is_dir()}
    defined = defined_targets(MAKEFILES)
    problems = []
    for text in code_text(markdown):
        problems += [f"make {t}" for t in make_targets(text) if t not in defined]
        problems += [p for p in repository_paths(text, roots, packages) if not resolve(p, packages).exists()]
    for link in LINK.findall(markdown):
        if "://" not in link and not link.startswith("mailto:") and not (doc.parent / link).exists():
            problems.append(link)
    return list(dict.fromkeys(problems))


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_target_and_path_a_doc_names_exists(doc):
    assert missing_names(doc) == [], f"{doc.relative_to(ROOT)} names what does not exist"


def test_the_check_finds_a_missing_target_path_and_link(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(
        "Run `make run DATE=2024-01-02`, then `make no-such-target`; see `scripts/run_local.py`,\n"
        "`scripts/no_such_script.py`, `northwind_elt/layout.py` and [gone](docs/gone.md).\n"
        "```sh\nVERBOSE=1 make -s status && make vanished\n```\n"
        "Not paths: `reports/<D>/orders_with_details.csv`, `data/x`, `s3://bucket/dags/x`.\n"
    )

    assert missing_names(doc) == ["make vanished", "make no-such-target", "scripts/no_such_script.py",
                                  "docs/gone.md"]

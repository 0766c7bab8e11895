"""mk/cluster.mk: what `make up` prints, and what it leaves to explicit targets."""

import re

import helm

CLUSTER_MK = helm.ROOT / "mk" / "cluster.mk"


def _recipe(target: str) -> str:
    text = CLUSTER_MK.read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n|\n)*)", text, re.MULTILINE)
    assert match, f"no target {target}"
    return match.group(1)


def test_up_does_not_print_the_admin_password():
    # Terminal scrollback and CI logs keep whatever `make up` prints.
    assert "AIRFLOW_PASSWORDS_SECRET" not in _recipe("up")
    assert "make password" in _recipe("up")


def test_password_is_printed_on_request():
    # The generated Secret of charts/northwind-pipeline holds the {"user": "password"} file.
    assert "get secret $(AIRFLOW_PASSWORDS_SECRET)" in _recipe("password")
    assert "passwords\\.json" in _recipe("password")
    assert re.search(r"^\.PHONY:.*\bpassword\b", CLUSTER_MK.read_text(), re.MULTILINE)

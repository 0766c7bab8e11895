"""mk/cluster.mk: what `make up` prints, and what it leaves to explicit targets.

Read from the commands make would run (``make -n``, tests/make_targets.py) and, for what they
print, by running those commands' own ``echo`` lines and decoding pipeline.
"""

import base64
import json
import shlex
import subprocess

import helm
from make_targets import dry_run
from test_names_in_step import cluster_env


def _passwords_secret() -> dict:
    """The Secret of charts/northwind-pipeline that holds the Airflow logins' passwords file."""
    found = [doc for doc in helm.by_kind(helm.render("northwind-pipeline"), "Secret")
             if "passwords.json" in (doc.get("data") or {})]
    assert len(found) == 1, [doc["metadata"]["name"] for doc in found]
    return found[0]


def _bash(script: str, stdin: str = "") -> str:
    result = subprocess.run(["bash", "-c", script], input=stdin, capture_output=True, text=True,
                            check=True)
    return result.stdout


def test_up_does_not_print_the_admin_password():
    # Terminal scrollback and CI logs keep whatever `make up` prints.
    commands = dry_run("up")
    secret = _passwords_secret()["metadata"]["name"]
    assert [c for c in commands if secret in c or "passwords" in c] == []
    printed = _bash("\n".join(c for c in commands if c.split()[0] == "echo"))
    assert "print the password with: make password" in printed
    assert "Northwind pipeline is up" in printed


def test_password_prints_the_generated_password_on_request():
    secret = _passwords_secret()
    users = json.loads(base64.b64decode(secret["data"]["passwords.json"]))
    assert "admin" in users  # the login `make up` names
    command = next(c for c in dry_run("password") if "get secret" in c)
    read, decode = command.split(" | ", 1)
    words = shlex.split(read)
    names = cluster_env()
    assert words[words.index("--context") + 1] == f"kind-{names['CLUSTER_NAME']}"
    assert words[words.index("--namespace") + 1] == names["NAMESPACE"]
    assert words[words.index("secret") + 1] == secret["metadata"]["name"]
    # kubectl's JSONPath with an escaped dot: the "passwords.json" key of .data.
    path = words[words.index("-o") + 1].removeprefix("jsonpath=")
    assert path == "{.data.passwords\\.json}"
    # The rest of the pipeline, fed what kubectl prints, prints the file with the password.
    printed = _bash(decode, stdin=secret["data"]["passwords.json"])
    assert json.loads(printed) == users


def test_password_runs_even_beside_a_file_named_password():
    # A phony target: make runs it whatever files the checkout holds.
    database = subprocess.run(["make", "-p", "-n", "password"], cwd=helm.ROOT, capture_output=True,
                              text=True, check=True).stdout
    entry = database[database.index("\npassword:"):]
    assert "#  Phony target" in entry.split("\n\n", 1)[0]

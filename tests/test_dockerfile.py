"""images/meltano/Dockerfile: pinned, non-root, secret-free, one venv; its size and its steps:
tests/test_e2e_containers.py."""

import re
import subprocess
import sys
import tomllib

import helm
import pytest
import yaml
from test_names_in_step import cluster_env

ROOT = helm.ROOT
DOCKERFILE = ROOT / "images" / "meltano" / "Dockerfile"
PROJECT = yaml.safe_load((ROOT / "images" / "meltano" / "meltano.yml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), " ".join(rest.split())))
    return result


@pytest.fixture(scope="module")
def steps():
    return instructions(DOCKERFILE.read_text())


def _env(steps) -> dict[str, str]:
    env = {}
    for word, rest in steps:
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


def _args(steps) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(r for w, r in steps if w == "ARG")))


def test_base_image_is_an_argument_whose_default_is_the_pinned_python_311_slim(steps):
    # The container end-to-end builds on a local Debian base; everyone else on the official one.
    assert steps[0][0] == "ARG"
    assert re.fullmatch(r"BASE_IMAGE=python:3\.11\.\d+-slim-bookworm", steps[0][1])
    # A build stage with the tools, then the image itself: both on the same base.
    assert [rest for word, rest in steps if word == "FROM"] == ["${BASE_IMAGE} AS build",
                                                               "${BASE_IMAGE}"]


def test_constraints_are_in_step_with_the_locks():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_constraints.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_image_installs_once_with_the_locked_constraints(steps):
    runs = [rest for word, rest in steps if word == "RUN" and "uv pip install" in rest]
    assert len(runs) == 1 and "-c /build/constraints.txt" in runs[0], runs
    copies = [rest for word, rest in steps if word == "COPY"]
    assert "images/meltano/constraints.txt /build/constraints.txt" in copies


def test_only_the_stock_tap_has_a_venv_of_its_own_and_it_is_pinned():
    # Our plugins are one package: they run from the venv of Meltano (test_plugins.py runs them).
    plugins = [p for kind in PROJECT["plugins"].values() for p in kind if "pip_url" in p]
    assert [p["name"] for p in plugins] == ["tap-postgres-stock"]
    words = plugins[0]["pip_url"].split()
    assert words[0] == "-c"
    constraints = ROOT / "images" / "meltano" / words[1].removeprefix("${MELTANO_PROJECT_ROOT}/")
    pins = dict(line.split(" ;")[0].split("==") for line in constraints.read_text().splitlines()
                if line and not line.startswith("#"))
    # A PyPI plugin is itself pinned by its constraints (its closure is in them).
    name, version = words[2].split("==")
    assert pins.get(name) == version


def test_no_job_of_the_image_needs_the_stock_tap():
    # The image installs no plugin: the stock tap is for tests/test_interop.py and `make bench`.
    tasks = " ".join(" ".join(job["tasks"]) for job in PROJECT["jobs"])
    assert "stock" not in tasks


def test_bytecode_is_compiled_at_build(steps):
    # Read-only root and PYTHONDONTWRITEBYTECODE: without .pyc files every start compiles Meltano.
    env = _env(steps)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["UV_COMPILE_BYTECODE"] == "1"


def test_tools_are_pinned_like_the_lock(steps):
    args = _args(steps)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["UV_VERSION"])
    assert any('"uv==${UV_VERSION}"' in rest for word, rest in steps if word == "RUN")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = dict(d.split("==") for d in pyproject["project"]["dependencies"] if "==" in d)
    assert args["MELTANO_VERSION"] == pins["meltano"]


def test_the_project_is_where_the_pods_run_it(steps):
    names = cluster_env()
    assert [rest for word, rest in steps if word == "WORKDIR"][-1] == names["MELTANO_PROJECT_DIR"]
    copies = [rest for word, rest in steps if word == "COPY"]
    assert f"--from=build {names['MELTANO_PROJECT_DIR']} {names['MELTANO_PROJECT_DIR']}" in copies
    assert "sources/ /project/sources/" in copies


def test_no_other_make_recipe_spells_meltano_install():
    # Everyone uses $(MELTANO_INSTALL), so the Makefile and the tests cannot drift.
    for path in [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                if "meltano install" in line and not line.startswith(("MELTANO_INSTALL", "#")):
                    pytest.fail(f"{path.name}: {line.strip()} (use $(MELTANO_INSTALL))")


def test_runs_as_a_numeric_non_root_user_like_the_charts(steps):
    user = [rest for word, rest in steps if word == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    for chart, path in (("northwind-pipeline", ("runAsUser",)),
                        ("northwind-databases", ("seed", "runAsUser"))):
        node = helm.load_values_file(helm.chart_dir(chart) / "values.yaml")
        for key in path:
            node = node[key]
        assert node == int(uid), chart


def test_suits_pod_operator_commands(steps):
    assert not [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert [rest for word, rest in steps if word == "CMD"][-1].startswith('["meltano"')


def test_runtime_environment(steps):
    env = _env(steps)
    names = cluster_env()
    assert env["NORTHWIND_DATA_ROOT"] == names["DATA_MOUNT_PATH"]
    assert env["ORDER_DETAILS_CSV"] == "/project/sources/order_details.csv"
    assert env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    # The system database migrated at build, read-only at run time; the pods use the same one.
    uri = env["MELTANO_DATABASE_URI"].strip('"')
    assert uri.startswith(f"sqlite:///file:{names['MELTANO_PROJECT_DIR']}/.meltano/meltano.db?")
    assert "mode=ro" in uri and "immutable=1" in uri
    from northwind.pods import step_pod_kwargs

    pod_env = step_pod_kwargs("extract-csv")["env_vars"]
    assert pod_env["MELTANO_DATABASE_URI"] == uri, "the step pods and the image open different databases"
    assert any(r.startswith("/opt/venv/bin/meltano upgrade database && test ! -e "
                            ".meltano/meltano.db-wal") for w, r in steps if w == "RUN")
    assert env["HOME"] == "/tmp"
    # Meltano's run folder points at /tmp, so a read-only root filesystem works.
    assert "ln -s /tmp .meltano/run" in " ".join(r for w, r in steps if w == "RUN")


def test_no_secrets_in_layers(steps):
    for word, rest in steps:
        if word in ("ENV", "ARG"):
            assert not re.search(r"(?i)(password|secret|token)\w*=", rest), rest
    assert not [rest for word, rest in steps if word == "COPY" and ".env" in rest]


def test_build_context_filters_agree_and_keep_what_the_image_needs():
    local = (ROOT / "images" / "meltano" / "Dockerfile.dockerignore").read_text()
    assert (ROOT / ".dockerignore").read_text() == local
    rules = [line for line in local.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!sources/", "!images/meltano/", "images/meltano/.meltano/"} <= set(rules)


def test_instruction_parser_joins_continuations():
    assert instructions("RUN a \\\n    b\n# c\nUSER 1") == [("RUN", "a b"), ("USER", "1")]

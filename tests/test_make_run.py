"""The Makefile hands user variables to commands without a shell running part of them.

``make run DATE='2024-01-02; touch X'`` once ran the day and then ``touch X``. Make now checks every
variable a goal reads (mk/user-vars.mk) while it reads the Makefile: a bad value stops it with one
line before any recipe runs, and the runner refuses a value that is not a day in one line too.
"""

import os
import subprocess
import sys

import pytest
from settings import ROOT


def make(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    """Run make in the repository with ``arguments``, as a user would (not as a sub-make).

    Under ``make test`` the environment carries MAKELEVEL and MAKEFLAGS, and a make started
    from it announces the folder it enters: a line the user never sees.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def hostile(tmp_path) -> dict[str, str]:
    """Values that would run ``touch`` in a shell, each with its own witness file."""
    def witness(name: str) -> str:
        return str(tmp_path / name)
    return {
        "semicolon": f"2024-01-02; touch {witness('semicolon')}",
        "command substitution": f"$$(touch {witness('substitution')})",
        "backticks": f"`touch {witness('backticks')}`",
        "quote": f"2024-01-02'; touch {witness('quote')}; echo '",
        "newline": f"2024-01-02\ntouch {witness('newline')}",
    }


#: Goal, variable, what make says it expects; every target that hands a user variable on.
TARGETS = [
    ("run", "DATE", "a day YYYY-MM-DD"),
    ("trigger", "DATE", "a day YYYY-MM-DD"),
    ("logs", "DATE", "a day YYYY-MM-DD"),
    ("backfill", "FROM", "a day YYYY-MM-DD"),
    ("backfill", "TO", "a day YYYY-MM-DD"),
    ("airflow", "PORT", "a number"),
    ("ui", "UI_PORT", "a number"),
    ("bench", "SCALE", "a number"),
    ("bench", "BACKEND", "letters digits . _ - only"),
    ("logs", "STEP", "letters digits . _ - only"),
    ("up", "NODES", "letters digits . _ - only"),
    ("up", "DATA_BACKEND", "letters digits . _ - only"),
    ("up", "EXECUTOR", "letters digits . _ - only"),
    ("up", "HELM_TIMEOUT", "letters digits . _ - only"),
    # Any other variable set on the command line (here an override of a cluster.env name).
    ("status", "IMAGE_TAG", "letters digits and . _ - : / @ + = only"),
]


@pytest.mark.parametrize("goal, variable, expected", TARGETS, ids=[f"{g}-{v}" for g, v, _ in TARGETS])
def test_a_hostile_variable_stops_make_with_one_line_before_anything_runs(tmp_path, goal, variable,
                                                                          expected):
    good = {"DATE": "2024-01-02", "FROM": "2024-01-01", "TO": "2024-01-03", "STEP": "extract-csv"}
    for case, value in hostile(tmp_path).items():
        others = [f"{name}={v}" for name, v in good.items() if name != variable]
        result = make(tmp_path, goal, *others, f"{variable}={value}")

        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert result.stdout == "", (case, result.stdout)  # no recipe ran, install included
        lines = result.stderr.splitlines()
        assert len(lines) == 1 + value.count("\n"), (case, result.stderr)
        shown = value.replace("$$", "$")  # make read `$$` as one dollar sign
        assert f"{variable}='{shown}': expected {expected}" in result.stderr, (case, result.stderr)
    assert list(tmp_path.iterdir()) == []  # no witness file: no shell ran any of it


def test_a_good_date_reaches_the_runner_quoted():
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", "run", "DATE=2024-01-02"],
                            capture_output=True, text=True, timeout=120, check=True)

    assert "scripts/run_local.py --date='2024-01-02'" in result.stdout


def test_pytest_args_stay_a_list_of_arguments():
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", "test",
                             'PYTEST_ARGS=-k "not slow"'], capture_output=True, text=True, timeout=120,
                            check=True)

    assert 'pytest -k "not slow"' in result.stdout


@pytest.mark.parametrize("value, reason", [
    ("2024-02-30", "day is out of range for month"),
    ("20240102", "expected YYYY-MM-DD"),
    ("2024-1-2x", "expected YYYY-MM-DD"),
])
def test_the_runner_refuses_a_value_that_is_not_a_day_in_one_line_before_starting(tmp_path, value,
                                                                                   reason):
    state = tmp_path / "local"
    env = {**os.environ, "NORTHWIND_LOCAL_DIR": str(state), "NORTHWIND_DATA_ROOT": str(tmp_path / "d")}

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_local.py"), f"--date={value}"],
                            env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"run_local: DATE={value!r} is not a day (YYYY-MM-DD): {reason}\n"
    assert not state.exists() and not (tmp_path / "d").exists()  # no server, no data tree


def test_a_task_id_that_is_no_plain_file_name_gets_no_log_file(tmp_path):
    # The local runner lives beside the scripts, never in the DAG folder a cluster mounts.
    sys.path.insert(0, str(ROOT / "scripts"))
    from northwind_local.day_run import task_log_path

    assert task_log_path(tmp_path, "load_warehouse") == tmp_path / "load_warehouse.log"
    for task_id in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="cannot name a log file"):
            task_log_path(tmp_path, task_id)
    assert not (ROOT / "dags" / "northwind" / "local_run.py").exists()

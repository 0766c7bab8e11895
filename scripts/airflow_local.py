"""Airflow 3 with its UI on this machine, no cluster: what ``make airflow`` starts.

``airflow standalone`` runs the api-server, scheduler, dag-processor and triggerer with a
LocalExecutor. Here its metadata database is ``airflow`` in the embedded PostgreSQL of ``.local``
(beside ``northwind`` and ``warehouse``), the DAG folder is this checkout's, and the steps run as
local processes (``NORTHWIND_RUNTIME=local``) against the same databases and data tree as
``make run``. The admin password is generated once by Airflow's SimpleAuthManager and kept in
``.local/airflow-server/``; a second start reuses everything. Ctrl-C stops all of it.

Usage::

    uv run python scripts/airflow_local.py [--port 8080]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from northwind_local.settings import DAGS_FOLDER, local_environment, state_dir

#: The metadata database of the local Airflow, beside the pipeline's two.
AIRFLOW_DATABASE = "airflow"
USER = "admin"
STARTUP_TIMEOUT_SECONDS = 900  # a loaded 2-core machine needs minutes


def airflow_environment(state: Path, port: int) -> dict[str, str]:
    """Return the settings of the local Airflow: the pipeline's, plus home, database and server."""
    import psycopg
    from northwind_elt.localdb import SUPERUSER, ensure_database

    env = local_environment(state)  # NORTHWIND_RUNTIME=local among them
    socket_dir = env["WAREHOUSE_PGHOST"]
    with psycopg.connect(host=socket_dir, dbname="postgres", user=SUPERUSER, autocommit=True) as admin:
        ensure_database(admin, AIRFLOW_DATABASE)
    home = state / "airflow-server"
    home.mkdir(parents=True, exist_ok=True)
    # A socket-only server: the host goes in the query (libpq takes a folder as host).
    database = f"{SUPERUSER}@/{AIRFLOW_DATABASE}?host={socket_dir}"
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{database}",
        # Airflow would pick asyncpg (not installed) for its async engine; psycopg 3 does both.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{database}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # two cores: both extracts at once, no more
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        # The scheduler's and triggerer's log servers (for remote workers: unused here, the
        # api-server reads the local log files) would take the fixed ports 8793 and 8794,
        # which a second Airflow on this machine (or --port 8793) already holds.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Paused until the user triggers a day (the Trigger dialog unpauses it): unpaused at
        # creation, @daily would start today's run at once and, with max_active_runs=1, hold
        # back the day the user asked for.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def free_port() -> int:
    """Return a TCP port that no process listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, password_file: Path) -> str:
    """Wait for the api-server to answer and the password file to exist; return the password."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"airflow_local: airflow standalone exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
                healthy = response.status == 200
        except (urllib.error.URLError, OSError):
            healthy = False
        if healthy and password_file.is_file():
            return json.loads(password_file.read_text())[USER]
        time.sleep(2)
    raise SystemExit(f"airflow_local: Airflow did not answer at {url} within {STARTUP_TIMEOUT_SECONDS} s")


def main(argv: list[str] | None = None) -> int:
    """Start Airflow, print the URL and login, run until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="the UI's port (default 8080)")
    args = parser.parse_args(argv)
    # Ctrl-C must stop us even when started where SIGINT is ignored (a background job of a script);
    # standalone then inherits the default handling too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    local_dir = state_dir()
    # Unbuffered: standalone relays its components' lines, and the log should show them as they come.
    env = {**os.environ, **airflow_environment(local_dir, args.port), "PYTHONUNBUFFERED": "1"}
    log = local_dir / "logs" / "airflow-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://localhost:{args.port}"
    print(f"airflow_local: starting Airflow (log: {log})", flush=True)
    with open(log, "a") as output:
        # Its own session: our Ctrl-C handling decides how the components stop (standalone stops
        # them cleanly on SIGINT; on SIGTERM it would leave them running).
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
            password = wait_until_ready(url, server, passwords)
            print(f"Airflow UI: {url}  login: {USER} / {password}  (Ctrl-C stops it)", flush=True)
            print(
                "Trigger northwind_daily with the date param (YYYY-MM-DD) to run a day"
                " (the DAG starts paused; the Trigger dialog unpauses it).",
                flush=True,
            )
            return server.wait()
        except KeyboardInterrupt:
            print("airflow_local: stopping", flush=True)
            return 0
        finally:
            stop(server)


def stop(server: subprocess.Popen, grace_seconds: float = 60) -> None:
    """Stop standalone and every component it started (its process group)."""
    # A second Ctrl-C (the terminal's, or uv passing it on) must not cut this short and leave
    # the components running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signal_number in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(server.pid, signal_number)
        except ProcessLookupError:
            return  # the whole group is gone
        try:
            server.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            continue
        # standalone is gone; its components get the same grace before the group is killed.
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and _group_alive(server.pid):
            time.sleep(1)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())

"""The local Airflow (``make airflow``) in a real browser: log in, trigger a day, read a task log.

Debian's chromium and chromedriver (``scripts/install_browser.sh``, run by ``.ci/run``) driven by
selenium; nothing is downloaded at run time (the driver path is given, so selenium-manager never
runs). Airflow runs from ``scripts/airflow_local.py`` with its own state folder, databases and
data tree under the test's tmp folder. ``NORTHWIND_UPDATE_SCREENSHOT=1`` also copies the grid's
screenshot to ``docs/airflow-grid.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser_support import chromium, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "northwind_daily"
DAY = "2024-01-02"
STARTUP_SECONDS = 900
RUN_SECONDS = 720  # two runs (today's @daily first), each ~100 s here, ~180 s on a loaded machine
SCREENSHOT = ROOT / "docs" / "airflow-grid.png"

pytestmark = [pytest.mark.slow, needs_chromium]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@pytest.fixture
def airflow(tmp_path):
    """``make airflow``'s script on a free port with its own state; yield (url, password)."""
    from northwind_elt import localdb

    state_dir = tmp_path / "local"
    port = free_port()
    env = {
        **os.environ,
        "NORTHWIND_LOCAL_DIR": str(state_dir),
        "NORTHWIND_DATA_ROOT": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    output = tmp_path / "airflow_local.out"
    with open(output, "w") as out:
        # Its own process group: the test stops it as Ctrl-C would.
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "airflow_local.py"), "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (login := re.search(r"^Airflow UI: (\S+)  login: admin / (\S+)", output.read_text(), re.M)):
            assert process.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no login line within {STARTUP_SECONDS} s"
            time.sleep(2)
        yield login.group(1), login.group(2)
    finally:
        stop_airflow(process)
        localdb.stop_server(state_dir)


def stop_airflow(process: subprocess.Popen) -> None:
    """Ctrl-C for airflow_local.py (it stops standalone's group); kill both groups if that hangs."""
    import psutil

    groups = {process.pid}
    try:
        groups |= {os.getpgid(child.pid) for child in psutil.Process(process.pid).children()}
    except (psutil.Error, ProcessLookupError):
        pass
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=150)
    except subprocess.TimeoutExpired:
        pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path, "1600,1000") as driver:
        yield driver


def api(url: str, token: str, path: str) -> dict:
    request = urllib.request.Request(f"{url}/api/v2{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


def test_trigger_a_day_in_the_ui_and_read_its_task_log(airflow, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, password = airflow
    wait = WebDriverWait(browser, 60)

    # The real login form.
    browser.get(f"{url}/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda driver: "/auth/login" not in driver.current_url)
    token = browser.get_cookie("_token")["value"]  # the UI session's token, for the REST API

    # The DAG starts paused: nothing ran before the user's trigger.
    assert api(url, token, f"/dags/{DAG_ID}")["is_paused"] is True
    assert api(url, token, f"/dags/{DAG_ID}/dagRuns")["dag_runs"] == []

    # The Trigger dialog, with the date param (its "Unpause on trigger" box is ticked by default).
    browser.get(f"{url}/dags/{DAG_ID}")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
    wait.until(ec.element_to_be_clickable((By.NAME, "element_date"))).send_keys(DAY)
    [submit] = [
        button
        for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Trigger']")
        if button.is_displayed() and button.get_attribute("aria-label") != "Trigger Dag"
    ]
    submit.click()
    wait.until(lambda driver: "/runs/manual__" in driver.current_url)
    run_id = urllib.parse.unquote(browser.current_url.split("/runs/")[1].split("/")[0])

    run = api(url, token, f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")
    # The dialog sends every param: the date typed, reextract at its default (keep the extracts).
    assert run["conf"] == {"date": DAY, "reextract": False}
    # Unpausing also starts today's @daily run (catchup=False: the latest only); max_active_runs=1
    # runs them one after the other.
    deadline = time.monotonic() + RUN_SECONDS
    while (state := api(url, token, f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")["state"]) not in (
        "success", "failed"
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {RUN_SECONDS} s"
        time.sleep(5)
    tasks = api(url, token, f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")
    assert {task["task_id"]: task["state"] for task in tasks["task_instances"]} == {
        "extract_postgres": "success",
        "extract_csv": "success",
        "load_warehouse": "success",
        "publish_report": "success",
        "check_warehouse": "success",
    }
    assert state == "success"

    # The task's log in the UI holds the step's row counts for that day.
    run_page = f"{url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}"
    browser.get(f"{run_page}/tasks/extract_postgres")
    expected = ("published categories: 8 rows", "published orders: 830 rows",
                f"step extract-postgres succeeded for RUN_DATE={DAY}")
    wait.until(lambda driver: all(text in driver.find_element(By.TAG_NAME, "body").text for text in expected))

    # The grid of the run: four green squares.
    browser.get(run_page)
    wait.until(lambda driver: "publish_report" in driver.find_element(By.TAG_NAME, "body").text)
    time.sleep(3)  # the grid's bars are drawn after the task list
    screenshot = tmp_path / "airflow-grid.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    if os.environ.get("NORTHWIND_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)

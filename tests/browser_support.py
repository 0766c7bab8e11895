"""Debian's chromium driven by selenium, for the browser tests (Airflow UI, the status page).

The driver's path is given, so selenium-manager (which would download a browser) never runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

#: Skips (a failure under CI=true: tests/skip_guard.py) where Debian's chromium is not installed.
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver: "
    "scripts/install_browser.sh)",
)


@contextmanager
def chromium(tmp_path: Path, window: str, console_log: bool = False) -> Iterator:
    """A headless chromium of its own profile under ``tmp_path``, quit on exit.

    Args:
        tmp_path: the test's folder (the profile goes below it).
        window: the window size, ``"WIDTH,HEIGHT"``.
        console_log: keep the page's console messages (``driver.get_log("browser")``).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window}"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}")
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()

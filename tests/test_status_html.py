"""``northwind status --html PATH``: the days as one HTML page, checked as text and in a browser.

The unit tests feed markers to :mod:`northwind_elt.status_html`'s pure functions. The browser
test runs real steps on two days (one with a source table named like a script, one whose CSV
extract fails), writes the page with the real command and opens it in Debian's chromium through
selenium, as tests/test_airflow_ui.py does. ``NORTHWIND_UPDATE_SCREENSHOT=1`` also copies the
page's screenshot to ``docs/status-html.png``.
"""

from __future__ import annotations

import html.parser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser_support import chromium, needs_chromium
from northwind_elt import cli, status_html
from northwind_elt.steps import StepMarker
from pipeline import assert_ok, run_step
from psycopg import sql
from s3server import with_server

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "status-html.png"
GOOD_DAY, FAILED_DAY = "2024-01-02", "2024-01-03"
#: A source table whose name is markup: the page must show it as text and run nothing.
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def marker(day: str, step: str, status: str = "success", rows: dict[str, int] | None = None,
           seconds: int = 5, error: str | None = None) -> StepMarker:
    """A marker as a step writes it: started at 06:00, finished ``seconds`` later."""
    return StepMarker(step=step, run_date=day, status=status,
                      started_at=f"{day}T06:00:00+00:00",
                      finished_at=None if status == "running" else f"{day}T06:00:{seconds:02d}+00:00",
                      rows=rows or {}, error=error)


class Elements(html.parser.HTMLParser):
    """The start tags of a page, with their attributes, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def named(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags
                if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]


def page_of(markers: list[StepMarker], states: list[tuple[str, str]] | None = None) -> str:
    states = states or [(m.status, "") for m in markers]
    return status_html.render(status_html.views_of(markers, states), where="/data",
                              written_at="2024-01-10T00:00:00+00:00")


def test_a_hostile_table_name_is_shown_as_text_and_adds_no_element():
    page = page_of([marker(GOOD_DAY, "extract-postgres", rows={HOSTILE: 3, "orders": 830}),
                    marker(GOOD_DAY, "extract-csv", "failed", error=f"table {HOSTILE}: bad")])
    found = Elements(page)
    assert not found.named("script") and not found.named("img")
    assert all(not k.startswith("on") for _, a in found.tags for k in a)
    assert HOSTILE in "".join(found.text)  # the name itself, readable
    assert [f["data-table"] for f in found.named("figure")] == [HOSTILE, "orders"]
    assert "default-src 'none'" in page  # and were anything to slip through: no script runs


def test_a_failed_step_is_red_with_its_reason_and_no_rows():
    markers = [marker(GOOD_DAY, "extract-postgres", rows={"orders": 830}),
               marker(GOOD_DAY, "extract-csv", "failed", seconds=2,
                      error="order_details.csv line 2, column quantity: 'twelve' is not a smallint")]
    page = page_of(markers)
    found = Elements(page)
    (cell,) = found.named("td", class_="state-failed")
    assert cell["data-step"] == "extract-csv" and "#c62828" in (cell["style"] or "")
    assert "order_details.csv line 2, column quantity: &#x27;twelve&#x27; is not a smallint" in page
    (bar,) = found.named("rect", class_="bar state-failed")
    assert bar["fill"] == status_html.STATE_COLOURS["failed"]
    assert ">2 s<" in page and ">5 s<" in page


def test_a_derived_state_shows_why_and_a_running_step_no_duration():
    markers = [marker(GOOD_DAY, "extract-postgres", rows={"orders": 830}),
               marker(GOOD_DAY, "load-warehouse", "running")]
    page = page_of(markers, [("stale", "extract-postgres changed since it ran: rerun x"),
                             ("dead", "attempt a ended without a result (killed?)")])
    found = Elements(page)
    assert found.named("td", class_="state-stale") and found.named("td", class_="state-dead")
    assert "changed since it ran" in page and "killed?" in page
    assert len(found.named("rect", class_="bar state-stale")) == 1  # none for the running one
    assert not found.named("rect", class_="bar state-dead")


def test_a_day_without_a_step_shows_not_run_and_a_stub_in_its_chart():
    page = page_of([marker(GOOD_DAY, "extract-postgres", rows={"orders": 830}),
                    marker(GOOD_DAY, "extract-csv", rows={"order_details": 2155}),
                    marker(FAILED_DAY, "extract-csv", rows={"order_details": 2160})])
    found = Elements(page)
    assert [(c["data-step"]) for c in found.named("td", class_="missing")] == ["extract-postgres"]
    orders = page.split('data-table="orders"')[1].split("</figure>")[0]
    assert orders.count('class="bar"') == 1 and orders.count('class="gap"') == 1


def test_steps_done_within_their_first_second_still_get_bars():
    found = Elements(page_of([marker(GOOD_DAY, "extract-postgres", seconds=0),
                              marker(GOOD_DAY, "extract-csv", seconds=0),
                              marker(FAILED_DAY, "extract-csv", "running")]))
    bars = found.named("rect", class_="bar state-success")
    assert [(b["data-day"], b["data-step"]) for b in bars] == [
        (GOOD_DAY, "extract-postgres"), (GOOD_DAY, "extract-csv")]


def test_no_markers_make_a_page_that_says_so():
    page = page_of([])
    assert "No step has run yet under /data" in page and "<svg" not in page


def test_many_days_keep_the_charts_their_size_with_a_bar_per_day():
    days = [f"2024-{month:02d}-{day:02d}" for month in range(1, 13) for day in range(1, 29)]
    markers = [marker(d, "extract-postgres", rows={"orders": 800 + i}, seconds=i % 50 + 1)
               for i, d in enumerate(days)]
    page = page_of(markers)
    found = Elements(page)
    assert [r["data-day"] for r in found.named("rect", class_="bar state-success")] == days
    assert [r["data-day"] for r in found.named("rect", class_="bar")] == days  # rows of orders
    widths = {s["width"] for s in found.named("svg")}
    assert widths == {str(status_html.CHART_WIDTH), str(status_html.SPARK_WIDTH)}
    axis = page.split('class="durations"')[1].split("</svg>")[0]
    assert 2 <= axis.count('text-anchor="middle">2024-') <= status_html.MAX_DAY_LABELS


def test_durations_read_as_a_person_would_say_them():
    assert [status_html.format_seconds(s) for s in (0, 4, 4.24, 185, 3725)] == [
        "< 1 s", "4 s", "4.2 s", "3 min 05 s", "1 h 02 min"]
    assert status_html.duration_seconds("2024-01-02T06:00:00+00:00", None) is None
    assert status_html.duration_seconds("garbage", "2024-01-02T06:00:00+00:00") is None


def test_a_page_that_cannot_be_written_is_one_line_naming_the_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "status.html"

    code = cli.main(["--data-root", str(tmp_path / "data"), "status", "--html", str(target)])

    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {target}" in err, err
    assert "Traceback" not in err


def test_plain_status_does_not_import_the_page_module(tmp_path):
    probe = ("import sys; from northwind_elt import cli; "
             f"code = cli.main(['--data-root', {str(tmp_path / 'data')!r}, 'status']); "
             "print(code, 'northwind_elt.status_html' in sys.modules)")

    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)

    assert done.stdout.splitlines()[-1] == "0 False", done.stdout


def days_with_a_hostile_table_and_a_failed_extract(databases) -> None:
    """Run real steps: a good day (both extracts and the load), then a day whose CSV is broken."""
    with databases.source(autocommit=True) as src:
        src.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY)").format(
            sql.Identifier(HOSTILE)))
        src.execute(sql.SQL("INSERT INTO {} VALUES (1), (2), (3)").format(
            sql.Identifier(HOSTILE)))
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, GOOD_DAY, databases.env))
    assert_ok(run_step("extract-postgres", FAILED_DAY, databases.env))
    Path(databases.env["ORDER_DETAILS_CSV"]).write_text(
        "order_id,product_id,unit_price,quantity,discount\n10248,11,14,twelve,0\n")
    assert run_step("extract-csv", FAILED_DAY, databases.env).returncode != 0


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path, "1300,1400", console_log=True) as driver:
        yield driver


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
@needs_chromium
def test_two_real_days_in_a_browser(databases, browser, tmp_path, capsys):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    days_with_a_hostile_table_and_a_failed_extract(databases)
    page = tmp_path / "out" / "status.html"
    assert cli.main(["--data-root", str(databases.data_root), "status", "--html", str(page)]) == 0
    assert f"wrote {page}: 2 days, 5 step markers" in capsys.readouterr().out

    browser.get(page.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "table.days tbody tr")
    assert [r.get_attribute("data-day") for r in rows] == [GOOD_DAY, FAILED_DAY]
    cell = browser.find_element(By.CSS_SELECTOR,
                                f'tr[data-day="{FAILED_DAY}"] td[data-step="extract-csv"]')
    state = cell.find_element(By.CLASS_NAME, "state")
    assert state.text == "failed" and state.value_of_css_property("color") == "rgba(198, 40, 40, 1)"
    reason = cell.find_element(By.CLASS_NAME, "reason")
    assert reason.is_displayed() and "twelve" in reason.text and "quantity" in reason.text
    assert browser.find_element(
        By.CSS_SELECTOR, f'tr[data-day="{FAILED_DAY}"] td[data-step="load-warehouse"]'
    ).text == "not run"

    postgres = browser.find_elements(
        By.CSS_SELECTOR, 'section[data-step="extract-postgres"] figure.table-chart')
    captions = [f.find_element(By.TAG_NAME, "figcaption").text for f in postgres]
    assert HOSTILE in captions and "orders" in captions  # the name as text, as the source has it
    for figure in postgres:  # both days extracted every table: a bar per day
        assert len(figure.find_elements(By.CSS_SELECTOR, "svg rect.bar")) == 2, figure.text
    csv = browser.find_element(By.CSS_SELECTOR, 'section[data-step="extract-csv"] figure')
    assert len(csv.find_elements(By.CSS_SELECTOR, "rect.bar")) == 1  # the failed day: a stub
    assert len(csv.find_elements(By.CSS_SELECTOR, "rect.gap")) == 1
    durations = browser.find_elements(By.CSS_SELECTOR, "svg.durations rect.bar")
    assert {(b.get_attribute("data-day"), b.get_attribute("data-step")) for b in durations} == {
        (GOOD_DAY, "extract-postgres"), (GOOD_DAY, "extract-csv"), (GOOD_DAY, "load-warehouse"),
        (FAILED_DAY, "extract-postgres"), (FAILED_DAY, "extract-csv")}

    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.accept()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    screenshot = tmp_path / "status-html.png"
    assert browser.save_screenshot(str(screenshot))
    if os.environ.get("NORTHWIND_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_a_day_on_s3_makes_its_page_on_a_local_path(databases, s3_server, tmp_path):
    env = with_server(databases.env, s3_server, s3_server.new_root())
    assert_ok(run_step("extract-csv", GOOD_DAY, env))
    page = tmp_path / "status.html"

    done = subprocess.run(["northwind", "status", "--html", str(page)], env={**os.environ, **env},
                          capture_output=True, text=True, check=False, timeout=120)

    assert done.returncode == 0, done.stderr
    found = Elements(page.read_text())
    assert [r["data-day"] for r in found.named("tr") if "data-day" in r] == [GOOD_DAY]
    (chart,) = found.named("figure")
    assert chart["data-table"] == "order_details" and env["NORTHWIND_DATA_ROOT"] in page.read_text()

"""The history through real `meltano run` steps: a day spliced between two loaded days."""

import datetime as dt

import pytest
from history_support import as_of_differences, history_digest
from northwind_elt.commits import committed_partitions
from northwind_elt.layout import DataTree
from northwind_elt.manifest import read_manifest
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES
from pipeline import assert_ok, output, run_day, run_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3 = "2024-01-02", "2024-01-03", "2024-01-04"


def load(day: str, env: dict[str, str]) -> None:
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, day, env))


def test_a_day_loaded_late_splices_into_the_history(databases):
    env = databases.env
    for result in run_day(DAY1, env).values():
        assert_ok(result)
    load(DAY3, env)
    with databases.source(autocommit=True) as src:  # what DAY2 saw, loaded after DAY3
        src.execute("DELETE FROM us_states WHERE state_id = 51")
        src.execute("UPDATE customers SET company_name = 'Renamed' WHERE customer_id = 'ALFKI'")
    load(DAY2, env)
    with databases.warehouse() as wh:
        before = history_digest(wh)
    rerun = run_step("load-warehouse", DAY2, env)  # a rerun changes nothing: no splice at all
    assert_ok(rerun)
    tree, day2 = DataTree(databases.data_root), dt.date.fromisoformat(DAY2)
    files = {p.stream: read_manifest(p).sha256 for step in (EXTRACT_POSTGRES, EXTRACT_CSV)
             for p in committed_partitions(tree, step, day2)[1]}
    said = output(rerun).partition("content it held already, not spliced: ")[2].splitlines()[0]

    with databases.warehouse() as wh:
        assert history_digest(wh) == before
        # Every table with rows; one without any has no version: inserted in bulk (nothing).
        assert said.split(", ") == [t for t in sorted(files) if wh.execute(
            f'SELECT EXISTS (SELECT FROM snapshots."{t}" WHERE snapshot_date = %s)', (day2,)
        ).fetchone()[0]]
        assert dict(wh.execute("SELECT table_name, file_sha256 FROM northwind.history_stamps "
                               "WHERE snapshot_date = %s", (day2,)).fetchall()) == files
        assert wh.execute(
            "SELECT company_name, _nw_valid_from::text, _nw_valid_to::text FROM history.customers "
            "WHERE customer_id = 'ALFKI' ORDER BY _nw_valid_from").fetchall() == [
            ("Alfreds Futterkiste", DAY1, DAY2), ("Renamed", DAY2, DAY3),
            ("Alfreds Futterkiste", DAY3, None)]
        assert wh.execute("SELECT _nw_valid_from::text, _nw_valid_to::text FROM history.us_states "
                          "WHERE state_id = 51 ORDER BY 1").fetchall() == [(DAY1, DAY2),
                                                                          (DAY3, None)]
        tables = [t for (t,) in wh.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'snapshots' AND c.relkind = 'p' ORDER BY 1")]
        assert len(tables) >= 14
        for table in tables:
            for day in (DAY1, DAY2, DAY3):
                assert as_of_differences(wh, table, day) == 0, (table, day)
            # Three days, one change at most: about one version per row, not three.
            versions, rows = wh.execute(
                f'SELECT (SELECT count(*) FROM history."{table}"), '
                f'(SELECT count(*) FROM snapshots."{table}" WHERE snapshot_date = %s)',
                (DAY3,)).fetchone()
            assert versions <= rows + 2, table


def test_history_off_keeps_none_and_a_bad_setting_is_one_line(databases):
    env = {**databases.env, "NORTHWIND_HISTORY": "off"}
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, DAY1, env))
    failed = run_step("load-warehouse", DAY1, {**env, "NORTHWIND_HISTORY": "maybe"})
    assert failed.returncode != 0 and "Traceback" not in output(failed)
    assert "NORTHWIND_HISTORY='maybe' must be on or off" in output(failed)
    assert_ok(run_step("load-warehouse", DAY1, env))
    with databases.warehouse() as wh:
        assert wh.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
        assert wh.execute("SELECT to_regnamespace('history')").fetchone() == (None,)

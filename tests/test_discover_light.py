"""``tap-pgcopy --discover`` answers without the Singer SDK, printing exactly the SDK tap's catalog.

Meltano runs the discovery before every extract (tap_pgcopy/discover_light.py). Each test runs the
script both ways (``NORTHWIND_DISCOVER=sdk`` forces the SDK tap's own ``--discover``) and compares
the bytes printed, on Northwind and on an odd source: quoted and mixed-case names in several
schemas, every kind of column (enums, domains, composites, ranges, arrays...), partitioned tables,
views, materialized views, a table without columns, one without a key, row-level security.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from northwind_elt import steps
from northwind_elt.layout import DataTree
from northwind_elt.run_date import parse_run_date
from pipeline import assert_ok, run_step
from settings import MELTANO_PROJECT
from tap_pgcopy.discover_light import DISCOVER_VARIABLE, light_catalog
from tap_pgcopy.discover_log import LOG_CONFIG_VARIABLE, STRUCTURED, meltano_log_config
from test_any_source import SCHEMAS as ODD_SCHEMAS
from test_any_source import SOURCE as ODD_SOURCE

DAY = "2024-01-02"
TAP = str(Path(sys.executable).parent / "tap-pgcopy")

#: Beside the source of test_any_source: what discovery lists, skips or refuses.
MORE_ODD = r'''
CREATE TABLE sales."MixedCase" ("NoKey" integer, "Ünï" text);
CREATE TABLE sales.nothing ();
CREATE VIEW sales."Big Orders" AS SELECT order_id, amount FROM sales.orders WHERE amount > 5;
CREATE MATERIALIZED VIEW "Odd ""Schema""".totals AS SELECT count(*) AS n FROM sales.orders;
CREATE TABLE sales.secret (id integer PRIMARY KEY, owner text);
ALTER TABLE sales.secret ENABLE ROW LEVEL SECURITY;
'''

#: Settings beside the connection's, each compared both ways on the odd source.
ODD_SETTINGS = {
    "every_schema": {"schemas": ODD_SCHEMAS},
    "views_too": {"schemas": ODD_SCHEMAS,
                  "relation_kinds": ["table", "view", "materialized_view", "foreign_table"]},
    "some_tables": {"schemas": ODD_SCHEMAS, "relation_kinds": ["view", "table"],
                    "tables": ["sales.Big Orders", 'Odd "Schema".Odd "Table".x', "everything"]},
    "row_security": {"schemas": ["sales"], "enable_row_security": True},
    "run_settings": {"schemas": ["sales", "public"], "connections": "2", "range_pages": 8,
                     "batch_config": {"encoding": {"format": "parquet"},
                                      "storage": {"root": "file:///nowhere"}},
                     "reextract": "true", "port": "5432"},
}

#: Settings the source cannot satisfy: both ways fail with the same one line.
BAD_SETTINGS = {
    "no_table_matched": ({"tables": ["nope"]}, "tables setting names tables not found"),
    "no_schema": ({"schemas": ["Sales"]}, "schema 'Sales' does not exist"),
    "bad_kind": ({"relation_kinds": ["tables"]}, "relation_kinds setting: unknown kind"),
}


def connection(env: dict[str, str]) -> dict:
    """The tap's connection settings for the test's source database."""
    return {"host": env["SOURCE_PGHOST"], "port": int(env["SOURCE_PGPORT"]),
            "dbname": env["SOURCE_PGDATABASE"], "user": env["SOURCE_PGUSER"], "password": ""}


def discover(config: dict, folder: Path, mode: str, *extra: str) -> subprocess.CompletedProcess:
    """``tap-pgcopy --config <config> --discover`` with ``NORTHWIND_DISCOVER=mode``."""
    path = folder / f"config-{mode}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, DISCOVER_VARIABLE: mode}
    return subprocess.run([TAP, "--config", str(path), "--discover", *extra], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def both_ways(config: dict, folder: Path, light_answers: bool = True
              ) -> tuple[subprocess.CompletedProcess, ...]:
    """Discover with the light path and with the SDK; assert the same exit code and bytes.

    A catalog printed must come from the light path itself (unless not ``light_answers``), not
    from its fallback to the SDK.
    """
    light, sdk = discover(config, folder, "light"), discover(config, folder, "sdk")
    assert light.returncode == sdk.returncode, (light.stderr[-2000:], sdk.stderr[-2000:])
    assert light.stdout == sdk.stdout
    if light.returncode == 0:
        answer = light_catalog(["--config", str(folder / "config-light.json"), "--discover"])
        assert answer == (light.stdout[:-1] if light_answers else None)
    return light, sdk


def error_line(result: subprocess.CompletedProcess) -> str:
    return next(line for line in result.stderr.splitlines() if "tap-pgcopy: error:" in line)


@pytest.fixture
def odd_source(databases):
    with databases.source(autocommit=True) as conn:
        conn.execute(ODD_SOURCE)
        conn.execute(MORE_ODD)
    return databases


def test_the_northwind_catalog_is_the_sdks_without_importing_the_sdk(databases, tmp_path):
    config = connection(databases.env)
    light, _ = both_ways(config, tmp_path)

    streams = json.loads(light.stdout)["streams"]
    assert [s["stream"] for s in streams][:3] == ["categories", "customer_customer_demo",
                                                 "customer_demographics"]
    # The script's light path imports neither the SDK nor the data path's driver.
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    probe = ("import sys; from northwind_elt.entry import tap_pgcopy; tap_pgcopy(); "
             "print(sorted(m for m in ('singer_sdk', 'adbc_driver_postgresql') "
             "if m in sys.modules), file=sys.stderr)")
    ran = subprocess.run([sys.executable, "-c", probe, "--config", str(path), "--discover"],
                         text=True, capture_output=True, timeout=120, check=True)
    assert ran.stdout == light.stdout
    assert ran.stderr.splitlines()[-1] == "[]"


@pytest.mark.parametrize("settings", ODD_SETTINGS.values(), ids=ODD_SETTINGS.keys())
def test_an_odd_source_gets_the_sdks_catalog(odd_source, tmp_path, settings):
    light, _ = both_ways(connection(odd_source.env) | settings, tmp_path)

    assert json.loads(light.stdout)["streams"], "the comparison needs streams"
    assert "not extracted: table sales.nothing" in light.stderr or "tables" in settings


def test_the_catalog_lists_what_the_settings_ask_for(odd_source, tmp_path):
    light, _ = both_ways(connection(odd_source.env) | ODD_SETTINGS["some_tables"], tmp_path)

    streams = {s["stream"]: s for s in json.loads(light.stdout)["streams"]}
    assert sorted(streams) == ['Odd "Schema".Odd "Table".x', "everything", "sales.Big Orders"]
    odd = streams['Odd "Schema".Odd "Table".x']
    assert odd["key_properties"] == ["Key"]
    assert odd["schema"]["properties"]["Val;ue"]["x-sql-datatype"] == "mood[]"
    assert odd["metadata"][-1]["metadata"]["table-key-properties"] == ["Key"]


@pytest.mark.parametrize(("settings", "fragment"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_setting_the_source_cannot_satisfy_fails_alike(odd_source, tmp_path, settings, fragment):
    light, sdk = both_ways(connection(odd_source.env) | settings, tmp_path)

    assert light.returncode == 1 and light.stdout == ""
    assert fragment in error_line(light)
    assert error_line(light) == error_line(sdk)
    assert "Traceback" not in light.stderr


def test_a_kept_day_gets_the_sdks_empty_catalog(databases, tmp_path):
    assert_ok(run_step("extract-postgres", DAY, databases.env))
    config = connection(databases.env) | {"step": "extract-postgres", "run_date": DAY,
                                          "data_root": databases.env["NORTHWIND_DATA_ROOT"]}

    light, _ = both_ways(config, tmp_path)

    assert light.stdout == '{"streams": []}\n'
    assert "kept the extract of" in light.stderr
    again, _ = both_ways(config | {"reextract": "1"}, tmp_path)
    assert len(json.loads(again.stdout)["streams"]) == 13
    marker = steps.read_marker(DataTree.from_setting(config["data_root"]), "extract-postgres",
                               parse_run_date(DAY))
    assert marker.status == steps.SUCCESS


@pytest.mark.parametrize("formatter", [STRUCTURED, {"format": "%(message)s"}],
                         ids=["structured", "plain"])
def test_under_meltanos_logging_config_the_lines_are_the_sdks(databases, tmp_path, monkeypatch,
                                                              formatter):
    log_config = tmp_path / "tap.singer_sdk_logging.json"
    log_config.write_text(json.dumps(meltano_log_config("INFO", formatter)), encoding="utf-8")
    monkeypatch.setenv(LOG_CONFIG_VARIABLE, str(log_config))

    light, sdk = both_ways(connection(databases.env), tmp_path)

    def discovered(result):
        line = next(line for line in result.stderr.splitlines() if "discovered 13 tables" in line)
        return json.loads(line) if formatter == STRUCTURED else line

    if formatter == STRUCTURED:  # Meltano parses these back: every field, as the SDK writes them
        ours, theirs = discovered(light), discovered(sdk)
        assert ours.keys() == theirs.keys()
        for field in ("level", "logger_name", "app_name", "message", "extra", "stream_name"):
            assert ours[field] == theirs[field], field
    else:
        assert discovered(light) == discovered(sdk)


def test_a_logging_config_meltano_did_not_write_goes_to_the_sdk(databases, tmp_path, monkeypatch):
    log_config = tmp_path / "logging.yml"
    log_config.write_text("version: 1\nroot: {level: DEBUG}\n", encoding="utf-8")
    monkeypatch.setenv(LOG_CONFIG_VARIABLE, str(log_config))

    both_ways(connection(databases.env), tmp_path, light_answers=False)


@pytest.mark.parametrize("arguments", [
    ["--config", "ENV", "--discover"],
    ["--about"],
    ["--discover"],
    ["--config", "{path}", "--discover", "--catalog", "{path}"],
    ["--config", "{path}", "--discover", "--discover"],
    ["--config", "{missing}", "--discover"],
    ["--config", "{not_json}", "--discover"],
    ["--config", "{a_list}", "--discover"],
])
def test_what_the_light_path_does_not_handle_goes_to_the_sdk(databases, tmp_path, arguments):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(connection(databases.env)), encoding="utf-8")
    (tmp_path / "not.json").write_text("{host: x", encoding="utf-8")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    names = {"path": str(path), "missing": str(tmp_path / "missing.json"),
             "not_json": str(tmp_path / "not.json"), "a_list": str(tmp_path / "list.json")}

    assert light_catalog([a.format(**names) for a in arguments]) is None


def test_a_setting_that_is_not_the_taps_own_goes_to_the_sdk(databases, tmp_path):
    config = connection(databases.env) | {"stream_maps": {"orders": None}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")

    assert light_catalog(["--config", str(path), "--discover"]) is None
    both_ways(config, tmp_path, light_answers=False)


def test_an_unknown_discover_mode_is_one_line(databases, tmp_path):
    result = discover(connection(databases.env), tmp_path, "fast")

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("tap-pgcopy: error: NORTHWIND_DISCOVER='fast': expected one "
                                     "of light, sdk")


@pytest.mark.slow
def test_meltano_select_lists_and_picks_through_the_light_discovery(databases, meltano_project):
    env = {**os.environ, **databases.env}
    env.pop("RUN_DATE", None)
    listed = subprocess.run(["meltano", "select", "tap-pgcopy", "--list", "--all"],
                            cwd=MELTANO_PROJECT, env=env, text=True, capture_output=True,
                            timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr[-3000:]
    status = dict(reversed(line.strip(" \t[").split("] ")) for line in listed.stdout.splitlines()
                  if line.startswith("\t["))
    assert status["orders.ship_address"].strip() == "selected"
    assert status["orders.order_id"].strip() == "automatic"

    picked = {**databases.env, "TAP_PGCOPY__SELECT": json.dumps(["orders.*", "!orders.freight"])}
    result = run_step("extract-postgres", DAY, picked)
    assert_ok(result)
    # The SDK tap started once, for the run: Meltano's discovery took the light path.
    assert result.stderr.count("tap-pgcopy   Skipping parse of env var settings") == 1
    marker = steps.read_marker(DataTree.from_setting(databases.env["NORTHWIND_DATA_ROOT"]),
                               "extract-postgres", parse_run_date(DAY))
    assert sorted(marker.rows) == ["orders"]


def test_what_only_connects_imports_no_sdk():
    """pgconn builds the SDK's connection properties on first use (the report connects too)."""
    probe = ("import sys, northwind_elt.cli, northwind_elt.pgconn as pgconn; "
             "print('singer_sdk' in sys.modules, len(pgconn.CONNECTION_PROPERTIES), "
             "'singer_sdk' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", probe], text=True, capture_output=True,
                         timeout=120, check=True)

    assert ran.stdout.split() == ["False", "5", "True"]

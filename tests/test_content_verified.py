"""Content verified end to end through `meltano run`: digests, provenance, `northwind verify`."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from northwind_elt import cli, warehouse
from northwind_elt.arrow_io import sha256_of
from pipeline import assert_ok, committed, output, run_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY = "2024-01-02"
#: Digests for both extracts (the CSV's is off by default).
ALL = {"NORTHWIND_CONTENT_DIGEST": "all"}


def _extract(env) -> str:
    """Both extracts of DAY; their output."""
    logs = ""
    for step in ("extract-postgres", "extract-csv"):
        result = run_step(step, DAY, env)
        assert_ok(result)
        logs += output(result)
    return logs


def _manifest_path(root, table: str):
    """The manifest of ``table`` in the day's committed attempt."""
    if table == "order_details":
        return committed(root, "csv", DAY, f"{table}.manifest.json")
    return committed(root, "postgres", table, DAY, f"{table}.manifest.json")


def _verify(monkeypatch, capsys, env, *extra) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["--data-root", env["NORTHWIND_DATA_ROOT"], "verify", "--date", DAY, *extra])
    return code, capsys.readouterr().out


def test_manifests_carry_digest_and_source_snapshot(databases):
    logs = _extract(databases.env | ALL)
    assert logs.count("the extract for 2024-01-02 holds the source's state at") == 2
    orders = json.loads(_manifest_path(databases.data_root, "orders").read_text())
    assert orders["content_digest"]["rows"] == orders["rows"] == 830
    provenance = orders["provenance"]
    assert provenance["server_version"] and provenance["wal_lsn"].count("/") == 1
    assert ":" in provenance["snapshot"] and provenance["snapshot_taken_at"]
    assert (provenance["schema"], provenance["table"]) == ("public", "orders")
    # 2024-01-02 is long past: the manifest says it holds the source's state when it ran.
    assert "holds the source's state at" in provenance["past_day"]
    details = json.loads(_manifest_path(databases.data_root, "order_details").read_text())
    assert details["content_digest"]["rows"] == details["rows"]
    assert details["provenance"]["file"].endswith("order_details.csv")


def test_consistently_tampered_partition_fails_the_load_naming_the_table(databases):
    """Changed content with a rewritten manifest (size, SHA-256, rows) still fails the load."""
    _extract(databases.env)
    data = _manifest_path(databases.data_root, "orders").with_name("orders.parquet")
    table = pq.read_table(data)
    freight = table.column("freight")
    changed = pa.chunked_array([pc.add(freight.combine_chunks()[:1], pa.scalar(1, freight.type)),
                                freight.combine_chunks()[1:]]).cast(freight.type)
    tampered = table.set_column(table.schema.get_field_index("freight"),
                                table.schema.field("freight"), changed)
    pq.write_table(tampered, data)
    manifest_path = _manifest_path(databases.data_root, "orders")
    manifest = json.loads(manifest_path.read_text())
    manifest |= {"bytes": data.stat().st_size, "sha256": sha256_of(data),
                 "rows": tampered.num_rows}
    manifest_path.write_text(json.dumps(manifest))

    result = run_step("load-warehouse", DAY, databases.env)
    assert result.returncode != 0
    assert "content differs from the extract's manifest" in output(result)
    assert "orders (loaded 830 rows" in output(result)
    with databases.warehouse() as wh, wh.cursor() as cur:
        assert warehouse.loaded_days(cur) == {}


def test_verify_rechecks_a_loaded_day_and_reports_source_drift(databases, monkeypatch, capsys):
    env = databases.env | ALL
    _extract(env)
    loaded = run_step("load-warehouse", DAY, env)
    assert_ok(loaded)
    assert "checked by row count only" not in output(loaded)

    code, out = _verify(monkeypatch, capsys, env)
    assert code == 0, out
    assert "the warehouse holds exactly what was extracted" in out

    with databases.source(autocommit=True) as src:
        src.execute("UPDATE customers SET company_name = company_name || ' Ltd' "
                    "WHERE customer_id = 'ALFKI'")
    code, out = _verify(monkeypatch, capsys, env, "--source")
    assert code == 0, out
    assert "source drift in customers" in out
    assert [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["drift"]] == \
        ["customers"]

    with databases.warehouse(autocommit=True) as wh:
        wh.execute("UPDATE snapshots.shippers SET phone = '(000) 000-0000' WHERE shipper_id = 1")
    code, out = _verify(monkeypatch, capsys, env)
    assert code == 1
    assert "MISMATCH in shippers" in out


def test_manifests_without_digest_still_load_and_say_so(databases):
    env = databases.env | ALL
    _extract(env)
    for manifest_path in databases.data_root.glob("**/*.manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        del manifest["content_digest"], manifest["provenance"]  # as written before digests
        manifest_path.write_text(json.dumps(manifest))
    result = run_step("load-warehouse", DAY, env)
    assert_ok(result)
    assert output(result).count("checked by row count only") == 1


def test_by_default_the_postgres_extract_has_digests_and_the_csv_not(databases):
    _extract(databases.env)
    root = databases.data_root
    assert json.loads(_manifest_path(root, "orders").read_text())["content_digest"]["rows"] == 830
    assert json.loads(_manifest_path(root, "order_details").read_text())["content_digest"] is None
    result = run_step("load-warehouse", DAY, databases.env)
    assert_ok(result)
    assert "content digests of 13 tables match their manifests" in output(result)
    assert "no content digest in the manifests of order_details (" in output(result)


def test_digests_off_skips_them(databases):
    env = {**databases.env, "NORTHWIND_CONTENT_DIGEST": "off"}
    _extract(env)
    assert json.loads(_manifest_path(databases.data_root, "orders").read_text())[
        "content_digest"] is None
    assert_ok(run_step("load-warehouse", DAY, env))

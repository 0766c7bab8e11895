"""The warehouse keeps one partition per loaded day: reruns swap it, failures keep it, views read
one partition, retention drops old days (warehouse and data tree), the report streams from COPY."""

import json
import subprocess

import pytest
from northwind_elt.report import report_query
from pipeline import assert_ok, committed, output, run_step
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]

DAY1, DAY2, DAY3, DAY4 = "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"


def extract_and_load(day: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # These days are extracted again after the source changed: re-extraction is asked for.
    for step in ("extract-postgres", "extract-csv"):
        assert_ok(run_step(step, day, {**env, "NORTHWIND_REEXTRACT": "1"}))
    return run_step("load-warehouse", day, env)


def partition_digests(wh) -> dict[str, str]:
    """Content digest and row count of every partition of snapshots, by partition name."""
    names = [name for (name,) in wh.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'snapshot_days' AND c.relispartition
             AND c.relkind = 'r' ORDER BY 1""").fetchall()]
    return {name: wh.execute(sql.SQL(
        "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) || ':' || count(*) "
        "FROM snapshot_days.{} AS t").format(sql.Identifier(name))).fetchone()[0] for name in names}


def relation_ids(wh) -> dict[str, int]:
    return dict(wh.execute("""SELECT c.relname, c.oid::int FROM pg_class c
                              JOIN pg_namespace n ON n.oid = c.relnamespace
                              WHERE n.nspname = 'snapshot_days' AND c.relispartition
                                AND c.relkind = 'r'""").fetchall())


def views(wh) -> dict[str, object]:
    rows = wh.execute("SELECT table_name FROM information_schema.views "
                      "WHERE table_schema = 'public' ORDER BY 1").fetchall()
    return {name: wh.execute(sql.SQL(
        "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM public.{} AS t"
    ).format(sql.Identifier(name))).fetchone()[0] for (name,) in rows}


def test_partitions_swap_rerun_failure_pruning_retention_and_report(databases):
    env, root = databases.env, databases.data_root
    with databases.source(autocommit=True) as src:
        # Characters COPY or JSON would escape, including the report's COPY quote byte (0x01).
        src.execute("UPDATE orders SET ship_name = E'back\\\\slash \"q\" \\x01 \\u00e9' "
                    "WHERE order_id = 10248")
    assert_ok(extract_and_load(DAY1, env))
    with databases.source(autocommit=True) as src:
        src.execute("DELETE FROM us_states WHERE state_id = 51")
    assert_ok(extract_and_load(DAY2, env))

    with databases.warehouse() as wh:
        assert wh.execute("SELECT relkind FROM pg_class WHERE oid = 'snapshots.orders'::regclass"
                          ).fetchone() == ("p",)
        assert sorted(n for n in relation_ids(wh) if n.startswith("us_states@")) == [
            f"us_states@{DAY1}", f"us_states@{DAY2}"]
        # The current view reads the newest day's partition only (pruned when planned).
        plan = "\n".join(r[0] for r in wh.execute("EXPLAIN SELECT * FROM orders").fetchall())
        assert f"orders@{DAY2}" in plan and f"orders@{DAY1}" not in plan, plan
        assert "Append" not in plan and plan.startswith(f'Seq Scan on "orders@{DAY2}"'), plan
        # Frozen and analyzed by the load, never changed after: autovacuum leaves them alone.
        options = wh.execute("""SELECT DISTINCT c.reloptions, t.reloptions FROM pg_class c
                                JOIN pg_namespace n ON n.oid = c.relnamespace
                                LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
                                WHERE n.nspname = 'snapshot_days' AND c.relispartition
                                  AND c.relkind = 'r' ORDER BY 2""").fetchall()
        off = ["autovacuum_enabled=false"]
        assert options == [(off, off), (off, None)], options  # None: a table without TOAST
        before, ids, current = partition_digests(wh), relation_ids(wh), views(wh)
        assert current["us_states"] != "" and wh.execute(
            "SELECT count(*) FROM us_states").fetchone() == (50,)

    # A rerun of DAY2 replaces exactly DAY2's partitions by fresh tables with the same rows.
    assert_ok(run_step("load-warehouse", DAY2, env))
    with databases.warehouse() as wh:
        assert partition_digests(wh) == before
        after = relation_ids(wh)
        assert all(after[n] != ids[n] for n in ids if n.endswith(DAY2))
        assert all(after[n] == ids[n] for n in ids if n.endswith(DAY1))
    # Loading the older day again leaves the views as they were.
    assert_ok(run_step("load-warehouse", DAY1, env))
    with databases.warehouse() as wh:
        assert views(wh) == current and partition_digests(wh) == before
        after = relation_ids(wh)

    # A failed load (a narrowed type, found after other tables were copied) keeps every partition.
    with databases.source(autocommit=True) as src:
        src.execute("ALTER TABLE us_states ALTER COLUMN state_abbr TYPE varchar(1) "
                    "USING left(state_abbr, 1)")
    failed = extract_and_load(DAY2, {**env, "NORTHWIND_REEXTRACT": "1"})  # DAY2 read again
    assert failed.returncode != 0
    assert "table us_states, column state_abbr" in output(failed)
    marker = json.loads((root / "_status" / DAY2 / "load-warehouse.json").read_text())
    assert ("table us_states, column state_abbr: the warehouse has type character varying(2), "
            "the partition has character varying(1)") in marker["error"]
    with databases.warehouse() as wh:
        assert partition_digests(wh) == before and relation_ids(wh) == after
        assert views(wh) == current

    # The report: both files from COPY; the JSON equals row_to_json's objects as an array.
    with databases.source(autocommit=True) as src:
        src.execute("ALTER TABLE us_states ALTER COLUMN state_abbr TYPE varchar(2)")
    assert_ok(run_step("publish-report", DAY1, env))
    with databases.warehouse() as wh:
        import datetime as dt

        query = report_query(wh.cursor(), dt.date.fromisoformat(DAY1))
        lines = [r[0] for r in wh.execute(
            sql.SQL("SELECT row_to_json(r)::text FROM ({}) AS r").format(query)).fetchall()]
    written = committed(root, "reports", DAY1, "orders_with_details.json").read_text(encoding="utf-8")
    assert written == "[\n" + ",\n".join(lines) + "\n]\n"
    document = json.loads(written)
    assert len(document) == 2155
    assert document[0]["ship_name"] == 'back\\slash "q" \x01 é'

    # Retention: with NORTHWIND_KEEP_DAYS=2 the load of DAY3 drops DAY1's partitions only;
    # DAY1 stays loaded (in the log) as the history keeps it.
    assert_ok(extract_and_load(DAY3, {**env, "NORTHWIND_KEEP_DAYS": "2"}))
    with databases.warehouse() as wh:
        days = {n.rsplit("@", 1)[1] for n in relation_ids(wh)}
        assert days == {DAY2, DAY3}
        assert [d.isoformat() for (d,) in wh.execute(
            "SELECT snapshot_date FROM northwind.loads ORDER BY 1").fetchall()] == [DAY1, DAY2,
                                                                                   DAY3]
        assert wh.execute("SELECT count(*) FROM us_states").fetchone() == (50,)
    # Prune keeps DAY2 (its last load failed above), DAY4 (extracted, never loaded) and DAY3.
    assert_ok(run_step("extract-csv", DAY4, env))
    pruned = subprocess.run(["northwind", "--data-root", str(root), "prune", "--keep-days", "1"],
                            capture_output=True, text=True, check=False)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {DAY1} from" in pruned.stdout
    assert not list(root.glob(f"**/{DAY1}"))
    assert committed(root, "postgres", "orders", DAY2, "orders.parquet").exists()
    assert committed(root, "csv", DAY3, "order_details.parquet").exists()
    assert committed(root, "postgres", "orders", DAY3, "orders.parquet").exists()
    assert committed(root, "csv", DAY4, "order_details.parquet").exists()
    # 0 keeps no full day in the warehouse; prune still keeps the newest loaded day's files.
    none = subprocess.run(["northwind", "--data-root", str(root), "prune", "--keep-days", "0"],
                          capture_output=True, text=True, check=False)
    assert none.returncode == 0, none.stderr
    assert "removed no day" in none.stdout
    assert committed(root, "postgres", "orders", DAY3, "orders.parquet").exists()
    bad = subprocess.run(["northwind", "--data-root", str(root), "prune", "--keep-days", "-1"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("northwind prune: error: NORTHWIND_KEEP_DAYS='-1' must be a "
                                  "whole number of days >= 0")

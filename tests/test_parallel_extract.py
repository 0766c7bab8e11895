"""Parallel extract (issue 26, point 1): N connections in one snapshot, large tables in page ranges.

The tap runs in this process against the real source for the equality checks (parallel = single
stream, row for row and digest for digest); the consistency check runs the extract step through
``meltano run`` while another connection keeps adding and removing orders with their details.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from northwind_elt.errors import InputError, SettingError
from northwind_elt.protocol import parse_completion
from pipeline import Databases, assert_ok, committed, output, run_step
from tap_pgcopy.ranges import PageRange, cpu_quota, split
from tap_pgcopy.tap import TapPgCopy

DAY = "2024-01-02"

#: order_details in the source (the Northwind dump keeps it in a CSV): one row per order and
#: product, a filler so that a range holds many pages; plus a numeric column that holds a NaN in
#: its last rows, so a late range (and only it) sends the table back to be read with it as text.
ORDER_DETAILS = """
CREATE TABLE order_details (
    order_id smallint NOT NULL REFERENCES orders, product_id smallint NOT NULL,
    quantity smallint NOT NULL, note text, PRIMARY KEY (order_id, product_id));
INSERT INTO orders (order_id, customer_id, employee_id, order_date)
SELECT id, 'ALFKI', 1, DATE '2024-01-01' FROM generate_series(12000, 13999) AS id;
INSERT INTO order_details
SELECT o.order_id, p, p % 7 + 1, repeat(md5(o.order_id::text || p), 3)
FROM orders o CROSS JOIN generate_series(1, 20) AS p;
CREATE TABLE measures (id integer PRIMARY KEY, value numeric(12,2), at timestamptz);
INSERT INTO measures SELECT i, i / 100.0, TIMESTAMPTZ '2024-01-01' + i * interval '1 min'
FROM generate_series(1, 30000) AS i;
UPDATE measures SET value = 'NaN' WHERE id = 29990;
ANALYZE;
"""


def _source_config(env: dict[str, str], root: Path, **settings) -> dict:
    return {"host": env["SOURCE_PGHOST"], "port": int(env["SOURCE_PGPORT"]),
            "dbname": env["SOURCE_PGDATABASE"], "user": env["SOURCE_PGUSER"],
            "batch_config": {"encoding": {"format": "parquet"},
                             "storage": {"root": root.as_uri()}}, **settings}


def _extract(env: dict[str, str], root: Path, **settings) -> tuple[dict, dict]:
    """Run the tap in this process: each stream's schema and rows (sorted), its completion."""
    root.mkdir(parents=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        TapPgCopy(config=_source_config(env, root, **settings)).sync_all()
    messages = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    states = [m["value"] for m in messages if m.get("type") == "STATE"]
    completion = next(c for c in map(parse_completion, states) if c is not None)
    tables = {}
    for path in root.rglob("*.parquet"):
        table = pq.read_table(path)
        tables[path.stem] = (table.schema, sorted(map(repr, table.to_pylist())))
    return tables, {"rows": completion.rows, "digests": completion.digests}


def test_split_cuts_pages_into_ranges_the_last_one_open_ended():
    assert split(0, 4, 1) == [PageRange()]
    assert split(7, 1, 1) == [PageRange()]
    ranges = split(10, 3, 2)
    assert [(r.start, r.end) for r in ranges] == [(0, 3), (3, 6), (6, None)]
    assert ranges[-1].condition().as_string() == "ctid >= '(6,0)'::tid"
    assert PageRange().condition() is None


def test_cpu_quota_reads_the_containers_limit(tmp_path):
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")
    assert cpu_quota(limit) == 2
    limit.write_text("max 100000\n")
    assert cpu_quota(limit) is None
    assert cpu_quota(tmp_path / "missing") is None


@pytest.mark.slow
def test_parallel_ranges_extract_what_one_stream_does(databases: Databases, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    with databases.source(autocommit=True) as src:
        src.execute(ORDER_DETAILS)
    one, one_done = _extract(databases.env, tmp_path / "one", connections=1)
    assert "read in" not in caplog.text and "on 1 connections" in caplog.text
    caplog.clear()
    many, many_done = _extract(databases.env, tmp_path / "many", connections=4, range_pages=1)
    log = caplog.text
    # The big tables were cut into ranges; measures holds a NaN in its last range only.
    assert "order_details: " in log and "read in 4 ranges" in log
    assert "measures: columns value hold values without a native Parquet form" in log
    assert "on 4 connections" in log
    assert set(many) == set(one) and len(one) == 15
    for stream, (schema, rows) in one.items():
        assert many[stream][0] == schema, stream
        assert many[stream][1] == rows, stream
    assert many_done == one_done
    assert one_done["rows"]["order_details"] == 2830 * 20
    assert set(one_done["digests"]) == set(one)


@pytest.mark.parametrize("value", ["0", "many", "-2", "1.5"])
def test_a_bad_connections_setting_is_one_line_naming_it(databases: Databases, tmp_path: Path,
                                                         value: str):
    tap = TapPgCopy(config=_source_config(databases.env, tmp_path, connections=value))
    with pytest.raises(SettingError) as raised, contextlib.redirect_stdout(io.StringIO()):
        tap.sync_all()
    message = str(raised.value)
    assert "\n" not in message and message.startswith("connections (TAP_PGCOPY_CONNECTIONS")
    assert repr(value) in message
    assert not list(tmp_path.rglob("*.parquet"))


class Writer(threading.Thread):
    """Adds an order with its details and removes another with its details, one transaction each,
    until stopped; logs each transaction's id with what it added and removed."""

    def __init__(self, databases: Databases, removable: list[int]):
        super().__init__(name="source-writer", daemon=True)
        self.databases, self.removable = databases, removable
        self.stop = threading.Event()
        self.log: list[tuple[str, int, int | None]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.databases.source(autocommit=True) as conn:
                next_id = 20000
                while not self.stop.is_set() and next_id < 32000:
                    removed = self.removable.pop() if self.removable else None
                    with conn.transaction():
                        conn.execute("INSERT INTO orders (order_id, customer_id, employee_id) "
                                     "VALUES (%s, 'ALFKI', 1)", (next_id,))
                        conn.execute("INSERT INTO order_details SELECT %s, p, 1, 'new' "
                                     "FROM generate_series(1, 3) AS p", (next_id,))
                        if removed is not None:
                            conn.execute("DELETE FROM order_details WHERE order_id = %s",
                                         (removed,))
                            conn.execute("DELETE FROM orders WHERE order_id = %s", (removed,))
                        (xid,) = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
                    self.log.append((xid, next_id, removed))
                    next_id += 1
        except BaseException as error:  # noqa: BLE001 (raised by the test)
            self.error = error


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_a_parallel_extract_of_a_source_being_written_is_its_snapshot(databases: Databases):
    with databases.source(autocommit=True) as src:
        src.execute(ORDER_DETAILS)
        before_orders = {r[0] for r in src.execute("SELECT order_id FROM orders")}
        before_details = set(src.execute("SELECT order_id, product_id FROM order_details"))
    writer = Writer(databases, sorted(i for i in before_orders if i >= 12000))
    writer.start()
    try:
        result = run_step("extract-postgres", DAY, {
            **databases.env, "TAP_PGCOPY_CONNECTIONS": "3", "TAP_PGCOPY_RANGE_PAGES": "4"})
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None, writer.error
    assert_ok(result)
    assert "order_details: " in output(result) and "read in 3 ranges" in output(result)
    root = databases.data_root
    manifest = json.loads(committed(root, "postgres", "orders", DAY,
                                    "orders.manifest.json").read_text())
    snapshot = manifest["provenance"]["snapshot"]
    with databases.source() as src:
        visible = [v for (v,) in src.execute(
            "SELECT pg_visible_in_snapshot(x::xid8, %s::pg_snapshot) FROM unnest(%s::text[]) x",
            (snapshot, [xid for xid, _, _ in writer.log]))]
    seen = [entry for entry, shown in zip(writer.log, visible, strict=True) if shown]
    # The writer committed both before the snapshot and after it (while the ranges were read).
    assert seen and len(seen) < len(writer.log)
    added = {order for _, order, _ in seen}
    removed = {order for _, _, order in seen if order is not None}
    orders = set(pq.read_table(committed(root, "postgres", "orders", DAY, "orders.parquet"),
                               columns=["order_id"]).column("order_id").to_pylist())
    details = pq.read_table(committed(root, "postgres", "order_details", DAY,
                                      "order_details.parquet"), columns=["order_id", "product_id"])
    pairs = list(zip(*(details.column(c).to_pylist() for c in ("order_id", "product_id")),
                     strict=True))
    assert len(pairs) == len(set(pairs))  # no row read twice (by two ranges)
    assert {order for order, _ in pairs} <= orders  # no orphan
    assert orders == (before_orders | added) - removed
    assert set(pairs) == ({p for p in before_details if p[0] not in removed}
                          | {(order, p) for order in added - removed for p in (1, 2, 3)})


def test_a_session_waiting_to_lock_a_table_fails_the_extract_in_one_line(databases: Databases,
                                                                        tmp_path: Path):
    """Without NOWAIT, a range would queue behind the ALTER, which waits for the connection that
    read orders first (a range or its digest: it holds the table until the extract ends), which
    waits for that range: a hang."""
    tap = TapPgCopy(config=_source_config(databases.env, tmp_path, connections=2))
    tap.snapshot[0].execute("SELECT count(*) FROM orders")  # as the digest's scan: orders is held
    alter = threading.Thread(target=_alter_orders, args=(databases,), daemon=True)
    alter.start()
    with databases.source(autocommit=True) as watch:
        while not watch.execute("SELECT count(*) FROM pg_locks l JOIN pg_class c ON "
                                "c.oid = l.relation WHERE c.relname = 'orders' AND NOT l.granted"
                                ).fetchone()[0]:
            time.sleep(0.05)
    with pytest.raises(InputError) as raised, contextlib.redirect_stdout(io.StringIO()):
        tap.sync_all()  # ends the snapshot's transaction: the ALTER goes through
    alter.join(timeout=30)
    assert str(raised.value).startswith("table public.orders: another session is waiting for an "
                                        "exclusive lock on it")
    assert not alter.is_alive()


def _alter_orders(databases: Databases) -> None:
    with databases.source(autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ADD COLUMN note text")

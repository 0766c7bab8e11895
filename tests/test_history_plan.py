"""The splice's plans, as the server ran them (auto_explain): what keeps history's cost low."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from history_support import as_of_differences, fresh_warehouses, load_day

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 3)
ROWS = 3000


@pytest.fixture
def warehouses(pg_socket):
    """A factory of fresh empty warehouses."""
    yield from fresh_warehouses(pg_socket)


def items(changed: int) -> list[tuple]:
    """``ROWS`` rows of ``items``, the first ``changed`` of them with another ``qty``."""
    return [(i, f"item {i}", i % 7 + (10 if i < changed else 0), "1.50") for i in range(ROWS)]


def plans(wh: psycopg.Connection, day: dt.date, rows: list[tuple]) -> dict[str, str]:
    """Load ``rows`` as ``day``; return the plan of each statement on the history, by its start."""
    notices: list[str] = []
    wh.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
    wh.execute("LOAD 'auto_explain'")
    wh.execute("SET auto_explain.log_min_duration = 0")
    wh.execute("SET auto_explain.log_level = notice")
    load_day(wh, day, {"items": rows})
    wh.execute("RESET auto_explain.log_min_duration")
    wh.commit()
    found = {}
    for notice in notices:
        query = notice.partition("Query Text: ")[2]
        for start in ('CREATE UNLOGGED TABLE "northwind"."history_changed"',
                      'UPDATE "history"."items"', 'DELETE FROM "history"."items"'):
            if query.startswith(start):
                found[start.split('"')[1]] = notice
    return found


def test_a_day_with_few_changes_merges_key_indexes_and_probes_the_history(warehouses):
    wh = warehouses()
    load_day(wh, D1, {"items": items(0)})
    found = plans(wh, D2, items(10))
    detection = found["northwind"]
    assert "Merge Full Join" in detection, detection  # no hash of the day, no sort
    assert "Hash" not in detection and "Sort" not in detection, detection
    assert "Index Scan" in detection and "Seq Scan" not in detection, detection
    close = found["history"]  # the UPDATE closing the changed versions: 10 index probes
    assert "Nested Loop" in close and "on items_pkey" in close, close
    assert "Seq Scan on items" not in close, close
    assert as_of_differences(wh, "items", D2) == 0
    # A day new to the history deletes nothing; its rerun with other data may, and stays exact.
    assert 'DELETE FROM "history"' not in str(found)
    found = plans(wh, D2, items(20))
    assert as_of_differences(wh, "items", D2) == 0 and as_of_differences(wh, "items", D1) == 0

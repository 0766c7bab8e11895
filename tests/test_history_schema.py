"""Schema changes keep the history queryable and start versions only where values change."""

from __future__ import annotations

import datetime as dt

import pytest
from history_support import TABLES, as_of_differences, fresh_warehouses, load_day
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column

D = [dt.date(2024, 1, n) for n in range(1, 7)]
BASE = TABLES["items"][0]
ROWS = [(1, "a", 1, "1.00"), (2, "b", None, "2.00"), (3, None, 3, None)]


def versions(wh) -> list[tuple]:
    return wh.execute("SELECT id, _nw_valid_from, _nw_valid_to FROM history.items ORDER BY 1, 2").fetchall()


def test_added_widened_and_dropped_columns(warehouses):
    wh = warehouses()
    load_day(wh, D[1], {"items": ROWS})
    first = versions(wh)
    # An added column, NULL everywhere, and a widened type: no new version.
    color = Column("color", "text")
    wide = [BASE[0], BASE[1], Column("qty", "bigint", "int8"), BASE[3], color]
    load_day(wh, D[2], {"items": [(*r, None) for r in ROWS]}, columns={"items": wide})
    assert versions(wh) == [(i, D[1], None) for i, _, _ in first]
    assert wh.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid "
                      "= 'history.items'::regclass AND attname = 'qty'").fetchone() == ("bigint",)
    # A value in the new column: a new version of that row only.
    load_day(wh, D[3], {"items": [(*ROWS[0], "red"), *((*r, None) for r in ROWS[1:])]},
             columns={"items": wide})
    assert versions(wh) == [(1, D[1], D[3]), (1, D[3], None), (2, D[1], None), (3, D[1], None)]
    # A dropped column: the rows that had a value in it start a new version (2 has none).
    narrow = [c for c in wide if c.name != "qty"]
    load_day(wh, D[4], {"items": [(1, "a", "1.00", "red"), (2, "b", "2.00", None),
                                  (3, None, None, None)]}, columns={"items": narrow})
    assert versions(wh) == [(1, D[1], D[3]), (1, D[3], D[4]), (1, D[4], None), (2, D[1], None),
                            (3, D[1], D[4]), (3, D[4], None)]
    # An older day with the older columns, loaded last, splices in too.
    load_day(wh, D[0], {"items": ROWS[:2]})
    assert versions(wh)[-3:] == [(2, D[0], None), (3, D[1], D[4]), (3, D[4], None)]
    for day in D[:5]:
        assert as_of_differences(wh, "items", day) == 0, day
    # A table added later, and one whose rows were all removed.
    load_day(wh, D[5], {"notes": [(1, "x")]})
    assert as_of_differences(wh, "notes", D[5]) == 0
    assert wh.execute("SELECT count(*) FROM history.items(%s)", (D[5],)).fetchone() == (0,)
    assert wh.execute("SELECT count(*) FROM history.items(%s)", (D[4],)).fetchone() == (3,)


def test_a_source_column_with_a_history_name_is_refused_in_one_line(warehouses):
    wh = warehouses()
    TABLES["clash"] = ([Column("id", "integer", "int4"), Column("_nw_valid_from", "date")], ["id"])
    try:
        with pytest.raises(InputError, match=r"^table clash: source column _nw_valid_from has a name "
                                             r"the history reserves .*NORTHWIND_HISTORY=off"):
            load_day(wh, D[0], {"clash": [(1, None)]})
    finally:
        del TABLES["clash"]
    wh.rollback()
    assert wh.execute("SELECT to_regclass('snapshots.clash')").fetchone() == (None,)


@pytest.fixture
def warehouses(pg_socket):
    """A factory of fresh empty warehouses."""
    yield from fresh_warehouses(pg_socket)


def test_equal_values_that_differ_are_versions(warehouses):
    wh = warehouses()
    TABLES["amounts"] = ([Column("id", "integer", "int4"), Column("amount", "numeric", "numeric"),
                          Column("ratio", "real", "float4"), Column("doc", "json", "json")], ["id"])
    try:
        for day, amount, ratio in ((D[0], "1.0", 0.0), (D[1], "1.00", 0.0), (D[2], "1.00", -0.0)):
            load_day(wh, day, {"amounts": [(1, amount, ratio, '{"a": 1}'), (2, "5", None, None)]})
    finally:
        del TABLES["amounts"]
    assert wh.execute("SELECT amount::text, ratio::text FROM history.amounts WHERE id = 1 "
                      "ORDER BY _nw_valid_from").fetchall() == [("1.0", "0"), ("1.00", "0"),
                                                            ("1.00", "-0")]
    assert wh.execute("SELECT count(*) FROM history.amounts WHERE id = 2").fetchone() == (1,)


def test_schema_changes_with_no_full_day_kept(warehouses):
    """KEEP_DAYS=0: the view reads the history; a widened type and an added column still load."""
    wh, full = warehouses(), warehouses()
    color = Column("color", "text")
    wide = [BASE[0], BASE[1], Column("qty", "bigint", "int8"), BASE[3], color]
    days = [(D[1], {"items": ROWS}, None),
            (D[3], {"items": [(1, "a", 2**40, "1.00", "red"), *((*r, None) for r in ROWS[1:])]},
             {"items": wide}),
            (D[2], {"items": [(*r, None) for r in ROWS]}, {"items": wide}),  # late, older
            (D[4], {"items": ROWS[1:]}, {"items": wide[:4]})]  # no color: the view neither
    for day, tables, columns in days:
        load_day(wh, day, tables, keep=0, columns=columns)
    for day, tables, columns in sorted(days, key=lambda d: d[0]):
        load_day(full, day, tables, columns=columns)
    assert wh.execute("SELECT count(*) FROM snapshots.items").fetchone() == (0,)
    for conn in (wh, full):
        assert conn.execute("SELECT * FROM items ORDER BY id").fetchall() == [
            (2, "b", None, 2), (3, None, 3, None)]
        assert [d[0] for d in conn.execute("SELECT * FROM items").description] == [
            "id", "name", "qty", "price"]
    for day in (D[1], D[2], D[3], D[4]):
        assert wh.execute("SELECT * FROM history.items(%s) ORDER BY id", (day,)).fetchall() == \
            full.execute("SELECT * FROM snapshots.items WHERE snapshot_date = %s ORDER BY id",
                         (day,)).fetchall()
        assert as_of_differences(full, "items", day) == 0

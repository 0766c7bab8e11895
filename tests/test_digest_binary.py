"""The binary content digest (pghash64-chain-sum/1): equal after a real load, sensitive to change.

Every type class the tap extracts is digested on the source, loaded through the plugins (the load
recomputes the manifest's digest in its transaction and rolls back on a mismatch) and digested
again in the warehouse; and each column's change in one row changes the digest.
"""

import json

import pytest
from northwind_elt import digest_hash
from northwind_elt.content_digest import (
    METHOD as TEXT_METHOD,
)
from northwind_elt.content_digest import (
    Digest,
    source_expression,
    source_method,
    table_digest,
    warehouse_expression,
)
from northwind_elt.errors import SettingError
from northwind_elt.pgtypes import Column
from pipeline import Databases, committed
from psycopg import sql
from test_type_roundtrip import DAY, extract_and_load

HASH = digest_hash.METHOD

#: One column per type class: natively hashed types (with their edge values) and those hashed as
#: their text (unconstrained numeric and bpchar, bytea, enums, domains, composites, arrays, json,
#: geometric, network, time and range types, money).
TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s "fine"');
CREATE DOMAIN code AS bpchar;
CREATE TYPE pair AS (a integer, b text);
CREATE TABLE kinds (
    id integer PRIMARY KEY, i2 smallint, i8 bigint, flag boolean, uid uuid, day date,
    ts timestamp, tz timestamptz, r real, d double precision, n numeric(12,4), u numeric,
    t text, v varchar(10), c character(4), bp bpchar, blob bytea, feeling mood, moods mood[],
    dom code, rec pair, ints integer[], texts text[], js json, jb jsonb, pt point,
    ip inet, iv interval, tm time, ttz timetz, rng int4range, price money
);
INSERT INTO kinds VALUES
 (1, -32768, -9223372036854775808, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-02',
  '2024-01-02 03:04:05.678901', '2024-03-10 01:59:59.999999-08', '-0', 'NaN', 12345678.1234,
  1.50, 'é "q", back\\slash', 'abc', 'ab', 'x  ', '\\x00ff', 'it''s "fine"', '{sad,NULL}',
  'ab', ROW(1, 'a,b'), '{1,NULL,-3}', '{"",NULL,"NULL"}', '{"a": 1}', '{"b": [1, 2.50]}',
  '(1.5,-2)', '192.168.0.1/24', '1 year -2 days 00:00:00.5', '23:59:59.999999',
  '04:05:06+05:30', '[1,10)', -1234.56),
 (2, 0, 0, false, '00000000-0000-0000-0000-000000000000', 'infinity', 'epoch', 'epoch', 0, 0, 0,
  0, '', '', '', '', '\\x', 'sad', '{}', '', ROW(NULL, NULL), '{}', '{}', 'null', 'null',
  '(0,0)', '::1', '0', '00:00', '00:00+00', 'empty', 0),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL),
 (4, 32767, 9223372036854775807, true, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '0044-03-15 BC',
  '294276-12-31 23:59:59', '-infinity', '-Infinity', '-0', -99999999.9999, 'NaN', 'multi
line', 'ü', 'abcd', 'a', '\\x0a', 'ok', '{ok,ok}', 'x', ROW(2, NULL), '{{1,2},{3,4}}',
  '{"a b"}', '[1, "two"]', '[]', '(-1,1e300)', '10.0.0.1', '-178000000 years',
  '12:00', '12:00-03', '(,5]', 0.01);
"""


def _columns(conn, table: str) -> list[Column]:
    """The table's columns as the tap describes them (name, format_type(), typname)."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod, "
        "NOT a.attnotnull FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attname <> 'snapshot_date' ORDER BY a.attnum", (table,)).fetchall()
    return [Column(*row) for row in rows]


def _source_digest(conn, table: str, method: str = HASH) -> Digest:
    columns = _columns(conn, table)
    with conn.cursor() as cur:
        return table_digest(cur, sql.Identifier(table), [source_expression(c) for c in columns],
                            method=method, columns=columns)


def _manifest_digest(databases: Databases, table: str) -> dict:
    path = committed(databases.data_root, "postgres", table, DAY, f"{table}.manifest.json")
    return json.loads(path.read_text())["content_digest"]


@pytest.mark.slow
def test_every_type_class_digests_alike_on_the_source_and_after_a_real_load(databases, tmp_path):
    """The load checks the manifest's digest (a mismatch rolls it back); recomputed here too."""
    with databases.source(autocommit=True) as src:
        src.execute(TYPES)
    extract_and_load(databases, ["kinds"], tmp_path)
    written = _manifest_digest(databases, "kinds")
    assert written["method"] == HASH and written["rows"] == 4
    with databases.source() as src, databases.warehouse() as wh:
        on_source = _source_digest(src, "kinds")
        columns = _columns(src, "kinds")  # the warehouse's own types may be wider
        with wh.cursor() as cur:
            loaded = table_digest(cur, sql.SQL("snapshots.kinds"),
                                  [warehouse_expression(c) for c in columns],
                                  method=HASH, columns=columns)
        assert on_source == loaded == Digest.from_json(written)
        # The enum's OIDs differ between the databases: hashed by label, not by OID.
        label_oid = "SELECT oid FROM pg_enum WHERE enumlabel = 'ok'"
        assert src.execute(label_oid).fetchone() != wh.execute(label_oid).fetchone()


def test_a_changed_value_in_any_column_changes_the_digest(databases: Databases):
    """One row, one column, per column of every type class; NULL, -0 and swaps too."""
    with databases.source(autocommit=True) as src:
        src.execute(TYPES)
        before = _source_digest(src, "kinds")
        names = [c.name for c in _columns(src, "kinds") if c.name != "id"]
        for name in names:
            column = sql.Identifier(name)
            # Row 1's value moves to row 2 (row 2's is never equal); then back.
            src.execute(sql.SQL("CREATE TEMP TABLE saved AS SELECT {} AS v FROM kinds WHERE id = 2")
                        .format(column))
            src.execute(sql.SQL("UPDATE kinds SET {} = (SELECT {} FROM kinds WHERE id = 1) "
                                "WHERE id = 2").format(column, column))
            assert _source_digest(src, "kinds") != before, name
            src.execute(sql.SQL("UPDATE kinds SET {} = (SELECT v FROM saved) WHERE id = 2")
                        .format(column))
            src.execute("DROP TABLE saved")
            assert _source_digest(src, "kinds") == before, name
        # NULL against each type's placeholder (row 2 holds them), -0 against 0, a value swapped
        # between rows, unconstrained numeric's scale, bpchar's trailing blanks.
        for change in ("UPDATE kinds SET i8 = NULL WHERE id = 2",
                       "UPDATE kinds SET t = NULL WHERE id = 2",
                       "UPDATE kinds SET day = NULL WHERE id = 4",
                       "UPDATE kinds SET r = 0 WHERE id = 1",
                       "UPDATE kinds SET d = 0 WHERE id = 4",
                       "UPDATE kinds SET i2 = CASE id WHEN 1 THEN 32767 ELSE -32768 END WHERE id IN (1, 4)",
                       "UPDATE kinds SET u = 1.5 WHERE id = 1",
                       "UPDATE kinds SET bp = 'x' WHERE id = 1"):
            src.execute("BEGIN")
            src.execute(change)
            assert _source_digest(src, "kinds") != before, change
            src.execute("ROLLBACK")


def test_swapping_values_between_rows_changes_the_digest(databases: Databases):
    """A per-column sum would not see it; the chained row hash does."""
    with databases.source(autocommit=True) as src:
        src.execute("CREATE TABLE p (a integer, b text); INSERT INTO p VALUES (1, 'x'), (2, 'y')")
        src.execute("CREATE TABLE q (a integer, b text); INSERT INTO q VALUES (1, 'y'), (2, 'x')")
        assert _source_digest(src, "p") != _source_digest(src, "q")


def test_text_is_hashed_under_the_c_collation():
    """A nondeterministic collation (ICU) would hash case-insensitively equal strings alike.

    This server has no ICU, so no such collation can be made here: the SQL says it instead.
    """
    for column in (Column("t", "text", "text"), Column("v", "character varying(4)", "varchar"),
                   Column("c", "character(4)", "bpchar"), Column("j", "jsonb", "jsonb")):
        text = digest_hash.row_hash([column], [sql.Identifier(column.name)]).as_string(None)
        assert 'COLLATE "C"' in text, column


def test_a_user_type_named_like_a_builtin_is_hashed_as_text():
    """Only the built-in spelling (format_type()) picks a native hash."""
    assert digest_hash.hash_kind(Column("a", "integer", "int4")) == "int4"
    assert digest_hash.hash_kind(Column("a", "app.int4", "int4")) is None
    assert digest_hash.hash_kind(Column("a", "numeric(10,2)", "numeric")) == "numeric"
    assert digest_hash.hash_kind(Column("a", "numeric", "numeric")) is None
    assert digest_hash.hash_kind(Column("a", "bpchar", "bpchar")) is None


def test_the_method_setting(databases: Databases, monkeypatch):
    with databases.source() as src, src.cursor() as cur:
        assert source_method(cur, "") == HASH
        assert source_method(cur, "TEXT") == TEXT_METHOD
        with pytest.raises(SettingError, match="NORTHWIND_DIGEST_METHOD='md5' must be one of"):
            source_method(cur, "md5")
        monkeypatch.setenv("NORTHWIND_DIGEST_METHOD", "text")
        assert source_method(cur) == TEXT_METHOD


@pytest.mark.slow
def test_the_text_method_still_extracts_and_verifies(databases, tmp_path, monkeypatch):
    """Manifests of the text method (older ones, or NORTHWIND_DIGEST_METHOD=text) still load."""
    monkeypatch.setenv("NORTHWIND_DIGEST_METHOD", "text")
    with databases.source(autocommit=True) as src:
        src.execute(TYPES)
    extract_and_load(databases, ["kinds"], tmp_path)
    written = _manifest_digest(databases, "kinds")
    assert written["method"] == TEXT_METHOD
    with databases.source() as src:
        assert Digest.from_json(written) == _source_digest(src, "kinds", TEXT_METHOD)

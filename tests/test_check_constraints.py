"""Domain CHECK text from a manifest becomes warehouse DDL only in an allow-listed shape.

The accepted shapes are what a real PostgreSQL prints (pg_get_constraintdef) for ordinary domain
checks; hostile definitions (a function with effects, a subquery, a comment or string trick, a
second statement, unbalanced parentheses) are refused naming the constraint, before the warehouse
runs anything of them.
"""

import itertools

import psycopg
import pytest
from northwind_elt import localdb
from northwind_elt.check_expr import check_expression
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, TypeDefinition
from northwind_elt.warehouse_types import ensure_types
from psycopg import sql

_counter = itertools.count()

#: Ordinary domain checks, as a source would declare them.
DECLARED = [
    "VALUE >= 1901 AND VALUE <= 2155",
    "VALUE <> ''",
    "VALUE ~ '^[A-Z]{2}[0-9]+$'",
    "VALUE IN ('a', 'b', 'it''s')",
    "char_length(VALUE) BETWEEN 1 AND 40",
    "VALUE IS NOT NULL AND lower(VALUE) = VALUE",
    "VALUE::numeric(10,2) > -1.5",
    "VALUE NOT LIKE '%\\%'",
    "upper(btrim(VALUE)) <> 'N/A'",
]


@pytest.fixture(scope="module")
def database(pg_socket):
    name = f"checks_{next(_counter)}"
    admin = {"host": str(pg_socket), "dbname": "postgres", "user": localdb.SUPERUSER}
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return {**admin, "dbname": name}


def test_what_postgresql_prints_for_ordinary_checks_is_accepted(database):
    with psycopg.connect(**database, autocommit=True) as conn:
        for number, check in enumerate(DECLARED):
            base = "integer" if "1901" in check else "text"
            conn.execute(f"CREATE DOMAIN d{number} AS {base} CHECK ({check})")
        printed = [row[0] for row in conn.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_type t"
            " ON t.oid = c.contypid WHERE t.typname ~ '^d[0-9]+$' ORDER BY t.typname")]
    assert len(printed) == len(DECLARED)
    for text in printed:
        check_expression(text)


HOSTILE = {
    "CHECK ((pg_sleep(5) IS NOT NULL))": "function pg_sleep",
    "CHECK ((lo_import('/etc/passwd') > 0))": "function lo_import",
    "CHECK ((set_config('log_statement', 'all', false) <> ''))": "function set_config",
    "CHECK ((VALUE > (SELECT 1)))": "SELECT",
    "CHECK ((VALUE > 0)); DROP SCHEMA snapshots CASCADE; SELECT (1)": "unexpected ';",
    "CHECK ((VALUE > 0) /* ' */ OR pg_sleep(1) IS NULL /* ' */)": "comment",
    "CHECK (('\\' OR pg_sleep(1) IS NULL OR '' = '\\'))": "function pg_sleep",
    "CHECK ((VALUE > 0)) OR (true)": "parenthesis",
    "CHECK ((VALUE > $$x$$))": "unexpected '$",
    "CHECK ((pg_catalog.now() > VALUE))": "pg_catalog",
    "CHECK ((\"VALUE\" > 0))": "identifier",
    "CHECK ((VALUE > 0)": "unbalanced",
    "EXCLUDE USING gist (VALUE WITH &&)": "not a CHECK",
}


@pytest.mark.parametrize("text", list(HOSTILE))
def test_hostile_definitions_are_refused(text):
    with pytest.raises(ValueError, match=HOSTILE[text].replace("(", r"\(").replace("$", r"\$")):
        check_expression(text)


def test_the_load_refuses_a_hostile_domain_naming_it_and_runs_nothing(database):
    hostile = TypeDefinition(kind="domain", name="evil_text", base="text",
                             checks=(("evil_check", "CHECK ((pg_sleep(5) IS NULL))"),))
    column = Column("note", "evil_text", "evil_text", type_definitions=(hostile,))
    with psycopg.connect(**database) as conn, conn.cursor() as cur:
        with pytest.raises(InputError, match="constraint evil_check .* is not a CHECK constraint"):
            ensure_types(cur, "orders", [column])
        conn.rollback()
        assert cur.execute("SELECT to_regtype('evil_text')").fetchone()[0] is None
    fine = TypeDefinition(kind="domain", name="short_code", base="text",
                          checks=(("short_code_check", "CHECK ((char_length(VALUE) <= 5))"),))
    with psycopg.connect(**database) as conn, conn.cursor() as cur:
        ensure_types(cur, "orders", [Column("code", "short_code", "short_code", type_definitions=(fine,))])
        conn.commit()
        assert cur.execute("SELECT to_regtype('short_code')").fetchone()[0] == "short_code"

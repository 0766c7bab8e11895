"""The data checks file: the shipped defaults parse, and every mistake is one line naming it."""

import pytest
from northwind_elt.checks_config import DEFAULT_CHECKS_FILE, load_checks, parse_checks
from northwind_elt.errors import SettingError
from settings import SOURCE_ROWS


def test_the_shipped_checks_cover_every_northwind_table_with_its_key():
    checks = load_checks(DEFAULT_CHECKS_FILE)
    assert {c.table for c in checks} == {*SOURCE_ROWS, "order_details"}
    keyed = {c.table for c in checks if c.kind == "unique"}
    assert keyed == {*SOURCE_ROWS, "order_details"}
    names = {(c.table, c.name) for c in checks}
    assert ("order_details", "references(order_id -> orders(order_id))") in names
    assert ("order_details", "references(product_id -> products(product_id))") in names
    assert ("orders", "references(customer_id -> customers(customer_id))") in names
    assert ("orders", "row_count_change") in names
    assert all(c.severity == "error" for c in checks)


def test_every_form_of_every_check():
    checks = parse_checks({"tables": {"t": {
        "not_null": {"columns": ["a", "b"], "severity": "warn"},
        "unique": [["a"], ["b", "c"]],
        "references": {"column": ["a", "b"], "table": "p", "to": ["x", "y"]},
        "row_count_change": {"max_pct": 12.5},
        "fresh": {"column": "d", "max_age_days": 2, "severity": "warn"},
    }}}, "f.yml")
    assert [(c.name, c.severity) for c in checks] == [
        ("not_null(a)", "warn"), ("not_null(b)", "warn"), ("unique(a)", "error"),
        ("unique(b, c)", "error"), ("references(a, b -> p(x, y))", "error"),
        ("row_count_change", "error"), ("fresh(d)", "warn")]
    assert checks[5].limit == 12.5 and checks[6].limit == 2


@pytest.mark.parametrize(("declared", "reason"), [
    ({"tables": {"orders": {"not_nul": ["a"]}}},
     "checks file f.yml: table orders: unknown check 'not_nul'; the checks are row_count_change, "
     "not_null, unique, references, fresh"),
    ({"tables": {"orders": {"fresh": {"column": "d", "max_age": 3}}}},
     "checks file f.yml: table orders: fresh: unknown key 'max_age'; allowed: column, "
     "max_age_days, severity"),
    ({"tables": {"orders": {"fresh": {"column": "d"}}}},
     "checks file f.yml: table orders: fresh: missing key 'max_age_days'"),
    ({"tables": {"orders": {"unique": {"columns": ["a"], "severity": "fatal"}}}},
     "checks file f.yml: table orders: unique: severity 'fatal': expected error or warn"),
    ({"tables": {"orders": {"row_count_change": {"max_pct": "half"}}}},
     "checks file f.yml: table orders: row_count_change: max_pct 'half': expected a number >= 0"),
    ({"tables": {"orders": {"references": {"column": ["a", "b"], "table": "p", "to": "x"}}}},
     "checks file f.yml: table orders: references: column and to name 2 and 1 columns: "
     "expected as many"),
    ({"tables": {"orders": {"not_null": []}}},
     "checks file f.yml: table orders: not_null: expected a column name or a list of distinct "
     "column names"),
    ({"tables": {"orders": {"not_null": ["a", "a"]}}},
     "checks file f.yml: table orders: not_null: expected a column name or a list of distinct "
     "column names"),
    ({"tables": {"orders": {"unique": [["a"], ["a"]]}}},
     "checks file f.yml: declared twice: orders: unique(a)"),
    ({"tables": {"orders": None}},
     "checks file f.yml: table orders: expected a mapping of checks (row_count_change, "
     "not_null, unique, references, fresh)"),
    ({"table": {}}, "checks file f.yml: expected one key, tables: a mapping of table names to "
                    "their checks"),
])
def test_a_mistake_is_one_line_naming_file_table_and_key(declared, reason):
    with pytest.raises(SettingError) as raised:
        parse_checks(declared, "f.yml")
    assert str(raised.value) == reason


def test_a_file_that_is_not_yaml_or_missing_names_the_file_and_line(tmp_path):
    broken = tmp_path / "checks.yml"
    broken.write_text("tables:\n  orders: {unique: [a\n")
    with pytest.raises(SettingError, match=rf"^checks file {broken}: line \d+: not valid YAML$"):
        load_checks(broken)
    with pytest.raises(SettingError, match=rf"^checks file {tmp_path}/none.yml: cannot read it: "
                                           "No such file or directory$"):
        load_checks(tmp_path / "none.yml")

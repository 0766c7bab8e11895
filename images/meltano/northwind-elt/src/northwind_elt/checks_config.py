"""The data checks file: what ``check-warehouse`` asserts about each loaded table, parsed strictly.

One YAML file declares every check (the shipped Northwind defaults: ``checks.yml`` beside this
module; ``NORTHWIND_CHECKS_FILE`` points at another)::

    tables:
      order_details:
        row_count_change: {max_pct: 50}            # versus the previous loaded day
        not_null: [order_id, product_id]           # one check per column
        unique: [order_id, product_id]             # one key (a list of keys: [[a], [b, c]])
        references:                                # every non-NULL value is a key of the parent
          - {column: order_id, table: orders, to: order_id}
        fresh: {column: order_date, max_age_days: 3, severity: warn}

Every check takes ``severity: error`` (the default: a failure fails the step) or ``warn`` (logged
and recorded; the step succeeds). A shorthand list (``not_null: [a, b]``) becomes
``{columns: [a, b]}``. Anything unknown or malformed is one :class:`SettingError` line naming the
file, the table and the key. Tables and columns are checked against the loaded day by the step.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from northwind_elt.errors import SettingError

#: Where a user's own checks file is named; unset, the shipped defaults apply.
CHECKS_FILE_VARIABLE = "NORTHWIND_CHECKS_FILE"
DEFAULT_CHECKS_FILE = Path(__file__).with_name("checks.yml")

ERROR, WARN = "error", "warn"
SEVERITIES = (ERROR, WARN)
KINDS = ("row_count_change", "not_null", "unique", "references", "fresh")


@dataclass(frozen=True)
class Check:
    """One check of one table.

    Attributes:
        table: The loaded table (stream name) it reads.
        kind: One of :data:`KINDS`.
        severity: ``error`` or ``warn``.
        columns: The columns it reads (not_null: one; unique: the key; references: the child's
            columns; fresh: one; row_count_change: none).
        parent: references: the parent table.
        parent_columns: references: the parent's key, column for column.
        limit: row_count_change: the largest change in percent; fresh: the largest age in days.
    """

    table: str
    kind: str
    severity: str
    columns: tuple[str, ...] = ()
    parent: str = ""
    parent_columns: tuple[str, ...] = ()
    limit: float = 0

    @property
    def name(self) -> str:
        """The check's name, unique within its table: ``unique(order_id, product_id)``."""
        if self.kind == "row_count_change":
            return self.kind
        if self.kind == "references":
            return (f"references({', '.join(self.columns)} -> {self.parent}"
                    f"({', '.join(self.parent_columns)}))")
        return f"{self.kind}({', '.join(self.columns)})"


def checks_file() -> Path:
    """The checks file the step reads: ``NORTHWIND_CHECKS_FILE``, else the shipped defaults."""
    return Path(os.environ.get(CHECKS_FILE_VARIABLE) or DEFAULT_CHECKS_FILE)


def load_checks(path: Path) -> list[Check]:
    """Read and validate ``path``; every problem is one line naming the file, table and key.

    Raises:
        SettingError: The file is missing, not YAML, or declares something unknown or malformed.
    """
    import yaml  # only the check step pays for it

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingError(f"checks file {path}: cannot read it: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        line = f": line {where.line + 1}" if where is not None else ""
        raise SettingError(f"checks file {path}{line}: not valid YAML") from None
    return parse_checks(document, str(path))


def parse_checks(document: Any, source: str) -> list[Check]:
    """Validate a parsed checks document; ``source`` names it in errors.

    Example:
        >>> [c.name for c in parse_checks({"tables": {"t": {"unique": ["a"]}}}, "f")]
        ['unique(a)']
    """
    if not isinstance(document, dict) or set(document) != {"tables"} \
            or not isinstance(document["tables"], dict):
        raise SettingError(f"checks file {source}: expected one key, tables: a mapping of "
                           "table names to their checks")
    checks = []
    for table, declared in document["tables"].items():
        where = f"checks file {source}: table {table}"
        if not isinstance(table, str) or not table:
            raise SettingError(f"checks file {source}: table {table!r}: expected a table name")
        if not isinstance(declared, dict) or not declared:
            raise SettingError(f"{where}: expected a mapping of checks ({', '.join(KINDS)})")
        for kind, value in declared.items():
            if kind not in KINDS:
                raise SettingError(f"{where}: unknown check {kind!r}; the checks are "
                                   f"{', '.join(KINDS)}")
            checks += _PARSERS[kind](table, f"{where}: {kind}", value)
    names = [(c.table, c.name) for c in checks]
    if len(set(names)) != len(names):
        twice = sorted({f"{t}: {n}" for t, n in names if names.count((t, n)) > 1})
        raise SettingError(f"checks file {source}: declared twice: {'; '.join(twice)}")
    return checks


def _fields(where: str, value: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    """``value`` as a mapping with exactly ``required`` and some of ``optional`` (and severity)."""
    allowed = required | optional | {"severity"}
    if not isinstance(value, dict):
        raise SettingError(f"{where}: expected a mapping with {', '.join(sorted(required))}")
    if unknown := sorted(set(value) - allowed, key=str):
        raise SettingError(f"{where}: unknown key {unknown[0]!r}; allowed: "
                           f"{', '.join(sorted(allowed))}")
    if missing := sorted(required - set(value)):
        raise SettingError(f"{where}: missing key {missing[0]!r}")
    severity = value.get("severity", ERROR)
    if severity not in SEVERITIES:
        raise SettingError(f"{where}: severity {severity!r}: expected error or warn")
    return value


def _names(where: str, value: Any) -> tuple[str, ...]:
    """One column name or a non-empty list of distinct names."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or \
            not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise SettingError(f"{where}: expected a column name or a list of distinct column names")
    return tuple(names)


def _number(where: str, value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SettingError(f"{where}: {key} {value!r}: expected a number >= 0")
    return float(value)


def _columns_form(where: str, value: Any) -> tuple[dict[str, Any], Any]:
    """A shorthand list (or name) or ``{columns: ..., severity: ...}``."""
    if isinstance(value, dict):
        fields = _fields(where, value, {"columns"}, set())
        return fields, fields["columns"]
    return {}, value


def _not_null(table: str, where: str, value: Any) -> list[Check]:
    fields, columns = _columns_form(where, value)
    return [Check(table, "not_null", fields.get("severity", ERROR), (column,))
            for column in _names(where, columns)]


def _unique(table: str, where: str, value: Any) -> list[Check]:
    fields, keys = _columns_form(where, value)
    # [a, b] is one key of two columns; [[a], [b, c]] two keys.
    keys = keys if isinstance(keys, list) and keys and all(isinstance(k, list) for k in keys) \
        else [keys]
    return [Check(table, "unique", fields.get("severity", ERROR), _names(where, key))
            for key in keys]


def _references(table: str, where: str, value: Any) -> list[Check]:
    checks = []
    for item in value if isinstance(value, list) else [value]:
        fields = _fields(where, item, {"column", "table", "to"}, set())
        columns = _names(f"{where}: column", fields["column"])
        parent_columns = _names(f"{where}: to", fields["to"])
        if not isinstance(fields["table"], str) or not fields["table"]:
            raise SettingError(f"{where}: table {fields['table']!r}: expected a table name")
        if len(columns) != len(parent_columns):
            raise SettingError(f"{where}: column and to name {len(columns)} and "
                               f"{len(parent_columns)} columns: expected as many")
        checks.append(Check(table, "references", fields.get("severity", ERROR), columns,
                            fields["table"], parent_columns))
    return checks


def _row_count_change(table: str, where: str, value: Any) -> list[Check]:
    fields = _fields(where, value, {"max_pct"}, set())
    return [Check(table, "row_count_change", fields.get("severity", ERROR),
                  limit=_number(where, fields["max_pct"], "max_pct"))]


def _fresh(table: str, where: str, value: Any) -> list[Check]:
    fields = _fields(where, value, {"column", "max_age_days"}, set())
    column = fields["column"]
    if not isinstance(column, str) or not column:
        raise SettingError(f"{where}: column {column!r}: expected one column name")
    return [Check(table, "fresh", fields.get("severity", ERROR), (column,),
                  limit=_number(where, fields["max_age_days"], "max_age_days"))]


_PARSERS = {"row_count_change": _row_count_change, "not_null": _not_null, "unique": _unique,
            "references": _references, "fresh": _fresh}

"""Run the declared data checks against one loaded day of the warehouse, reading only.

Each check reads the day's rows where the load keeps them (the day's partition, else the
history as of the day: :func:`northwind_elt.history_sql.day_relation`), so a check of day D sees
D's data whatever was loaded later. Row counts come from the load log (``northwind.loads``): the
day's against the previous loaded day's. Every identifier is quoted (``psycopg.sql``).
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from northwind_elt.checks_config import ERROR, Check
from northwind_elt.errors import SettingError
from northwind_elt.history_sql import day_relation
from northwind_elt.warehouse import SNAPSHOT_DATE, existing_columns, loaded_days

#: A check's (passed, observed, expected); the runners read the day's rows through ``rows_of``.
Outcome = tuple[bool, str, str]
RowsOf = Callable[[str], sql.Composed]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one day: what it saw and what it expected."""

    table: str
    check: str
    severity: str
    passed: bool
    observed: str
    expected: str

    def line(self) -> str:
        """``orders: row_count_change: 415 rows, -50.0% from 830 on 2024-01-02 (expected ...)``."""
        return f"{self.table}: {self.check}: {self.observed} (expected {self.expected})"

    def as_dict(self) -> dict[str, object]:
        """The result as a JSON-ready mapping (marker details, the results table)."""
        return asdict(self)


def validate_against(cur: psycopg.Cursor, checks: list[Check], day: dt.date, source: str,
                     tables: set[str]) -> None:
    """Refuse checks naming a table the day did not load or a column its table lacks.

    Raises:
        SettingError: One line naming the checks file, the table, the check and the name.
    """
    columns: dict[str, set[str]] = {}
    for check in checks:
        for table, names in ((check.table, check.columns), (check.parent, check.parent_columns)):
            if not table:
                continue
            if table not in tables:
                raise SettingError(f"checks file {source}: table {check.table}: {check.name}: "
                                   f"no table {table} was loaded for {day} (loaded: "
                                   f"{', '.join(sorted(tables))})")
            if table not in columns:
                columns[table] = set(existing_columns(cur, table)) - {SNAPSHOT_DATE}
            if missing := [n for n in names if n not in columns[table]]:
                raise SettingError(f"checks file {source}: table {check.table}: {check.name}: "
                                   f"table {table} has no column {missing[0]}")


def run_checks(cur: psycopg.Cursor, checks: list[Check], day: dt.date) -> list[CheckResult]:
    """Run every check on ``day`` (validated: :func:`validate_against`), in declared order."""
    days = loaded_days(cur)
    earlier = [d for d in days if d < day]
    previous = (earlier[-1], days[earlier[-1]]) if earlier else None
    relations: dict[str, sql.Composable] = {}

    def rows_of(table: str) -> sql.Composed:
        if table not in relations:
            relations[table] = day_relation(cur, table, day)
        return sql.SQL("(SELECT * FROM {} WHERE {} = {})").format(
            relations[table], sql.Identifier(SNAPSHOT_DATE), sql.Literal(day))

    results = []
    for check in checks:
        if check.kind == "row_count_change":
            passed, observed, expected = _row_count_change(check, days[day].get(check.table, 0),
                                                           previous)
        else:
            passed, observed, expected = _RUNNERS[check.kind](cur, check, rows_of, day)
        results.append(CheckResult(check.table, check.name, check.severity, passed, observed,
                                   expected))
    return results


def failures(results: list[CheckResult], severity: str = ERROR) -> list[CheckResult]:
    """The results of ``severity`` that failed."""
    return [r for r in results if not r.passed and r.severity == severity]


def _row_count_change(check: Check, rows: int, previous: tuple[dt.date, dict] | None
                      ) -> Outcome:
    """The day's rows against the previous loaded day's (the load log's counts)."""
    expected = f"a change of at most {check.limit:g}%"
    if previous is None:
        return True, f"{rows} rows, no earlier loaded day", expected
    before_day, counts = previous
    if check.table not in counts:
        return True, f"{rows} rows, no {check.table} on {before_day}", expected
    before = int(counts[check.table])
    if before == 0:
        change = 0.0 if rows == 0 else float("inf")
    else:
        change = (rows - before) * 100.0 / before
    return (abs(change) <= check.limit,
            f"{rows} rows, {change:+.1f}% from {before} on {before_day}", expected)


def _columns(names: tuple[str, ...], alias: str) -> sql.Composed:
    """``alias."a", alias."b"``."""
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n))
                              for n in names)


def _not_null(cur: psycopg.Cursor, check: Check, rows_of: RowsOf, day: dt.date) -> Outcome:
    (column,) = check.columns
    cur.execute(sql.SQL("SELECT count(*) FROM {} AS t WHERE t.{} IS NULL").format(
        rows_of(check.table), sql.Identifier(column)))
    nulls = cur.fetchone()[0]
    return nulls == 0, f"{nulls} rows with {column} NULL", "none"


def _unique(cur: psycopg.Cursor, check: Check, rows_of: RowsOf, day: dt.date) -> Outcome:
    cur.execute(sql.SQL(
        "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {} AS t "
        "GROUP BY {} HAVING count(*) > 1) AS d").format(
            rows_of(check.table), _columns(check.columns, "t")))
    keys, rows = cur.fetchone()
    return keys == 0, f"{keys} duplicated keys in {rows} rows", "no duplicated key"


def _references(cur: psycopg.Cursor, check: Check, rows_of: RowsOf, day: dt.date) -> Outcome:
    """Child rows whose (non-NULL) columns match no parent row of the same day; one example."""
    matches = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c))
        for c, p in zip(check.columns, check.parent_columns, strict=True))
    present = sql.SQL(" AND ").join(
        sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in check.columns)
    cur.execute(sql.SQL(
        "SELECT count(*), min(({keys})::text) FROM {child} AS c WHERE {present} "
        "AND NOT EXISTS (SELECT FROM {parent} AS p WHERE {matches})").format(
            keys=_columns(check.columns, "c"),
            child=rows_of(check.table), present=present, parent=rows_of(check.parent),
            matches=matches))
    orphans, example = cur.fetchone()
    observed = f"{orphans} rows without a match" + (f", e.g. {example}" if orphans else "")
    return orphans == 0, observed, f"every value in {check.parent}"


def _fresh(cur: psycopg.Cursor, check: Check, rows_of: RowsOf, day: dt.date) -> Outcome:
    """The newest value of the column (as a date) against the logical date, not the clock."""
    (column,) = check.columns
    cur.execute(sql.SQL("SELECT max(t.{}::date) FROM {} AS t").format(
        sql.Identifier(column), rows_of(check.table)))
    newest = cur.fetchone()[0]
    expected = f"{column} within {check.limit:g} days of {day}"
    if newest is None:
        return False, f"no {column} value", expected
    age = (day - newest).days
    return age <= check.limit, f"newest {column} {newest}, {age} days old", expected


_RUNNERS = {"not_null": _not_null, "unique": _unique, "references": _references,
            "fresh": _fresh}

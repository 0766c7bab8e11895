"""What "every table" covers: which relations of the schemas are extracted, which are not, and why.

A green extract must never hold less than the user asked for without saying so. This module
checks the ``schemas`` setting against the source (a schema that does not exist, or differs only
in case, fails naming the nearest one), lists every relation of those schemas that is not
extracted with its reason (views, materialized views and foreign tables unless
``relation_kinds`` asks for them, tables without columns, streams deselected with ``meltano
select``), and refuses tables the source role reads through row-level security unless
``enable_row_security`` says the filtered rows are what the user wants (as ``pg_dump`` does).
"""

import difflib
from dataclasses import dataclass

import psycopg
from northwind_elt.errors import SettingError

#: The ``relation_kinds`` setting's values and the ``pg_class.relkind`` codes each covers.
RELATION_KINDS = {
    "table": ("r", "p"),
    "view": ("v",),
    "materialized_view": ("m",),
    "foreign_table": ("f",),
}
DEFAULT_RELATION_KINDS = ("table",)
_KIND_NAMES = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
               "f": "foreign table"}
#: PostgreSQL's limit of columns per table; the warehouse adds one (the day) to every table.
MAX_TABLE_COLUMNS = 1600
MAX_SOURCE_COLUMNS = MAX_TABLE_COLUMNS - 1

_SCHEMAS = "SELECT nspname::text FROM pg_namespace ORDER BY 1"

# Every relation that could hold rows, in the schemas, with its column count and whether
# row-level security filters what this role reads (checked in the default row_security=on).
_RELATIONS = """
SELECT n.nspname::text, c.relname::text, c.relkind::text,
       (SELECT count(*) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::int,
       c.relkind IN ('r', 'p', 'm', 'f') AND row_security_active(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Relation:
    """A relation of the schemas that could hold rows."""

    schema: str
    name: str
    kind: str
    columns: int
    row_security: bool

    @property
    def qualified(self) -> str:
        """``schema.name`` as the user wrote it (for messages, never for SQL)."""
        return f"{self.schema}.{self.name}"

    @property
    def kind_name(self) -> str:
        """``table``, ``view``, ``materialized view``... ."""
        return _KIND_NAMES[self.kind]


@dataclass(frozen=True)
class Skipped:
    """A relation that is not extracted, and why (kept in the step's marker)."""

    relation: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The marker's form."""
        return {"relation": self.relation, "kind": self.kind, "reason": self.reason}


def relkinds(setting: list[str] | None) -> tuple[str, ...]:
    """The ``pg_class.relkind`` codes the ``relation_kinds`` setting asks for.

    Example:
        >>> relkinds(None), relkinds(["table", "materialized_view"])
        (('r', 'p'), ('r', 'p', 'm'))
    """
    names = list(setting) if setting else list(DEFAULT_RELATION_KINDS)
    unknown = sorted(set(names) - set(RELATION_KINDS))
    if unknown:
        raise SettingError(f"relation_kinds setting: unknown kind(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(RELATION_KINDS)}")
    return tuple(code for name in RELATION_KINDS if name in names for code in RELATION_KINDS[name])


def check_schemas(conn: psycopg.Connection, schemas: list[str]) -> None:
    """Refuse schemas that do not exist, naming the nearest existing one for each.

    Example of the message: ``schemas setting: schema "Sales" does not exist in the source
    (did you mean "sales"?)``. Names are compared exactly, as PostgreSQL does for quoted names.
    """
    existing = [row[0] for row in conn.execute(_SCHEMAS)]
    problems = [f"schema {schema!r} does not exist in the source{_nearest(schema, existing)}"
                for schema in schemas if schema not in existing]
    if problems:
        raise SettingError("schemas setting: " + "; ".join(problems))


def _nearest(name: str, existing: list[str]) -> str:
    folded = [e for e in existing if e.casefold() == name.casefold()]
    close = folded or difflib.get_close_matches(name, existing, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_relations(conn: psycopg.Connection, schemas: list[str]) -> list[Relation]:
    """Every relation of ``schemas`` that could hold rows (partitions excepted: read via parents)."""
    return [Relation(*row) for row in conn.execute(_RELATIONS, {"schemas": schemas})]


def partition_relations(relations: list[Relation], schemas: list[str], kinds: tuple[str, ...]
                        ) -> tuple[list[Relation], list[Skipped]]:
    """Split ``relations`` into those to extract and those skipped with a reason.

    Raises:
        SettingError: If a schema of the setting has nothing to extract, naming what it holds.
    """
    wanted, skipped = [], []
    for relation in relations:
        if relation.kind not in kinds:
            setting = next(name for name, codes in RELATION_KINDS.items() if relation.kind in codes)
            skipped.append(Skipped(relation.qualified, relation.kind_name,
                                   f"a {relation.kind_name}: add {setting} to the relation_kinds "
                                   "setting to snapshot it"))
        elif relation.columns == 0:
            skipped.append(Skipped(relation.qualified, relation.kind_name,
                                   "no columns: nothing a file or warehouse table can hold"))
        else:
            wanted.append(relation)
    empty = [s for s in schemas if not any(r.schema == s for r in wanted)]
    if empty:
        raise SettingError("schemas setting: " + "; ".join(
            f"schema {s!r} has nothing to extract{_what_it_holds(s, skipped)}" for s in empty))
    return wanted, skipped


def _what_it_holds(schema: str, skipped: list[Skipped]) -> str:
    held = [f"{s.kind} {s.relation}" for s in skipped if s.relation.startswith(f"{schema}.")]
    if not held:
        return " (it holds no table)"
    return f" (it holds only: {', '.join(held[:5])}{' ...' if len(held) > 5 else ''})"


def check_extractable(relations: list[Relation], columns: dict[str, int],
                      enable_row_security: bool) -> list[str]:
    """Refuse what cannot be extracted whole; return the tables read under row-level security.

    Args:
        relations: the relations about to be extracted.
        columns: the number of columns selected of each (by ``schema.name``).
        enable_row_security: the user's opt-in to extract what row-level security lets through.

    Raises:
        SettingError: naming every table with too many columns for the warehouse, and every
            table whose rows row-level security filters (without the opt-in).
    """
    wide = [f"{r.qualified} ({columns[r.qualified]})" for r in relations
            if columns.get(r.qualified, 0) > MAX_SOURCE_COLUMNS]
    if wide:
        raise SettingError(
            f"table(s) {', '.join(wide)} have more than {MAX_SOURCE_COLUMNS} columns: the "
            f"warehouse adds the day column and PostgreSQL allows {MAX_TABLE_COLUMNS}; deselect "
            "columns or the table (meltano select tap-pgcopy --exclude ...)")
    filtered = [r.qualified for r in relations if r.row_security]
    if filtered and not enable_row_security:
        raise SettingError(
            f"row-level security filters what the source role reads of {', '.join(filtered)}: "
            "the extract would miss rows; connect as the tables' owner or a role with BYPASSRLS, "
            "or set enable_row_security to extract only the rows the policies allow")
    return filtered

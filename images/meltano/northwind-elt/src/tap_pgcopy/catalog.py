"""Read tables, columns, exact types and primary keys from the PostgreSQL catalog."""

from dataclasses import dataclass

import psycopg
from northwind_elt.pgtypes import Column

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod,
       NOT a.attnotnull,
       CASE WHEN t.typtype = 'e' OR et.typtype = 'e' THEN
         ARRAY(SELECT e.enumlabel::text FROM pg_enum e
               WHERE e.enumtypid = CASE WHEN t.typtype = 'e' THEN t.oid ELSE et.oid END
               ORDER BY e.enumsortorder)
       END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
-- An array of an enum carries the element's labels, so the warehouse can create the enum.
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_PRIMARY_KEYS = """
SELECT c.relname, a.attname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, position)
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
WHERE k.contype = 'p' AND n.nspname = %(schema)s
ORDER BY c.relname, u.position
"""


@dataclass(frozen=True)
class Table:
    """A source table: its schema-qualified name, columns and primary key."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]


def discover_tables(conn: psycopg.Connection, schema: str) -> list[Table]:
    """Every ordinary or partitioned table of ``schema``, sorted by name."""
    columns: dict[str, list[Column]] = {}
    for table, name, sql_type, typname, typmod, nullable, labels in conn.execute(
        _COLUMNS, {"schema": schema}
    ):
        columns.setdefault(table, []).append(
            Column(name, sql_type, typname, typmod, nullable, tuple(labels or ()))
        )
    keys: dict[str, list[str]] = {}
    for table, name in conn.execute(_PRIMARY_KEYS, {"schema": schema}):
        keys.setdefault(table, []).append(name)
    return [Table(schema, t, tuple(cols), tuple(keys.get(t, ()))) for t, cols in sorted(columns.items())]

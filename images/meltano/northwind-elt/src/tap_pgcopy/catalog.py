"""Read tables, columns, exact types, user type definitions and primary keys from the catalog."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from northwind_elt.errors import SettingError
from northwind_elt.pgtypes import Column, TypeDefinition

from tap_pgcopy.coverage import (
    Skipped,
    check_schemas,
    partition_relations,
    read_relations,
    relkinds,
)

#: The schema whose tables keep their plain names as stream (and warehouse table) names.
DEFAULT_SCHEMA = "public"
#: PostgreSQL's longest identifier (NAMEDATALEN - 1): a longer stream name would be truncated.
MAX_NAME_BYTES = 63
#: The relation kinds extracted by default: ordinary and partitioned tables.
DEFAULT_RELKINDS = relkinds(None)

_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), t.typname,
       a.atttypmod, NOT a.attnotnull, a.atttypid,
       tn.nspname NOT IN ('pg_catalog', 'information_schema')
         OR (t.typcategory = 'A' AND en.nspname NOT IN ('pg_catalog', 'information_schema'))
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_namespace en ON en.oid = et.typnamespace
-- Partitions are read through their partitioned parent, never on their own.
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = ANY(%(kinds)s) AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY n.nspname, c.relname, a.attnum
"""

_PRIMARY_KEYS = """
SELECT n.nspname, c.relname, a.attname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, position)
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
WHERE k.contype = 'p' AND n.nspname = ANY(%(schemas)s)
ORDER BY n.nspname, c.relname, u.position
"""

# One type: its kind, name, whether it is built in, and what each kind needs to be recreated.
_TYPE = """
SELECT t.typtype, format_type(t.oid, NULL), n.nspname IN ('pg_catalog', 'information_schema'),
       CASE WHEN t.typcategory = 'A' AND t.typtype <> 'd' THEN t.typelem END,
       t.typbasetype, format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typrelid,
       r.rngsubtype, format_type(r.rngsubtype, NULL), format_type(r.rngmultitypid, NULL),
       mr.rngtypid,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'
          AND d.refclassid = 'pg_extension'::regclass)
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_range mr ON mr.rngmultitypid = t.oid
WHERE t.oid = %s
"""
_ENUM_LABELS = "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder"
_DOMAIN_CHECKS = """SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
                    WHERE contypid = %s AND contype = 'c' ORDER BY conname"""
_ATTRIBUTES = """SELECT attname::text, format_type(atttypid, atttypmod), atttypid FROM pg_attribute
                 WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""


@dataclass(frozen=True)
class Table:
    """A source table: its schema-qualified name, columns and primary key."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    #: Whether row-level security filters what the source role reads of it.
    row_security: bool = False

    @property
    def qualified(self) -> str:
        """``schema.name``, for messages."""
        return f"{self.schema}.{self.name}"

    @property
    def stream_name(self) -> str:
        """The stream (data tree and warehouse) name: ``<table>`` in public, else ``<schema>.<table>``."""
        return self.name if self.schema == DEFAULT_SCHEMA else f"{self.schema}.{self.name}"


class TypeCatalog:
    """The definitions of the source's user types, read once per type."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._known: dict[int, tuple[TypeDefinition, ...]] = {}

    def definitions(self, type_oid: int) -> tuple[TypeDefinition, ...]:
        """The user types ``type_oid`` needs, each after those it needs itself; () if built in."""
        if type_oid not in self._known:
            self._known[type_oid] = ()  # a type never needs itself
            self._known[type_oid] = _unique(self._read(type_oid))
        return self._known[type_oid]

    def _read(self, type_oid: int) -> list[TypeDefinition]:
        (kind, name, builtin, element, base, base_type, not_null, relid, subtype, subtype_name,
         multirange, range_of, extension) = self.conn.execute(_TYPE, (type_oid,)).fetchone()
        if element:
            return list(self.definitions(element))
        if builtin:
            return []
        if kind == "e":
            labels = tuple(r[0] for r in self.conn.execute(_ENUM_LABELS, (type_oid,)))
            return [TypeDefinition("enum", name, labels=labels)]
        if kind == "d":
            checks = tuple((c, d) for c, d in self.conn.execute(_DOMAIN_CHECKS, (type_oid,)))
            return [*self.definitions(base),
                    TypeDefinition("domain", name, base=base_type, not_null=not_null,
                                   checks=checks)]
        if kind == "c":
            needed, attributes = [], []
            for attribute, attribute_type, attribute_oid in self.conn.execute(_ATTRIBUTES,
                                                                                (relid,)):
                needed += self.definitions(attribute_oid)
                attributes.append((attribute, attribute_type))
            return [*needed, TypeDefinition("composite", name, attributes=tuple(attributes))]
        if kind == "r":
            return [*self.definitions(subtype),
                    TypeDefinition("range", name, subtype=subtype_name, multirange=multirange)]
        if kind == "m":
            return list(self.definitions(range_of))
        return [TypeDefinition("external", name, extension=extension or "")]


def _unique(definitions: list[TypeDefinition]) -> tuple[TypeDefinition, ...]:
    seen: set[str] = set()
    return tuple(d for d in definitions if not (d.name in seen or seen.add(d.name)))


def discover_tables(conn: psycopg.Connection, schemas: list[str],
                    kinds: tuple[str, ...] = DEFAULT_RELKINDS) -> tuple[list[Table], list[Skipped]]:
    """Every relation of ``schemas`` of the ``kinds`` asked for, sorted by stream name.

    Returns:
        The tables, and every relation of the schemas that is not extracted with its reason.

    Raises:
        SettingError: If a schema is missing or has nothing to extract, if two tables would share
            a stream name, or a name is too long.
    """
    check_schemas(conn, schemas)
    wanted, skipped = partition_relations(read_relations(conn, schemas), schemas, kinds)
    row_security = {(r.schema, r.name): r.row_security for r in wanted}
    types = TypeCatalog(conn)
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, sql_type, typname, typmod, nullable, oid, user_type in conn.execute(
        _COLUMNS, {"schemas": schemas, "kinds": list(kinds)}
    ):
        definitions = types.definitions(oid) if user_type else ()
        columns.setdefault((schema, table), []).append(
            Column(name, sql_type, typname, typmod, nullable, definitions))
    keys: dict[tuple[str, str], list[str]] = {}
    for schema, table, name in conn.execute(_PRIMARY_KEYS, {"schemas": schemas}):
        keys.setdefault((schema, table), []).append(name)
    tables = [Table(s, t, tuple(cols), tuple(keys.get((s, t), ())), row_security.get((s, t), False))
              for (s, t), cols in columns.items()]
    by_stream: dict[str, Table] = {}
    for table in tables:
        other = by_stream.setdefault(table.stream_name, table)
        if other is not table:
            raise SettingError(f"tables {other.schema}.{other.name} and {table.schema}.{table.name} "
                               f"would both be stream {table.stream_name!r}: rename one or leave "
                               "its schema out of the schemas setting")
        if len(table.stream_name.encode()) > MAX_NAME_BYTES:
            raise SettingError(f"table {table.schema}.{table.name}: stream name "
                               f"{table.stream_name!r} is longer than {MAX_NAME_BYTES} bytes, "
                               "PostgreSQL's limit for the warehouse table")
    return sorted(tables, key=lambda t: t.stream_name), skipped


def discover_configured(conn: psycopg.Connection, config: Mapping[str, Any],
                        logger: logging.Logger) -> tuple[list[Table], list[Skipped]]:
    """The tables the ``schemas``, ``relation_kinds`` and ``tables`` settings ask for.

    The one discovery of the tap and of its light ``--discover`` (:mod:`tap_pgcopy.discover_light`),
    so both answer alike. Logs each relation not extracted and the tables found.

    Returns:
        The tables, sorted by stream name, and the relations not extracted with their reasons.

    Raises:
        SettingError: If a setting names what the source lacks (see :func:`discover_tables`), or
            the ``tables`` setting names a stream not found.
    """
    schemas = list(config.get("schemas") or [DEFAULT_SCHEMA])
    tables, skipped = discover_tables(conn, schemas, relkinds(config.get("relation_kinds")))
    for relation in skipped:
        logger.info("not extracted: %s %s: %s", relation.kind, relation.relation, relation.reason)
    wanted = config.get("tables")
    if wanted:
        known = {t.stream_name for t in tables}
        missing = sorted(set(wanted) - known)
        if missing:
            raise SettingError(f"tables setting names tables not found in schemas "
                               f"{', '.join(schemas)}: {missing}")
        tables = [t for t in tables if t.stream_name in wanted]
    logger.info("discovered %d tables: %s", len(tables), ", ".join(t.stream_name for t in tables))
    return tables, skipped

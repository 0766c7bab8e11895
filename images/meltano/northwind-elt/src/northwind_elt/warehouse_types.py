"""Create, in the warehouse, the user types the source's columns use: before any row is copied.

Each column carries the definitions of the user types its type needs (:class:`TypeDefinition`,
read from the source's catalog by the extract, each after the types it needs itself): enums with
their labels, domains with their base type, ``NOT NULL`` and ``CHECK`` constraints, composite
types with their attributes, range types with their subtype and multirange name. A type that
already exists in the warehouse is used as it is. A type only C code can define (an extension's
base type such as ``citext`` or ``hstore``) must already exist: the load stops naming the table,
the column, the type and its extension.

Two kinds of type evolve between days:

- **Enums** only gain labels. :func:`add_enum_labels` adds a day's new labels in their source order
  in a transaction of its own, committed before the load's (PostgreSQL cannot use a label in the
  transaction that added it); a label the newest day lacks (removed or renamed at the source) is
  refused naming the type and the labels.
- **Domains** are created without ``NOT NULL`` (one made by an earlier version loses it): a column
  of such a domain holds NULL on the days before it existed or after it was dropped. The load puts
  ``NOT NULL`` on the column of each partition whose day has it (:func:`not_null_columns`), so the
  newest day's values still obey the whole domain.
"""

import re

import psycopg
from psycopg import sql

from northwind_elt.check_expr import check_expression
from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, TypeDefinition, check_sql_type

# The schema part of a qualified type name (format_type() qualifies types not on the search path).
_QUALIFIED = re.compile(r'((?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+"))\.')


def require_external_types(cur: psycopg.Cursor, tables: dict[str, list[Column]]) -> None:
    """Check the warehouse has every type only an extension can create, before anything is written.

    Raises:
        InputError: naming the first table, column and type the warehouse lacks.
    """
    for table, columns in sorted(tables.items()):
        for column in columns:
            for definition in column.type_definitions:
                if definition.kind == "external":
                    _require(cur, definition, f"table {table}, column {column.name}: type "
                                              f"{definition.name}")


def _require(cur: psycopg.Cursor, definition: TypeDefinition, where: str) -> None:
    cur.execute("SELECT to_regtype(%s) IS NOT NULL", (check_sql_type(definition.name, where),))
    if not cur.fetchone()[0]:
        source = f"extension {definition.extension}" if definition.extension else \
            "C code outside the core"
        raise InputError(f"{where} does not exist in the warehouse and only its {source} can "
                         "create it: install it there; nothing was loaded")


def ensure_types(cur: psycopg.Cursor, table: str, columns: list[Column]) -> None:
    """Create every user type the columns need that the warehouse lacks.

    Raises:
        InputError: naming the table, column and type, if a type cannot be created (an
            extension's type missing in the warehouse, a definition that fails).
    """
    done: set[str] = set()
    for column in columns:
        for definition in column.type_definitions:
            if definition.name in done:
                continue
            done.add(definition.name)
            where = f"table {table}, column {column.name}: type {definition.name}"
            name = check_sql_type(definition.name, where)
            cur.execute("SELECT typnotnull FROM pg_type WHERE oid = to_regtype(%s)", (name,))
            found = cur.fetchone()
            if found is not None and not (found[0] and definition.kind == "domain"):
                continue
            if definition.kind == "external":
                _require(cur, definition, where)
            try:
                if found is not None:  # a domain made NOT NULL by earlier versions
                    cur.execute(sql.SQL("ALTER DOMAIN {} DROP NOT NULL").format(sql.SQL(name)))
                else:
                    _create(cur, name, definition, where)
            except psycopg.Error as error:
                raise InputError(f"{where} cannot be {'altered' if found else 'created'} in the "
                                 f"warehouse: {str(error).splitlines()[0]}; nothing was loaded"
                                 ) from None


def _create(cur: psycopg.Cursor, name: str, definition: TypeDefinition, where: str) -> None:
    """Create one type (and its schema, when the name is qualified)."""
    qualified = _QUALIFIED.match(name)
    if qualified:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.SQL(qualified.group(1))))
    type_name = sql.SQL(name)
    if definition.kind == "enum":
        labels = sql.SQL(", ").join(sql.Literal(label) for label in definition.labels)
        cur.execute(sql.SQL("CREATE TYPE {} AS ENUM ({})").format(type_name, labels))
    elif definition.kind == "domain":
        # Without NOT NULL: the partitions of the days that have the column carry it.
        cur.execute(sql.SQL("CREATE DOMAIN {} AS {}").format(
            type_name, sql.SQL(check_sql_type(definition.base, where))))
        for constraint, check in definition.checks:
            try:
                check_expression(check)  # an allow-listed shape only: it becomes warehouse DDL
            except ValueError as reason:
                raise InputError(f"{where}: constraint {constraint} {check!r} is not a CHECK "
                                 f"constraint the warehouse can recreate ({reason})") from None
            cur.execute(sql.SQL("ALTER DOMAIN {} ADD CONSTRAINT {} {}").format(
                type_name, sql.Identifier(constraint), sql.SQL(check)))
    elif definition.kind == "composite":
        attributes = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(check_sql_type(t, where)))
            for n, t in definition.attributes)
        cur.execute(sql.SQL("CREATE TYPE {} AS ({})").format(type_name, attributes))
    elif definition.kind == "range":
        options = [sql.SQL("SUBTYPE = {}").format(sql.SQL(check_sql_type(definition.subtype,
                                                                          where)))]
        if definition.multirange:
            options.append(sql.SQL("MULTIRANGE_TYPE_NAME = {}").format(
                sql.SQL(check_sql_type(definition.multirange, where))))
        cur.execute(sql.SQL("CREATE TYPE {} AS RANGE ({})").format(
            type_name, sql.SQL(", ").join(options)))
    else:
        raise InputError(f"{where}: unknown kind of type definition {definition.kind!r}")


def not_null_columns(columns: list[Column]) -> tuple[str, ...]:
    """The columns whose type is a ``NOT NULL`` domain, directly or through the domains it is over."""
    found = []
    for column in columns:
        definitions = {d.name: d for d in column.type_definitions}
        current = definitions.get(column.sql_type)
        while current is not None and current.kind == "domain":
            if current.not_null:
                found.append(column.name)
                break
            current = definitions.get(current.base)
    return tuple(found)


def add_enum_labels(cur: psycopg.Cursor, tables: dict[str, list[Column]], older: bool
                    ) -> list[str]:
    """Add to the warehouse's enums the labels the day's source has and they lack, in source order.

    Run in a transaction of its own, committed before the load's. An enum the warehouse lacks is
    created whole by the load (:func:`ensure_types`).

    Args:
        cur: A cursor of the warehouse.
        tables: The day's columns per table.
        older: Whether the day is older than the newest loaded day: it may lack labels added
            since, and may not bring labels the warehouse lacks (renamed or removed since).

    Returns:
        ``type: label`` for each label added.

    Raises:
        InputError: naming the type and the labels, for labels removed, renamed or reordered.
    """
    enums = {d.name: d for columns in tables.values() for c in columns
             for d in c.type_definitions if d.kind == "enum"}
    added = []
    for name, definition in sorted(enums.items()):
        checked = check_sql_type(name, f"enum {name}")
        cur.execute("SELECT array_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum "
                    "WHERE enumtypid = to_regtype(%s)", (checked,))
        present = cur.fetchone()[0]
        if present is None:
            continue
        source = list(definition.labels)
        new = [label for label in source if label not in present]
        missing = [label for label in present if label not in source]
        if [label for label in present if label in source] != \
                [label for label in source if label in present]:
            _refuse_labels(name, present, source, "the labels they share are in another order")
        if missing and not older:
            _refuse_labels(name, present, source, f"{_labels(missing)} removed or renamed")
        if new and older:
            _refuse_labels(name, present, source, f"this older day has {_labels(new)}, renamed "
                                                  "or removed since")
        placed = set(present)
        for i, label in enumerate(source):
            if label in placed:
                continue
            following = next((other for other in source[i + 1:] if other in placed), None)
            position = sql.SQL(" BEFORE {}").format(sql.Literal(following)) \
                if following is not None else sql.SQL("")
            try:
                cur.execute(sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{}").format(
                    sql.SQL(checked), sql.Literal(label), position))
            except psycopg.Error as error:
                raise InputError(f"enum type {name}: label {label!r} cannot be added in the "
                                 f"warehouse: {str(error).splitlines()[0]}; nothing was loaded"
                                 ) from None
            placed.add(label)
            added.append(f"{name}: {label}")
    return added


def _labels(labels: list[str]) -> str:
    return ", ".join(repr(label) for label in labels)


def _refuse_labels(name: str, present: list[str], source: list[str], why: str) -> None:
    raise InputError(f"enum type {name}: the warehouse has labels ({_labels(present)}), the day's "
                     f"source ({_labels(source)}): {why}; an enum only gains labels, this needs a "
                     "migration of the warehouse; nothing was loaded")

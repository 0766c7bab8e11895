"""Create, in the warehouse, the user types the source's columns use: before any row is copied.

Each column carries the definitions of the user types its type needs (:class:`TypeDefinition`,
read from the source's catalog by the extract, each after the types it needs itself): enums with
their labels, domains with their base type, ``NOT NULL`` and ``CHECK`` constraints, composite
types with their attributes, range types with their subtype and multirange name. A type that
already exists in the warehouse is used as it is. A type only C code can define (an extension's
base type such as ``citext`` or ``hstore``) must already exist: the load stops naming the table,
the column, the type and its extension.
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
            cur.execute("SELECT to_regtype(%s) IS NOT NULL", (name,))
            if cur.fetchone()[0]:
                continue
            if definition.kind == "external":
                _require(cur, definition, where)
            try:
                _create(cur, name, definition, where)
            except psycopg.Error as error:
                raise InputError(f"{where} cannot be created in the warehouse: "
                                 f"{str(error).splitlines()[0]}; nothing was loaded") from None


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
        cur.execute(sql.SQL("CREATE DOMAIN {} AS {}{}").format(
            type_name, sql.SQL(check_sql_type(definition.base, where)),
            sql.SQL(" NOT NULL" if definition.not_null else "")))
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

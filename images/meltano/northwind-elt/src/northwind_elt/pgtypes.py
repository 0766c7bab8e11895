"""Map PostgreSQL column types to Arrow (Parquet) types and back, exactly.

Types with an exact Arrow twin are stored natively (``smallint`` → int16, ``real`` → float32,
``numeric(p,s)`` → decimal128(p,s), ``date``, ``timestamp[tz]``, ``boolean``, ``bytea`` → binary).
Every other type (``text``, ``bpchar``, ``uuid``, ``jsonb``, arrays, enums, domains, composites,
ranges, ``interval``, ...) is stored as PostgreSQL's own text form, which the loader hands back to
PostgreSQL unchanged, so the value round-trips exactly. A natively stored column whose day holds a
value the Arrow type cannot (``NaN`` of ``numeric(p,s)``, ``±infinity``, BC dates and timestamps)
is stored as text too, that day (:attr:`Column.text_form`). The original type (``format_type()``)
always travels with the column as ``x-sql-datatype`` and is what the warehouse recreates, with the
definitions of the user types it needs (:class:`TypeDefinition`).
"""

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa

from northwind_elt.errors import InputError

_NATIVE = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "bytea": pa.binary(),
}

_JSON_TYPE = {
    "int2": {"type": "integer"},
    "int4": {"type": "integer"},
    "int8": {"type": "integer"},
    "float4": {"type": "number"},
    "float8": {"type": "number"},
    "numeric": {"type": "number"},
    "bool": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "timestamp": {"type": "string", "format": "date-time"},
    "timestamptz": {"type": "string", "format": "date-time"},
    "time": {"type": "string", "format": "time"},
    "uuid": {"type": "string", "format": "uuid"},
}

#: Largest precision decimal128 holds.
_MAX_DECIMAL_PRECISION = 38

# A type as format_type() prints it: words, an optional modifier, an optional time-zone clause,
# array brackets; or a (schema-qualified, possibly quoted) user type name. Nothing else may reach DDL.
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
_SQL_TYPE = re.compile(
    rf"(?:{_IDENT}\.)?{_IDENT}(?: [a-z]+)*(?:\(\d+(?:,\s?-?\d+)?\))?"
    r"(?: with(?:out)? time zone)?(?:\[\])*"
)


def check_sql_type(sql_type: str, where: str) -> str:
    """Return ``sql_type`` if it is a plain type expression, else raise an error naming ``where``.

    Types come from manifests on disk, so they are checked before they are written into DDL.

    Example:
        >>> check_sql_type("character varying(40)", "orders.ship_name")
        'character varying(40)'
        >>> check_sql_type("int); DROP TABLE x; --", "t.c")
        Traceback (most recent call last):
        ...
        northwind_elt.errors.InputError: t.c: 'int); DROP TABLE x; --' is not a PostgreSQL type name
    """
    if not _SQL_TYPE.fullmatch(sql_type):
        raise InputError(f"{where}: {sql_type!r} is not a PostgreSQL type name")
    return sql_type


def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """Decode a ``numeric`` typmod into (precision, scale); None when unconstrained."""
    if typmod < 4:
        return None
    packed = typmod - 4
    scale = packed & 0x7FF
    if scale & 0x400:  # PostgreSQL 15+ allows a negative scale, stored as 11-bit two's complement
        scale -= 0x800
    return (packed >> 16) & 0xFFFF, scale


@dataclass(frozen=True)
class TypeDefinition:
    """A user type a column needs in the warehouse, described by the source's catalog.

    ``kind`` is ``enum`` (``labels``), ``domain`` (``base``, ``not_null``, ``checks``),
    ``composite`` (``attributes``), ``range`` (``subtype``, ``multirange``) or ``external``: a base
    type defined in C, normally by an extension (``extension``), which the warehouse cannot create
    and must already have. Type names are spelt as ``format_type()`` spells them.
    """

    kind: str
    name: str
    labels: tuple[str, ...] = ()
    base: str = ""
    not_null: bool = False
    #: (constraint name, ``pg_get_constraintdef()``) of each CHECK constraint of a domain.
    checks: tuple[tuple[str, str], ...] = ()
    #: (attribute name, type) of each attribute of a composite type, in order.
    attributes: tuple[tuple[str, str], ...] = ()
    subtype: str = ""
    multirange: str = ""
    extension: str = ""

    def to_json(self) -> dict[str, Any]:
        """The definition as a JSON object, without its empty fields."""
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "TypeDefinition":
        """Invert :meth:`to_json`."""
        pairs = {k: tuple(tuple(p) for p in value.get(k, ())) for k in ("checks", "attributes")}
        return cls(**{**value, "labels": tuple(value.get("labels", ())), **pairs})


def _definitions_from_json(text: str | bytes | None) -> tuple[TypeDefinition, ...]:
    return tuple(TypeDefinition.from_json(d) for d in json.loads(text)) if text else ()


@dataclass(frozen=True)
class Column:
    """One source column: its name and everything needed to store and recreate its type."""

    name: str
    #: ``format_type(atttypid, atttypmod)``: the exact type, e.g. ``character varying(40)``.
    sql_type: str
    #: ``pg_type.typname`` of the type (``_int4`` for ``integer[]``).
    type_name: str = "text"
    typmod: int = -1
    nullable: bool = True
    #: The user types the column's type needs, each after the types it needs itself.
    type_definitions: tuple[TypeDefinition, ...] = field(default=())
    #: Stored as PostgreSQL text although the type has a native twin (the day held a value the
    #: native type cannot: NaN, ±infinity, a BC date).
    text_form: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type the column is stored as."""
        return pa.string() if self.text_form else self.native_arrow_type

    @property
    def native_arrow_type(self) -> pa.DataType:
        """The Arrow type of the column's type, string where there is no exact twin."""
        if self.type_name == "numeric":
            ps = numeric_precision_scale(self.typmod)
            if ps and 0 <= ps[1] <= ps[0] <= _MAX_DECIMAL_PRECISION:
                return pa.decimal128(*ps)
            return pa.string()
        return _NATIVE.get(self.type_name, pa.string())

    @property
    def arrow_field(self) -> pa.Field:
        """The Arrow field, carrying the source type as metadata."""
        return pa.field(self.name, self.arrow_type, nullable=self.nullable,
                        metadata=self.field_metadata())

    def field_metadata(self) -> dict[bytes, bytes]:
        """Arrow field metadata: the source type, its catalog name and modifier."""
        meta = {b"x-sql-datatype": self.sql_type.encode(),
                b"x-pg-typname": self.type_name.encode(),
                b"x-pg-typmod": str(self.typmod).encode()}
        if self.type_definitions:
            meta[b"x-pg-type-definitions"] = self._definitions_json().encode()
        return meta

    def _definitions_json(self) -> str:
        return json.dumps([d.to_json() for d in self.type_definitions], ensure_ascii=False,
                          separators=(",", ":"))

    def as_text(self) -> "Column":
        """The same column stored as PostgreSQL text."""
        return replace(self, text_form=True)

    def json_schema(self) -> dict[str, Any]:
        """The Singer (JSON Schema) property for the column, with the exact type attached."""
        base = dict(_JSON_TYPE.get(self.type_name, {"type": "string"}))
        base["type"] = [base["type"], "null"] if self.nullable else base["type"]
        base["x-sql-datatype"] = self.sql_type
        props: dict[str, Any] = {"typname": self.type_name, "typmod": self.typmod}
        if self.type_definitions:
            props["type_definitions"] = [d.to_json() for d in self.type_definitions]
        if self.text_form:
            base.pop("format", None)
            props["text_form"] = True
        base["x-sql-datatype-properties"] = props
        return base

    @classmethod
    def from_json_schema(cls, name: str, prop: dict[str, Any]) -> "Column":
        """Rebuild a column from a Singer property; stock taps' properties get a best-effort type."""
        types = prop.get("type", "string")
        types = [types] if isinstance(types, str) else list(types)
        nullable = "null" in types or not types
        props = prop.get("x-sql-datatype-properties") or {}
        if prop.get("x-sql-datatype") and props.get("typname"):
            definitions = tuple(TypeDefinition.from_json(d)
                                for d in props.get("type_definitions", ()))
            return cls(name, prop["x-sql-datatype"], props["typname"], int(props.get("typmod", -1)),
                       nullable, definitions or _enum_definition(prop["x-sql-datatype"],
                                                                 props.get("enum_labels")),
                       bool(props.get("text_form")))
        return cls(name, *_guess_from_json(types, prop.get("format")), nullable=nullable)

    @classmethod
    def from_arrow_field(cls, arrow_field: pa.Field) -> "Column":
        """Rebuild a column from a Parquet field written by :attr:`arrow_field`."""
        meta = arrow_field.metadata or {}
        sql_type = meta.get(b"x-sql-datatype", b"text").decode()
        labels = meta.get(b"x-pg-enum-labels", b"").decode()  # files written before definitions
        column = cls(
            name=arrow_field.name,
            sql_type=sql_type,
            type_name=meta.get(b"x-pg-typname", b"text").decode(),
            typmod=int(meta.get(b"x-pg-typmod", b"-1")),
            nullable=arrow_field.nullable,
            type_definitions=(_definitions_from_json(meta.get(b"x-pg-type-definitions"))
                              or _enum_definition(sql_type, labels.split("\x1f") if labels else None)),
        )
        # The file's own type says whether the column fell back to text.
        if pa.types.is_string(arrow_field.type) and not pa.types.is_string(column.arrow_type):
            return column.as_text()
        return column


def _enum_definition(sql_type: str, labels: list[str] | None) -> tuple[TypeDefinition, ...]:
    """The enum of a column described by an older release (labels only, no definitions)."""
    if not labels:
        return ()
    return (TypeDefinition("enum", sql_type.removesuffix("[]"), labels=tuple(labels)),)


def _guess_from_json(types: list[str], fmt: str | None) -> tuple[str, str]:
    """Pick (sql_type, typname) for a JSON-schema-only property (stock Singer taps)."""
    if "integer" in types:
        return "bigint", "int8"
    if "number" in types:
        return "double precision", "float8"
    if "boolean" in types:
        return "boolean", "bool"
    if "object" in types or "array" in types:
        return "jsonb", "jsonb"
    if fmt == "date-time":
        return "timestamp with time zone", "timestamptz"
    if fmt == "date":
        return "date", "date"
    return "text", "text"


def arrow_schema(columns: list[Column]) -> pa.Schema:
    """The Arrow schema of a table."""
    return pa.schema([c.arrow_field for c in columns])


def columns_of(schema: pa.Schema) -> list[Column]:
    """The columns of an Arrow schema written by :func:`arrow_schema`."""
    return [Column.from_arrow_field(f) for f in schema]


# Types a CSV file can declare, as format_type() spells them, with their catalog name.
_DECLARABLE = {
    "smallint": "int2", "integer": "int4", "bigint": "int8", "real": "float4",
    "double precision": "float8", "boolean": "bool", "date": "date", "text": "text",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "numeric": "numeric", "character varying": "varchar",
}
_ALIASES = {"int2": "smallint", "int": "integer", "int4": "integer", "int8": "bigint",
            "float4": "real", "float8": "double precision", "bool": "boolean",
            "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone",
            "varchar": "character varying", "decimal": "numeric"}
_DECLARED = re.compile(r"([a-z0-9 ]+?)\s*(?:\((\d+)(?:,\s*(\d+))?\))?")


def declared_column(name: str, declared_type: str, nullable: bool = True) -> Column:
    """A column from a declared type such as ``smallint``, ``numeric(10,2)`` or ``varchar(40)``.

    Example:
        >>> declared_column("unit_price", "real").arrow_type
        DataType(float)
        >>> declared_column("name", "varchar(40)").sql_type
        'character varying(40)'
    """
    match = _DECLARED.fullmatch(declared_type.strip().lower())
    base = match and _ALIASES.get(match.group(1), match.group(1))
    if not match or base not in _DECLARABLE:
        raise InputError(f"column {name}: type {declared_type!r} cannot be declared for a CSV "
                         f"file (use one of: {', '.join(sorted(_DECLARABLE))})")
    size, scale = match.group(2), match.group(3)
    typmod, sql_type = -1, base
    if base == "numeric" and size:
        typmod = ((int(size) << 16) | int(scale or 0)) + 4
        sql_type = f"numeric({size},{scale or 0})"
    elif base == "character varying" and size:
        typmod = int(size) + 4
        sql_type = f"character varying({size})"
    elif size:
        raise InputError(f"column {name}: type {declared_type!r} takes no size")
    return Column(name, sql_type, _DECLARABLE[base], typmod, nullable)


def varchar_length(column: Column) -> int | None:
    """The declared maximum length of a ``character varying(n)`` column, else None."""
    return column.typmod - 4 if column.type_name == "varchar" and column.typmod >= 4 else None

"""The binary content digest (``pghash64-chain-sum/1``): PostgreSQL's hash functions, no text.

The text method (:mod:`northwind_elt.content_digest`) renders every row with record output and
MD5s it; most of its server CPU is the rendering. This method hashes each value with the seeded
64-bit hash function of its type, the previous column's result as the seed, so a row hash is a
chain over its columns in order (non-linear: a sum over rows cannot cancel values swapped between
rows, as the linear ``hash_record_extended`` would)::

    s = SEED;  s = H1(v1, s);  ...;  s = Hn(vn, s);  s = hashint4extended(flags_k, s) ...

``flags`` are 31-bit words with one bit per column that is NULL (the value hashed for a NULL is a
placeholder of its type) and one per float column that holds ``-0``. The digest is the row count
and the exact sum of the row hashes, as for the text method.

Per type, chosen so that two values hash alike exactly when the text method renders them alike:

* ``smallint``, ``integer``, ``boolean`` (as 0/1), ``uuid``: their hash is of the value itself.
* ``bigint``: its two 32-bit halves (``hashint8extended`` alone folds 64 bits into 32).
* ``date``: days since 2000-01-01, the infinities beyond every finite day.
* ``timestamp``, ``timestamptz``: the type's hash of the microseconds (folded to 32 bits: a
  changed value goes unseen with probability 2^-32, against 2^-64 elsewhere).
* ``real``, ``double precision``: the type's hash (every NaN alike, as their text ``NaN``), plus a
  flag for ``-0``, which hashes like ``0`` but prints ``-0``.
* ``numeric(p,s)``: the type's hash, which ignores trailing zeros; the scale is fixed by the type
  (both sides cast to it), so ``1.50`` cannot meet ``1.5``. Unconstrained ``numeric`` keeps its
  scale in the text form: hashed as text, below.
* ``text``, ``varchar``, ``character(n)``: the UTF-8 bytes under ``COLLATE "C"`` (a
  nondeterministic collation would hash equal-comparing strings alike); ``character(n)``'s hash
  skips trailing blanks, which ``n`` fixes anyway.
* everything else (unconstrained ``numeric`` and ``bpchar``, ``bytea``, arrays, enums (whose own
  hash is of an OID that differs between databases), domains, composites, ranges, json, xml,
  geometric types, ``interval``, ``time``...): the text of the type's output function
  (``format('%s', v)``, under the same text settings as the text method), hashed as text.

Every function used exists in PostgreSQL 11 and later, and hash partitioning keeps them stable
across releases. Hashes of bytes (text) depend on the CPU's byte order: a source and a warehouse
of different byte orders must use the text method (``NORTHWIND_DIGEST_METHOD=text``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psycopg import sql

from northwind_elt.pgtypes import Column

METHOD = "pghash64-chain-sum/1"
#: The chain's starting seed (any non-zero constant: a zero seed skips the hash's seeding).
SEED = 0x4E6F727468776E64
#: Flag bits per int4 word (the sign bit stays clear).
FLAG_BITS = 31

#: A type's hash of one value: ``{v}`` the value, ``{s}`` the seed.
_HASHES = {
    "int2": "hashint2extended({v}, {s})",
    "int4": "hashint4extended({v}, {s})",
    "int8": "hashint4extended(({v} >> 32)::int4, hashint8extended({v} & 4294967295, {s}))",
    "bool": "hashint4extended({v}::int4, {s})",
    "uuid": "uuid_hash_extended({v}, {s})",
    "date": ("hashint4extended(CASE WHEN isfinite({v}) THEN {v} - DATE '2000-01-01' "
             "WHEN {v} > DATE '2000-01-01' THEN 2147483647 ELSE -2147483648 END, {s})"),
    "timestamp": "timestamp_hash_extended({v}, {s})",
    "timestamptz": "timestamptz_hash_extended({v}, {s})",
    "float4": "hashfloat4extended({v}, {s})",
    "float8": "hashfloat8extended({v}, {s})",
    "numeric": "hash_numeric_extended({v}, {s})",
    "text": 'hashtextextended({v}::text COLLATE "C", {s})',
    "bpchar": 'hashbpcharextended({v} COLLATE "C", {s})',
}
_HASHES["varchar"] = _HASHES["text"]
_TEXT_FORM = "hashtextextended(format('%s', {v}) COLLATE \"C\", {s})"
#: A NULL's placeholder (the NULL flag tells them apart): any value of the type.
_PLACEHOLDER = {"bool": "f", "uuid": "00000000-0000-0000-0000-000000000000",
                "timestamp": "epoch", "timestamptz": "epoch", "text": "", "varchar": "",
                "bpchar": ""}
#: The bytes of ``-0`` as each float type's send function writes them.
_NEGATIVE_ZERO = {"float4": "\\x80000000", "float8": "\\x8000000000000000"}


#: How ``format_type()`` spells each hashed type: a user type of the same ``typname`` in another
#: schema (``app.int4``), unconstrained ``numeric`` and ``bpchar`` are hashed as text.
_SPELLING = {
    "int2": r"smallint", "int4": r"integer", "int8": r"bigint", "bool": r"boolean",
    "uuid": r"uuid", "date": r"date", "float4": r"real", "float8": r"double precision",
    "timestamp": r"timestamp(\(\d+\))? without time zone",
    "timestamptz": r"timestamp(\(\d+\))? with time zone",
    "numeric": r"numeric\(\d+,-?\d+\)", "text": r"text",
    "varchar": r"character varying(\(\d+\))?", "bpchar": r"character\(\d+\)",
}


#: The most columns a table's rows are hashed by this method: the chain nests one call per column,
#: and building or parsing thousands of levels overflows a recursion limit (a 1,600-column table
#: did). A wider table's manifest names the text method.
MAX_COLUMNS = 100

def hash_kind(column: Column) -> str | None:
    """The key of :data:`_HASHES` hashing ``column``, or None for its text form.

    Decided by the type alone (name and ``format_type()`` text), never by the typmod or
    nullability, which a manifest's reader may not know: both sides must choose alike.
    """
    kind = column.type_name
    spelling = _SPELLING.get(kind)
    return kind if spelling and re.fullmatch(spelling, column.sql_type) else None


def _step(column: Column, value: sql.Composable, seed: sql.Composable) -> sql.Composable:
    kind = hash_kind(column)
    if kind is None:
        return sql.SQL(_TEXT_FORM).format(v=value, s=seed)  # format() never returns NULL
    if kind != "date":  # the date's CASE already gives a NULL a number
        value = sql.SQL("coalesce({}, {})").format(value, sql.Literal(_PLACEHOLDER.get(kind, "0")))
    return sql.SQL(_HASHES[kind]).format(v=value, s=seed)


def _flags(columns: Sequence[Column], values: Sequence[sql.Composable]) -> list[sql.Composable]:
    """Each column's flag terms: NULL, and ``-0`` for floats."""
    terms = []
    for column, value in zip(columns, values, strict=True):
        terms.append(sql.SQL("{} IS NULL").format(value))
        if column.type_name in _NEGATIVE_ZERO:
            send = sql.SQL("float4send" if column.type_name == "float4" else "float8send")
            terms.append(sql.SQL("({} = 0 AND {}({}) = {}::bytea)").format(
                value, send, value, sql.Literal(_NEGATIVE_ZERO[column.type_name])))
    return terms


def row_hash(columns: Sequence[Column], values: Sequence[sql.Composable]) -> sql.Composable:
    """The SQL of one row's hash, ``values`` being the columns in their source types."""
    seed: sql.Composable = sql.SQL("{}::int8").format(sql.Literal(SEED))
    for column, value in zip(columns, values, strict=True):
        seed = _step(column, value, seed)
    terms = _flags(columns, values)
    for start in range(0, len(terms), FLAG_BITS):
        word = sql.SQL(" + ").join(
            sql.SQL("CASE WHEN {} THEN {} ELSE 0 END").format(term, sql.Literal(1 << bit))
            for bit, term in enumerate(terms[start:start + FLAG_BITS]))
        seed = sql.SQL("hashint4extended({}, {})").format(word, seed)
    return seed

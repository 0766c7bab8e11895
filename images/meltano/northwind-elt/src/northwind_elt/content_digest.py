"""An order-independent digest of a table's content, the same on the source and in the warehouse.

Two methods; a manifest names the one its digest used, and the warehouse recomputes that one. The
binary method (:mod:`northwind_elt.digest_hash`, ``pghash64-chain-sum/1``) is what an extract from
a PostgreSQL source computes by default: a third of the text method's server CPU. The text
method below stays for the CSV extract, for sources it cannot serve, and for older manifests.

Definition of the text method (``METHOD``): each row is rendered as PostgreSQL's text of the row value
``ROW(c1, c2, ...)::text`` (record output: fields quoted where needed, NULL an empty field), with
every column in its *source* type and the text-form settings of :data:`TEXT_SETTINGS` (TimeZone
UTC, ISO dates, shortest exact floats, hex bytea); ``money`` as ``numeric`` (its text depends on
``lc_monetary``). The row's hash is the first 64 bits of the MD5 of that text (UTF-8), read as a
signed big-endian integer. The digest is the row count and the exact sum of the row hashes.

A sum counts duplicates (a keyless table keeps them; XOR would cancel a pair) and does not depend
on the order of the rows. PostgreSQL computes it with ``md5()`` and ``sum(bigint)`` (numeric, no
overflow). The warehouse casts each column back to the manifest's source type first, so a column
widened since (``numeric(10,2)`` to ``numeric(12,3)``) still gives the source's text (``1.50``).

A CSV extract has no server: :class:`ArrowDigest` renders the typed Arrow values as PostgreSQL
would (the declarable CSV types only) and hashes them the same way in Python.
"""

from __future__ import annotations

import decimal
import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.pq import TransactionStatus

from northwind_elt import digest_hash
from northwind_elt.errors import SettingError
from northwind_elt.pgtypes import Column

#: The text method.
METHOD = "md5-64-sum/1"
#: Every method a manifest may name, each computed by :func:`digest_query`.
METHODS = (METHOD, digest_hash.METHOD)
#: Which method an extract from PostgreSQL uses: ``hash`` (the default) or ``text``.
METHOD_VARIABLE = "NORTHWIND_DIGEST_METHOD"
_METHOD_CHOICES = {"hash": digest_hash.METHOD, "text": METHOD}
#: Which extracts compute content digests: ``postgres`` (the default), ``all`` or ``off``.
DIGEST_VARIABLE = "NORTHWIND_CONTENT_DIGEST"
#: The setting's values and the data-tree sources (extracts) each turns digests on for. The CSV's
#: digest is off by default: hashed in Python, it costs its extract more than its data part
#: (docs/benchmark.md, "Figures behind the code").
DIGEST_SOURCES = {"postgres": {"postgres"}, "all": {"postgres", "csv"}, "off": set()}
DEFAULT_DIGESTS = "postgres"
#: Settings that fix the text of every value whose text depends on settings.
TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


def digests_enabled(source: str, value: str | None = None) -> bool:
    """Whether the extract of ``source`` computes content digests (``NORTHWIND_CONTENT_DIGEST``).

    Example:
        >>> digests_enabled("postgres"), digests_enabled("csv"), digests_enabled("csv", "all")
        (True, False, True)
    """
    if value is None:
        value = os.environ.get(DIGEST_VARIABLE, "")
    chosen = value.strip().lower() or DEFAULT_DIGESTS
    if chosen not in DIGEST_SOURCES:
        raise SettingError(f"{DIGEST_VARIABLE}={value!r} must be one of "
                           f"{', '.join(DIGEST_SOURCES)} (default {DEFAULT_DIGESTS})")
    return source in DIGEST_SOURCES[chosen]


def source_method(cur, value: str | None = None) -> str:
    """The method an extract computes on the source of ``cur`` (``NORTHWIND_DIGEST_METHOD``).

    The binary method needs a UTF-8 server (it hashes the bytes of text) of PostgreSQL 11 or
    later; other sources get the text method.
    """
    if value is None:
        value = os.environ.get(METHOD_VARIABLE, "")
    chosen = value.strip().lower() or "hash"
    if chosen not in _METHOD_CHOICES:
        raise SettingError(f"{METHOD_VARIABLE}={value!r} must be one of "
                           f"{', '.join(_METHOD_CHOICES)} (default hash)")
    if chosen == "hash":
        cur.execute("SELECT current_setting('server_encoding') = 'UTF8' "
                    "AND current_setting('server_version_num')::int >= 110000")
        if not cur.fetchone()[0]:
            chosen = "text"
    return _METHOD_CHOICES[chosen]


@dataclass(frozen=True)
class Digest:
    """The row count and the sum of the 64-bit row hashes of one table's rows, by ``method``."""

    rows: int
    sum: int
    method: str = METHOD

    def to_json(self) -> dict[str, Any]:
        """The manifest's form (the sum as a string: it outgrows JSON's safe integers)."""
        return {"method": self.method, "rows": self.rows, "sum": str(self.sum)}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Digest | None:
        """The digest of a manifest, or None when it has none (or one of an unknown method)."""
        if not value or value.get("method") not in METHODS:
            return None
        return cls(int(value["rows"]), int(value["sum"]), value["method"])

    def __str__(self) -> str:
        return f"{self.rows} rows, sum {self.sum}"


def _money_as_numeric(column: Column, expression: sql.Composable) -> sql.Composable:
    if column.type_name in ("money", "_money"):
        return sql.SQL("{}::{}").format(expression, sql.SQL(
            "numeric[]" if column.type_name == "_money" else "numeric"))
    return expression


def source_expression(column: Column) -> sql.Composable:
    """A source column as the digest reads it: itself (money as numeric)."""
    return _money_as_numeric(column, sql.Identifier(column.name))


def warehouse_expression(column: Column) -> sql.Composable:
    """A warehouse column cast back to its source type (varchar(n) as text: no truncation)."""
    target = column.sql_type
    if column.type_name in ("varchar", "_varchar"):
        target = "text[]" if column.type_name == "_varchar" else "text"
    cast = sql.SQL("CAST({} AS {})").format(sql.Identifier(column.name), sql.SQL(target))
    return _money_as_numeric(column, cast)


def digest_query(table: sql.Composable, expressions: Sequence[sql.Composable],
                 where: sql.Composable | None = None, utf8: bool = True, method: str = METHOD,
                 columns: Sequence[Column] = ()) -> sql.Composed:
    """``SELECT count(*), sum(<row hash>) FROM <table> [WHERE ...]`` of ``method``'s definition.

    ``expressions`` are the columns in their source types; the binary method also needs the
    ``columns`` they read (their types choose the hash of each).
    """
    if method == digest_hash.METHOD:
        if not utf8:
            raise SettingError(f"content digest {method} hashes text as UTF-8 and this server's "
                               f"encoding is not UTF8: extract with {METHOD_VARIABLE}=text")
        row_hash = digest_hash.row_hash(columns, expressions)
    else:
        text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(expressions))
        if not utf8:  # md5 hashes the server's bytes: hash UTF-8 like every other side
            text = sql.SQL("convert_to({}, 'UTF8')").format(text)
        # The cast to bit(64) keeps the first 64 of the 128 bits (cheaper than left() first).
        row_hash = sql.SQL("('x' || md5({}))::bit(64)::bigint").format(text)
    return sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {}{}").format(
        row_hash, table, sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""))


@contextmanager
def text_settings(cur) -> Iterator[bool]:
    """Apply :data:`TEXT_SETTINGS` for the current transaction, restoring the old values after.

    Yields:
        Whether the server's encoding is UTF-8 (see :func:`digest_query`).
    """
    cur.execute("SELECT current_setting('server_encoding') = 'UTF8', "
                + ", ".join(f"current_setting('{name}')" for name in TEXT_SETTINGS))
    utf8, *before = cur.fetchone()
    for name, value in TEXT_SETTINGS.items():
        cur.execute("SELECT set_config(%s, %s, true)", (name, value))
    try:
        yield utf8
    finally:
        if cur.connection.info.transaction_status == TransactionStatus.INTRANS:
            for name, value in zip(TEXT_SETTINGS, before, strict=True):
                cur.execute("SELECT set_config(%s, %s, true)", (name, value))


def table_digest(cur, table: sql.Composable, expressions: Sequence[sql.Composable],
                 where: sql.Composable | None = None, method: str = METHOD,
                 columns: Sequence[Column] = ()) -> Digest:
    """Compute the digest of ``table``'s rows (optionally ``where``) in the cursor's transaction.

    Args:
        cur: A cursor; the digest runs in its transaction.
        table: The relation to read.
        expressions: Each column in its source type (:func:`source_expression`,
            :func:`warehouse_expression`).
        where: An optional condition on the rows.
        method: One of :data:`METHODS`.
        columns: The columns ``expressions`` read (needed by the binary method).
    """
    if method not in METHODS:
        raise SettingError(f"unknown content digest method {method!r}")
    with text_settings(cur) as utf8:
        cur.execute(digest_query(table, expressions, where, utf8, method, columns))
        rows, total = cur.fetchone()
    return Digest(int(rows), int(total), method)


# --- The CSV side: PostgreSQL's text of typed Arrow values, hashed in Python ----------------------

#: Characters that make record output quote a field (rowtypes.c: record_out).
_NEEDS_QUOTES = r'["\\(),\t\n\v\f\r ]'
#: Decimal exponents printed positionally by float4out / float8out (Ryu, shortest exact).
_FIXED_LIMIT = {"float4": 6, "float8": 15}


def float_text(shortest: str, type_name: str) -> str:
    """PostgreSQL's text of a float given its shortest round-trip digits in any notation.

    Example:
        >>> float_text("1e+14", "float8"), float_text("0.00001", "float4"), float_text("1.5", "float4")
        ('100000000000000', '1e-05', '1.5')
    """
    special = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}.get(shortest.lower())
    if special:
        return special
    sign, digits, exponent = decimal.Decimal(shortest).as_tuple()
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    minus = "-" if sign else ""
    if digits == (0,):
        return minus + "0"
    scientific = len(digits) - 1 + exponent
    if -4 <= scientific < _FIXED_LIMIT[type_name]:
        return minus + format(decimal.Decimal((0, digits, exponent)), "f")
    text = "".join(map(str, digits))
    mantissa = text[0] + (f".{text[1:]}" if len(text) > 1 else "")
    return f"{minus}{mantissa}e{'-' if scientific < 0 else '+'}{abs(scientific):02d}"


def numeric_text(text: str) -> str:
    """PostgreSQL's text of an unconstrained numeric written as ``text`` (``1e3`` is ``1000``)."""
    value = decimal.Decimal(text.strip())
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value < 0 else "Infinity"
    return format(abs(value) if value.is_zero() else value, "f")


def _per_distinct(array: pa.Array, render) -> pa.Array:
    """Render each distinct value in Python once (floats repeat a lot) and spread the results.

    ``render`` gets the distinct values as Arrow renders them as strings.
    """
    distinct = pc.unique(array)
    texts = distinct.cast(pa.string()).to_pylist()
    rendered = pa.array([None if v is None else render(v) for v in texts], pa.string())
    return pc.take(rendered, pc.index_in(array, distinct))


def _field_text(column: Column, array: pa.Array) -> pa.Array:
    """A column's values as record output's fields: PostgreSQL's text, quoted where needed."""
    kind = column.type_name
    if kind in ("float4", "float8") and not pa.types.is_string(array.type):
        text = _per_distinct(array, lambda v: float_text(v, kind))
    elif kind == "numeric" and pa.types.is_string(array.type):
        text = _per_distinct(array, numeric_text)
    elif pa.types.is_boolean(array.type):
        text = pc.if_else(array, "t", "f")
    elif pa.types.is_timestamp(array.type):
        text = pc.replace_substring_regex(array.cast(pa.string()), r"Z$", "")
        text = pc.replace_substring_regex(text, r"\.0+$", "")
        text = pc.replace_substring_regex(text, r"(\.\d*[1-9])0+$", r"\1")
        if array.type.tz is not None:
            text = pc.binary_join_element_wise(text, "+00", "")
    else:
        text = array.cast(pa.string())
    if not (pa.types.is_string(array.type) or pa.types.is_timestamp(array.type)):
        return text  # numbers, booleans and ISO dates never need quotes
    escaped = pc.replace_substring_regex(text, r'(["\\])', r"\1\1")
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    needs = pc.or_(pc.match_substring_regex(text, _NEEDS_QUOTES), pc.equal(text, ""))
    return pc.if_else(needs, quoted, text)


def row_texts(columns: Sequence[Column], batch: pa.RecordBatch) -> pa.Array:
    """``ROW(...)::text`` of every row of ``batch`` (typed as :func:`pgtypes.arrow_schema` does)."""
    if not columns:
        return pa.array(["()"] * batch.num_rows, pa.string())
    fields = [_field_text(c, a) for c, a in zip(columns, batch.columns, strict=True)]
    joined = pc.binary_join_element_wise(*fields, ",", null_handling="replace",
                                         null_replacement="")
    return pc.binary_join_element_wise("(", joined, ")", "")


class ArrowDigest:
    """The digest of typed Arrow batches, equal to :func:`table_digest` over the same rows.

    With ``background``, batches are hashed by a thread of their own: MD5 of short texts holds the
    GIL, but Arrow's parsing and Parquet writing release it, so the two overlap. At most
    :data:`PENDING_BATCHES` wait, which bounds the memory they hold.
    """

    PENDING_BATCHES = 2

    def __init__(self, columns: Sequence[Column], background: bool = False):
        self.columns = list(columns)
        self.rows = 0
        self.sum = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="digest") if background else None
        self._pending: list[Future] = []

    def add(self, batch: pa.RecordBatch) -> None:
        """Hash the rows of ``batch`` (or queue them, in the background)."""
        if self._pool is None:
            self._hash(batch)
            return
        if len(self._pending) >= self.PENDING_BATCHES:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._hash, batch))

    def _hash(self, batch: pa.RecordBatch) -> None:
        md5, to_int = hashlib.md5, int.from_bytes
        texts = row_texts(self.columns, batch).cast(pa.binary())  # UTF-8 bytes, no re-encoding
        self.sum += sum(to_int(md5(text).digest()[:8], "big", signed=True)
                        for text in texts.to_pylist())
        self.rows += batch.num_rows

    def digest(self) -> Digest:
        """The digest of every row added (waits for the batches still being hashed)."""
        while self._pending:
            self._pending.pop(0).result()
        return Digest(self.rows, self.sum)

    def close(self) -> None:
        """End the background thread (after :meth:`digest`, or to give up)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

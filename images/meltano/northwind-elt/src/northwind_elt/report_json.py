r"""The report's JSON array built from its CSV file, byte for byte what ``row_to_json`` gives.

Having the server render every row with ``row_to_json`` costs it more CPU than the report query
itself (docs/benchmark.md, "Figures behind the code"), and that text then crosses the socket. For
columns whose CSV text becomes JSON text without a type conversion (integers, numeric, real, double
precision, character types, boolean, ISO dates) the JSON is derived here from the CSV the step has
just written, with Arrow's compute kernels, batch by batch (bounded memory). It follows
PostgreSQL's rules (``datum_to_json``): a number whose text is a valid JSON number is written as
is, any other (``NaN``, ``Infinity``) as a string; a string is escaped like ``escape_json``
(``\"``, ``\\``, ``\b \f \n \r \t``, other control characters ``\u00xx``); ``t``/``f`` become
``true``/``false``; NULL becomes ``null``.

A column of any other type (timestamps, arrays, JSON...) or a value outside those forms (a BC
date) makes :func:`write_json_from_csv` return None, and the caller asks the server instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from northwind_elt.copy_binary import value_bytes

#: Type OIDs (pg_type) by how their CSV text becomes JSON.
NUMBERS = frozenset({20, 21, 23, 700, 701, 1700})  # int8, int2, int4, float4, float8, numeric
STRINGS = frozenset({25, 1042, 1043})  # text, character, character varying
BOOLEAN = 16
DATE = 1082
SUPPORTED = NUMBERS | STRINGS | {BOOLEAN, DATE}

#: The only number texts (float4/float8/numeric output) that are not JSON numbers: quoted.
_NOT_JSON_NUMBERS = pa.array(["NaN", "Infinity", "-Infinity"])
#: Under DateStyle ISO a date's CSV text equals its JSON text when it is ``YYYY-MM-DD`` (10
#: characters) or infinite; a BC date or a five-digit year is written otherwise: refused.
_PLAIN_DATE_LENGTH = 10
_INFINITE_DATES = pa.array(["infinity", "-infinity"])
#: Integer output is always a JSON number.
_INTEGERS = frozenset({20, 21, 23})
#: escape_json's escapes: two-character ones, then ``\u00xx`` for other control characters.
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t"}
_ESCAPES = _SHORT_ESCAPES | {chr(c): f"\\u{c:04x}" for c in range(1, 32) if chr(c) not in _SHORT_ESCAPES}
_NEEDS_ESCAPE = "[" + "".join("\\" + c if c in '\\"' else c for c in _ESCAPES) + "]"
#: Bytes of CSV read per batch: the batch's JSON is larger still (every object repeats the keys).
#: Arrow's reader holds many blocks read ahead of the batches: larger ones raised the report's
#: memory and were no faster (docs/benchmark.md, "Figures behind the code").
BLOCK_SIZE = 1 << 20


def escape_json(text: str) -> str:
    """``text`` as a JSON string literal, exactly as PostgreSQL's ``escape_json`` writes it."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in text) + '"'


def supported(types: Sequence[int]) -> bool:
    """Whether every column type's CSV text maps to its JSON text here."""
    return all(oid in SUPPORTED for oid in types)


def write_json_from_csv(csv_path: Path | io.RawIOBase, names: Sequence[str], types: Sequence[int],
                        json_path: Path, wrote: Callable[[], None] | None = None) -> int | None:
    """Write the JSON array of the rows of ``csv_path`` (with a header) to ``json_path``.

    The file is only appended to (another thread may upload it as it grows).

    Args:
        csv_path: A CSV file as ``COPY ... (FORMAT csv, HEADER)`` writes it, in UTF-8 (a path,
            or a :class:`northwind_elt.treefs.GrowingFile` still being written).
        names: The columns' names, in order (the objects' keys).
        types: The columns' type OIDs, each one of :data:`SUPPORTED`.
        json_path: Where the array goes: ``[``, one object per line ending ``,`` but the last, ``]``.
        wrote: Called after each batch, once it is in the file.

    Returns:
        The rows written, or None when a value has no plain JSON form here (nothing usable is
        left at ``json_path`` then).
    """
    columns = [f"c{i}" for i in range(len(names))]  # the names may repeat; the reader's may not
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=BLOCK_SIZE),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        # Every value as its text: an unquoted empty field is NULL, a quoted one the empty string.
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()),
                                             null_values=[""], strings_can_be_null=True,
                                             quoted_strings_can_be_null=False),
    )
    keys = [("{" if i == 0 else ",") + escape_json(name) + ":" for i, name in enumerate(names)]
    rows = 0
    with open(json_path, "wb") as out:
        out.write(b"[\n")
        for batch in reader:
            if not batch.num_rows:
                continue
            pieces = _Pieces()
            for key, oid, values in zip(keys, types, batch.columns, strict=True):
                pieces.literal(key)
                if not _encode(pieces, values, oid):
                    return None
            pieces.literal("},\n")
            if rows:
                out.write(b",\n")  # the previous batch's last object was not the last one
            out.write(value_bytes(pieces.join())[:-2])  # its own last comma waits for the next batch
            rows += batch.num_rows
            if wrote is not None:
                out.flush()
                wrote()
        out.write(b"\n]\n" if rows else b"]\n")
    return rows


class _Pieces:
    """Literal text and per-row arrays, joined row by row; adjacent literals are merged."""

    def __init__(self) -> None:
        self.parts: list = [""]

    def literal(self, text: str) -> None:
        if isinstance(self.parts[-1], str):
            self.parts[-1] += text
        else:
            self.parts.append(text)

    def values(self, array: pa.Array) -> None:
        self.parts.append(array)

    def join(self) -> pa.Array:
        return pc.binary_join_element_wise(*self.parts, "")


def _encode(pieces: _Pieces, values: pa.Array, oid: int) -> bool:
    """Add one column's JSON text per row to ``pieces``; False when a value has no plain form."""
    if oid in _INTEGERS:
        return _add(pieces, values, quote=False)
    if oid in NUMBERS:
        special = pc.is_in(values, _NOT_JSON_NUMBERS)
        if not pc.any(special).as_py():
            return _add(pieces, values, quote=False)
        pieces.values(pc.fill_null(pc.if_else(special, _quoted(values), values), "null"))
        return True
    if oid == BOOLEAN:
        other = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, pa.array(["t", "f"]))))
        if pc.any(other).as_py():
            return False
        pieces.values(pc.fill_null(pc.if_else(pc.equal(values, "t"), "true", "false"), "null"))
        return True
    if oid == DATE:
        plain = pc.or_(pc.equal(pc.utf8_length(values), _PLAIN_DATE_LENGTH),
                       pc.is_in(values, _INFINITE_DATES))
        if pc.all(plain).as_py() is False:
            return False
        return _add(pieces, values, quote=True)
    if oid in STRINGS:
        if pc.any(pc.match_substring_regex(values, _NEEDS_ESCAPE)).as_py():
            for raw, escaped in _ESCAPES.items():
                values = pc.replace_substring(values, raw, escaped)
        return _add(pieces, values, quote=True)
    return False


def _add(pieces: _Pieces, values: pa.Array, *, quote: bool) -> bool:
    """Add ``values`` as they are (quoted if ``quote``), NULL as ``null``."""
    if values.null_count:
        pieces.values(pc.fill_null(_quoted(values) if quote else values, "null"))
    elif quote:  # the quotes join the literals around the values: no array is built for them
        pieces.literal('"')
        pieces.values(values)
        pieces.literal('"')
    else:
        pieces.values(values)
    return True


def _quoted(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', values, '"', "")


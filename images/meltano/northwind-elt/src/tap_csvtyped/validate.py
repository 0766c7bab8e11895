"""Find exactly what is wrong with a CSV file: the line, the column and the value.

Arrow parses the file fast but says only *that* a value is bad. When it refuses a file, this module
reads the file once more, line by line, to name the first bad line and column.
"""

import csv
import datetime as dt
import decimal
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from northwind_elt.errors import InputError
from northwind_elt.pgtypes import Column, numeric_precision_scale, varchar_length

_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_RANGES = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1),
           "int8": (-(2**63), 2**63 - 1)}
_FLOAT4_MAX = 3.4028234663852886e38
_BOOLEANS = {"t", "f", "true", "false"}
#: Arrow's refusal of a value: ``In CSV column #1: CSV conversion error to int16: invalid value '10``
#: (0-based column, no line; the value may hold the newline of a quoted field).
_ARROW_REFUSAL = re.compile(r"In CSV column #(\d+): CSV conversion error to \w+: invalid value '(.*)",
                            re.DOTALL)

# Arrow reads fields of any size; the record-by-record reader must not refuse them (its default
# limit is 128 KiB, and its refusal names no column).
csv.field_size_limit(sys.maxsize)


def value_problem(column: Column, text: str) -> str | None:
    """Why ``text`` is not a valid value of ``column``, or None if it is (empty means NULL)."""
    if text == "":
        return None if column.nullable else "is empty, but the column is NOT NULL"
    kind = column.type_name
    if kind in _RANGES:
        if not _INTEGER.fullmatch(text):
            return f"{text!r} is not an integer"
        low, high = _RANGES[kind]
        if not low <= int(text) <= high:
            return f"{text} is out of range for {column.sql_type} ({low}..{high})"
    elif kind in ("float4", "float8"):
        try:
            number = float(text)
        except ValueError:
            return f"{text!r} is not a number"
        if not math.isfinite(number) or (kind == "float4" and abs(number) > _FLOAT4_MAX):
            return f"{text} is not a finite {column.sql_type}"
    elif kind == "numeric":
        try:
            number = decimal.Decimal(text)
        except decimal.InvalidOperation:
            return f"{text!r} is not a number"
        ps = numeric_precision_scale(column.typmod)
        if ps and not number.is_finite():
            return f"{text} is not a finite number"
        if ps and number.is_finite() and abs(number) >= decimal.Decimal(10) ** (ps[0] - ps[1]):
            return f"{text} does not fit {column.sql_type}"
    elif kind == "bool" and text.lower() not in _BOOLEANS:
        return f"{text!r} is not a boolean (t, f, true, false)"
    elif kind == "date":
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            return f"{text!r} is not a date (YYYY-MM-DD)"
    elif kind in ("timestamp", "timestamptz"):
        try:
            dt.datetime.fromisoformat(text)
        except ValueError:
            return f"{text!r} is not a timestamp (ISO 8601)"
    elif (limit := varchar_length(column)) is not None and len(text) > limit:
        return f"value of {len(text)} characters is longer than {column.sql_type}"
    return None


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """Each record after the header with the line it starts on; a quoted value may span lines."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        handle.readline()  # the header is checked before Arrow reads the file
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        while True:
            start = reader.line_num + 2
            try:
                yield start, next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield start, error
                return


def first_problem(path: Path, columns: list[Column], delimiter: str = ",") -> str | None:
    """Read ``path`` record by record; describe its first bad line, or None if all are valid."""
    names = [c.name for c in columns]
    for number, fields in _records(path, delimiter):
        if isinstance(fields, csv.Error):
            return f"line {number}: not valid CSV: {fields}"
        if len(fields) != len(columns):
            text = delimiter.join(fields).encode(errors="surrogateescape").decode(errors="replace")
            shown = text if len(text) <= 80 else text[:77] + "..."
            return (f"line {number}: expected {len(columns)} columns ({', '.join(names)}), "
                    f"got {len(fields)}: {shown!r}")
        for column, value in zip(columns, fields, strict=True):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                return (f"line {number}, column {column.name}: not valid UTF-8 (byte "
                        f"0x{ord(value[error.start]) - 0xDC00:02x} at character {error.start + 1})")
            problem = value_problem(column, value)
            if problem:
                return f"line {number}, column {column.name}: {problem}"
    return None


def arrow_problem(path: Path, columns: list[Column], error: Exception, delimiter: str = ",") -> str:
    r"""Arrow's refusal of a value as ``line N, column NAME: ...``, the line found by a reread.

    Arrow refuses some values PostgreSQL would take (``"10\n"`` for an integer: surrounding
    whitespace), so :func:`first_problem` may see nothing wrong where Arrow does.
    """
    found = _ARROW_REFUSAL.search(str(error))
    if found is None or int(found.group(1)) >= len(columns):
        return " ".join(str(error).split())
    index, value = int(found.group(1)), found.group(2).removesuffix("'")
    column = columns[index]
    what = f"column {column.name}: {value!r} is not a valid {column.sql_type}"
    for number, fields in _records(path, delimiter):
        if not isinstance(fields, csv.Error) and len(fields) > index and fields[index] == value:
            return f"line {number}, {what}"
    return what


def check_header(path: Path, columns: list[Column], delimiter: str = ",") -> None:
    """Refuse an empty file or a header that is not exactly the declared column names."""
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first:
        raise InputError(f"{path}: the file is empty; expected a header line "
                         f"{delimiter.join(c.name for c in columns)!r}")
    try:
        text = first.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputError(f"{path}: line 1 (header) is not valid UTF-8") from None
    header = next(csv.reader([text], delimiter=delimiter), [])
    expected = [c.name for c in columns]
    if header != expected:
        raise InputError(f"{path}: line 1: the header is {header}, expected {expected}")

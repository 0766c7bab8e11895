"""Allow-list of the domain CHECK constraints the warehouse recreates from a manifest.

A domain's ``CHECK`` text travels in Parquet metadata and becomes warehouse DDL, so it is parsed
here into tokens and only a known shape passes: ``VALUE``, literals, casts to type names,
comparison, pattern and arithmetic operators, ``AND``/``OR``/``NOT``, ``IS [NOT] NULL``,
``IN``/``ANY (ARRAY[...])``, ``BETWEEN``, and a few pure functions of strings and numbers.
Anything else (another function, a subquery, a comment, a second statement, unbalanced
parentheses) is refused before the warehouse sees it.
"""

import re

#: One token of pg_get_constraintdef()'s output, in the order they are tried.
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--|/\*)
  | (?P<string>[eE]'(?:[^'\\]|''|\\.)*'|'(?:[^']|'')*')
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<cast>::)
  | (?P<operator><=|>=|<>|!=|!~~\*|~~\*|!~~|~~|!~\*|~\*|!~|\|\||[=<>~+\-*/%])
  | (?P<punct>[(),.\[\]])
""", re.VERBOSE)

#: Keywords an expression over VALUE may use.
_KEYWORDS = frozenset({"value", "and", "or", "not", "is", "null", "true", "false", "in",
                       "between", "symmetric", "any", "all", "array", "like", "ilike", "similar",
                       "to", "escape", "distinct", "from", "unknown"})
#: Functions that read only their arguments (no tables, files, settings, time or randomness).
_FUNCTIONS = frozenset({"length", "char_length", "character_length", "octet_length", "lower",
                        "upper", "btrim", "ltrim", "rtrim", "abs", "round", "trunc", "floor",
                        "ceil", "ceiling", "mod", "left", "right", "substr", "strpos"})
#: Words that continue a multi-word type name after ``::`` (``character varying``...).
_TYPE_WORDS = frozenset({"varying", "precision", "with", "without", "time", "zone"})

_CHECK = re.compile(r"CHECK \((?P<expression>.*)\)(?P<not_valid> NOT VALID)?", re.DOTALL)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) of every token but spaces (standard strings: a backslash is no escape).

    Raises:
        ValueError: At a character no token starts with (``;``, ``$``...) or a comment.
    """
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"unexpected {text[position:position + 10]!r}")
        if match.lastgroup == "comment":
            raise ValueError("a comment is not allowed")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
        position = match.end()
    return tokens


def _skip_type(tokens: list[tuple[str, str]], index: int) -> int:
    """The index after the type name that starts at ``index`` (after ``::``)."""
    if index >= len(tokens) or tokens[index][0] not in ("word", "quoted"):
        raise ValueError("a cast without a type name")
    index += 1
    while index + 1 < len(tokens) and tokens[index] == ("punct", ".") and \
            tokens[index + 1][0] in ("word", "quoted"):
        index += 2
    while index < len(tokens) and tokens[index][0] == "word" and tokens[index][1].lower() in _TYPE_WORDS:
        index += 1
    if index < len(tokens) and tokens[index] == ("punct", "(") and index + 1 < len(tokens) and \
            tokens[index + 1][0] == "number":
        index += 2
        if tokens[index:index + 2] and tokens[index] == ("punct", ",") and tokens[index + 1][0] == "number":
            index += 2
        if index >= len(tokens) or tokens[index] != ("punct", ")"):
            raise ValueError("an unclosed type modifier")
        index += 1
    while tokens[index:index + 2] == [("punct", "["), ("punct", "]")]:
        index += 2
    return index


def check_expression(text: str) -> None:
    """Accept ``text``, a ``pg_get_constraintdef()`` of a domain CHECK, if it has an allowed shape.

    Raises:
        ValueError: Saying what is not allowed.

    Example:
        >>> check_expression("CHECK (((VALUE >= 1901) AND (VALUE <= 2155)))")
        >>> check_expression("CHECK ((pg_sleep(1) IS NULL))")
        Traceback (most recent call last):
        ...
        ValueError: function pg_sleep is not allowed
    """
    match = _CHECK.fullmatch(text)
    if match is None:
        raise ValueError("not a CHECK constraint")
    tokens = _tokens(match.group("expression"))
    depth, index = 0, 0
    while index < len(tokens):
        kind, value = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "cast":
            index = _skip_type(tokens, index + 1)
            continue
        if kind == "word" and following == ("punct", "("):
            if value.lower() not in _FUNCTIONS and value.lower() not in _KEYWORDS:
                raise ValueError(f"function {value} is not allowed")
        elif kind == "word" and value.lower() not in _KEYWORDS:
            raise ValueError(f"{value} is not allowed")
        elif kind == "quoted":
            raise ValueError(f"identifier {value} is not allowed")
        elif kind == "punct" and value in "([":
            depth += 1
        elif kind == "punct" and value in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError("a parenthesis closes what it did not open")
        elif kind == "punct" and value == ".":
            raise ValueError("a qualified name is not allowed")
        index += 1
    if depth != 0:
        raise ValueError("unbalanced parentheses")

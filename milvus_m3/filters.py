"""Structured, injection-safe Milvus filter expressions.

``Filter(field, op, value)`` is one comparison; ``F`` builds them (``F.eq("lang", "en")``,
``F.in_("metadata.tags", ["a", "b"])``). ``render`` turns filters into the expression string Milvus
takes, plus the template parameters when the engine supports them:

    render(F.eq("lang", "en"), templates=True)   -> ('lang == {p0}', {'p0': 'en'})   # server >= 2.5
    render(F.eq("lang", "en"), templates=False)  -> ('lang == "en"', {})

Field names never reach the expression raw: each dotted part must be an identifier (or, after a JSON
field, an array index), and ``metadata.lang`` becomes ``metadata["lang"]``. Values are type-checked
(str, int, float, bool, or a non-empty list of one of them; NaN, infinities, NUL bytes and lone
surrogates refused) and either sent as template parameters or written as escaped literals.

String literals are escaped per engine dialect (``dialect="server"`` or ``"lite"``; the measured
differences are in ``_literals``).

Two Milvus Lite hazards shape what ``render`` accepts with ``dialect="lite"`` (measured on 2.5.1):
Lite has no filter templates, and when Lite rejects an expression that contains ``{`` or ``}`` its
error message is run through a format function that throws; a plain search then kills the embedded
server and a hybrid search answers with no result list at all. So a raw expression holding a brace
is refused for Lite (write that comparison as a structured Filter), and ``render(..., fields=...)``
checks structured filters against the collection's fields and types first, so the expressions it
writes are ones Lite accepts. (``text like 3`` also kills Lite's embedded server: refused by ``_rawfilter``.)

A raw expression string passes through unchanged (its author wrote it) once ``_rawfilter.check_raw``
found its parentheses balanced and its quotes closed; it can be combined with structured filters,
every part in parentheses, joined by ``and``.

This module imports neither pymilvus nor torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._checks import is_valid_utf8, short
from .errors import FilterError

# ---------------------------------------- literals
# Filter values as Milvus literals: value checks, ``literal()``, escaping per dialect, prefix bounds.
#
# String literals are not escaped the same way by every engine (checked against Milvus Lite 2.5.1 and
# the Milvus grammar and parser sources):
#
# * Both engines lex ``"..."`` with C-style escapes and forbid a raw CR or LF inside the quotes, and
#   both read ``\\`` as a backslash and ``\"`` as a double quote.
# * A Milvus server (Go) unquotes with ``strconv.Unquote``: ``\n``, ``\r``, ``\t`` and ``\uXXXX`` are
#   the characters they name. ``dialect="server"`` writes those.
# * Milvus Lite unquotes with C++ ``std::quoted``, which drops the backslash of any other escape:
#   ``"a\nb"`` is the text ``anb``, so an escaped newline would silently match the wrong rows. Lite
#   does accept a backslash followed by a raw newline (or CR LF) and reads it as that newline;
#   ``dialect="lite"`` writes that and every other character raw. A carriage return that is not
#   followed by a newline cannot be written for Lite at all: FilterError.
#
# Private: ``milvus_m3.filters`` re-exports ``literal`` and ``Dialect``. Imports neither pymilvus nor torch.

Scalar = str | int | float | bool
Dialect = Literal["server", "lite"]

INT64_MIN = -(2**63) + 1  # -2**63 itself cannot be written as a literal (it is -(2**63), which overflows)
INT64_MAX = 2**63 - 1


def literal(value: Scalar, *, dialect: Dialect = "server") -> str:
    """``value`` as a Milvus literal: ``true``/``false``, an int, a float, or an escaped string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return string_literal(value, dialect)
    raise FilterError(f"cannot write {type(value).__name__} {value!r} as a Milvus literal")


def string_literal(value: str, dialect: Dialect) -> str:
    """``value`` quoted and escaped the way ``dialect``'s parser reads it back (see the module docstring)."""
    check_text(value, where="value")
    if dialect == "lite":
        body = _LITE_ESCAPE.sub(_lite_escape, value)
        return f'"{body}"'
    return '"' + value.translate(_SERVER_ESCAPES) + '"'


_SERVER_ESCAPES: dict[int, str] = {
    **{c: f"\\u{c:04x}" for c in (*range(0x20), 0x7F)},
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}
"""Go strconv.Unquote escapes (also valid JSON): backslash, quote, control characters."""

_LITE_ESCAPE = re.compile(r'\r\n|[\\"\n\r]')


def _lite_escape(m: re.Match[str]) -> str:
    s = m.group(0)
    if s == "\r":
        raise FilterError(
            "a filter value holds a carriage return that is not followed by a newline; Milvus Lite cannot "
            "express that character in a filter. Normalise line endings (\\r\\n or \\n) in the stored data "
            "and the filter, or use a Milvus server"
        )
    # Backslash + raw LF (or CR LF) is Lite's only way to write a newline: std::quoted keeps the
    # character after a backslash, and the lexer allows a backslash-newline inside quotes.
    return "\\" + s


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None if unbounded)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not characters
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def check_text(value: str, *, where: str) -> None:
    """Refuse a string Milvus cannot hold: a NUL byte, or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        raise FilterError(f"filter {where} holds a NUL byte, which Milvus strings cannot hold; remove it")
    if not is_valid_utf8(value):
        raise FilterError(
            f"filter {where} is not valid UTF-8 (it holds a lone surrogate); fix the text's encoding"
        )


def check_scalar(field: str, value: Any) -> None:
    """Refuse a filter value Milvus cannot compare: not str/int/float/bool, out of int64, not finite."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise FilterError(f"filter on {field!r}: {value} does not fit in a Milvus int64")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(
                f"filter on {field!r}: value {value!r} is not finite; NaN and infinities cannot be compared"
            )
        return
    if isinstance(value, str):
        check_text(value, where=f"value for {field!r}")
        return
    raise FilterError(
        f"filter on {field!r}: value {short(repr(value), 80)} is a {type(value).__name__}; use str, int, float or "
        "bool (or a list of one of them with in / not in)"
    )


def category(value: Scalar) -> str:
    """ "bool", "int", "float" or "str" (bool first: it is an int too)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def check_members(field: str, op: str, value: Any) -> tuple[Scalar, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise FilterError(
            f"filter on {field!r}: {op} needs a list of values, got {type(value).__name__}; "
            f"write F.{'in_' if op == 'in' else 'not_in'}({field!r}, [value, ...])"
        )
    members = as_tuple(value)
    if not members:
        raise FilterError(
            f"filter on {field!r}: {op} [] with no values; an empty 'in' matches nothing and Milvus rejects "
            "it: skip the search (in) or drop the filter (not in)"
        )
    for v in members:
        check_scalar(field, v)
    kinds = {category(v) for v in members}
    if len(kinds) > 1:
        raise FilterError(
            f"filter on {field!r}: {op} list mixes {', '.join(sorted(kinds))} values; Milvus compares a list "
            "of one type only (use all ints or all floats, not both)"
        )
    return members


def as_tuple(values: Iterable[Scalar]) -> tuple[Scalar, ...]:
    if isinstance(values, (set, frozenset)):
        return tuple(sorted(values, key=lambda v: (category(v), v)))
    if isinstance(values, (str, bytes)):
        raise FilterError(
            f"expected a list of values, got the string {short(repr(values), 80)}; wrap it: [value]"
        )
    return tuple(values)


# ---------------------------------------- rawfilter
# Checks on raw filter expressions before ``filters.render`` combines them with other parts.
#
# A raw part is put in parentheses and joined to the others with ``and``; a part whose own parentheses
# do not balance could close that parenthesis and open another (``id != "" ) or ( id != ""`` turned a
# tenant filter into "every row"), and an unterminated string literal could swallow the parts after it.
# So, outside string literals, every ``(`` / ``[`` must be closed in order and every quote terminated.
# ``like`` must be followed by a string pattern: Milvus Lite's embedded engine dies on ``text like 3``
# (measured on 2.5.1), and every later call then fails as if the server were away.
#
# Private to ``filters.py``; imports neither pymilvus nor torch.

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', flags=re.DOTALL)
_LIKE = re.compile(r"\blike\b(?!\s*\"\")", flags=re.IGNORECASE)
_CLOSERS = {")": "(", "]": "["}


def strip_string_literals(expr: str) -> str:
    """``expr`` with the contents of its quoted strings removed (to look at the operators only)."""
    return _STRING.sub('""', expr)


def check_raw(raw: str) -> None:
    """FilterError when the raw expression ``raw`` could leak out of the parentheses it is put in."""
    bare = strip_string_literals(raw)
    shown = short(raw, 80)
    if '"' in bare.replace('""', "") or "'" in bare:
        raise FilterError(
            f"raw filter {shown!r} has a string literal that is never closed; close the quote "
            '(escape a quote inside a string as \\" ), or build the filter with milvus_m3.filters.F'
        )
    stack: list[str] = []
    for ch in bare:
        if ch in "([":
            stack.append(ch)
        elif ch in _CLOSERS and (not stack or stack.pop() != _CLOSERS[ch]):
            stack = ["unbalanced"]
            break
    if stack:
        raise FilterError(
            f"raw filter {shown!r} has unbalanced parentheses or brackets outside its string literals; "
            "a raw part is combined with the others as '(part) and (...)', so its own parentheses must "
            "close where they open. Fix the expression, or build it with milvus_m3.filters.F"
        )
    if _LIKE.search(bare):
        raise FilterError(
            f"raw filter {shown!r} uses 'like' without a string pattern after it; write e.g. "
            'text like "pre%" (Milvus Lite\'s engine stops on a non-string pattern), or use F.prefix'
        )


__all__ = [
    "FIELD_KINDS",
    "OPERATORS",
    "Dialect",
    "F",
    "FieldKind",
    "Filter",
    "FilterLike",
    "literal",
    "path_expr",
    "render",
]

Value = Scalar | tuple[Scalar, ...]
FieldKind = Literal["varchar", "int64", "double", "bool", "json"]

FIELD_KINDS: tuple[str, ...] = ("varchar", "int64", "double", "bool", "json")

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
RELATIONAL = ("<", "<=", ">", ">=")
MEMBERSHIP = ("in", "not in")
PREFIX = "prefix"
OPERATORS: tuple[str, ...] = (*COMPARISONS, *MEMBERSHIP, PREFIX)
"""What a Filter can say. ``prefix`` is ``field like "value%"`` with the value's wildcards neutralised."""

PARAM_PREFIX = "p"
"""Template parameters are named p0, p1, ... in the order the values appear."""

LIKE_WILDCARDS = frozenset("%_\\")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INDEX = re.compile(r"(0|[1-9][0-9]{0,8})\Z")
_PLACEHOLDER = re.compile(r"\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}")

RESERVED_WORDS = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "like",
        "LIKE",
        "exists",
        "EXISTS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "is",
        "IS",
        "json_contains",
        "JSON_CONTAINS",
        "json_contains_all",
        "JSON_CONTAINS_ALL",
        "json_contains_any",
        "JSON_CONTAINS_ANY",
        "array_contains",
        "ARRAY_CONTAINS",
        "array_contains_all",
        "ARRAY_CONTAINS_ALL",
        "array_contains_any",
        "ARRAY_CONTAINS_ANY",
        "array_length",
        "ARRAY_LENGTH",
        "text_match",
        "TEXT_MATCH",
    }
)
"""Words the Milvus lexer reads as operators or constants: a field with such a name cannot be filtered."""


# --------------------------------------------------------------------- the filter value


@dataclass(frozen=True)
class Filter:
    """One comparison ``field op value``. Checked on construction; raises FilterError naming the fix.

    field: a column name (``lang``) or a path into a JSON column (``metadata.lang``,
        ``metadata.tags.0``).
    op: one of ``OPERATORS``.
    value: str, int, float or bool; for ``in`` / ``not in`` a non-empty list of one of those types
        (stored as a tuple).
    """

    field: str
    op: str
    value: Value

    def __post_init__(self) -> None:
        path = _parse_path(self.field)
        if self.op not in OPERATORS:
            raise FilterError(
                f"filter on {self.field!r}: unknown operator {self.op!r}; use one of {', '.join(OPERATORS)}"
            )
        if self.op in MEMBERSHIP:
            object.__setattr__(self, "value", check_members(self.field, self.op, self.value))
        else:
            check_scalar(self.field, self.value)
            if self.op in RELATIONAL and isinstance(self.value, bool):
                raise FilterError(
                    f"filter on {self.field!r}: {self.op} needs a number or a string, not a bool; "
                    "use == or != for booleans"
                )
            if self.op == PREFIX and not isinstance(self.value, str):
                raise FilterError(
                    f"filter on {self.field!r}: prefix needs a string value, got {type(self.value).__name__}"
                )
        object.__setattr__(self, "_path", path)

    @property
    def path(self) -> tuple[str, ...]:
        """The field split at dots: ("metadata", "lang")."""
        path: tuple[str, ...] = object.__getattribute__(self, "_path")
        return path

    @property
    def root(self) -> str:
        """The collection field the filter reads (the first part of the path)."""
        return self.path[0]


class F:
    """Builders for Filter: ``F.eq("lang", "en")``, ``F.in_("metadata.tag", ["a", "b"])``."""

    @staticmethod
    def eq(field: str, value: Scalar) -> Filter:
        return Filter(field, "==", value)

    @staticmethod
    def ne(field: str, value: Scalar) -> Filter:
        return Filter(field, "!=", value)

    @staticmethod
    def lt(field: str, value: Scalar) -> Filter:
        return Filter(field, "<", value)

    @staticmethod
    def le(field: str, value: Scalar) -> Filter:
        return Filter(field, "<=", value)

    @staticmethod
    def gt(field: str, value: Scalar) -> Filter:
        return Filter(field, ">", value)

    @staticmethod
    def ge(field: str, value: Scalar) -> Filter:
        return Filter(field, ">=", value)

    @staticmethod
    def in_(field: str, values: Iterable[Scalar]) -> Filter:
        return Filter(field, "in", as_tuple(values))

    @staticmethod
    def not_in(field: str, values: Iterable[Scalar]) -> Filter:
        return Filter(field, "not in", as_tuple(values))

    @staticmethod
    def prefix(field: str, value: str) -> Filter:
        return Filter(field, PREFIX, value)


FilterLike = str | Filter | Sequence[str | Filter] | None
"""What ``render`` and the searcher take: a raw expression, a Filter, a list of both, or None."""


# --------------------------------------------------------------------- rendering


def render(
    filters: FilterLike,
    *,
    templates: bool,
    dialect: Dialect = "server",
    fields: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The Milvus expression for ``filters`` (all must hold) and its template parameters.

    templates: write ``{p0}`` placeholders and return the values as parameters (Milvus server >= 2.5);
        otherwise write escaped literals and return ``{}``.
    dialect: how string literals are escaped ("server" or "lite", see the module docstring).
    fields: column name -> kind ("varchar", "int64", "double", "bool", "json") of the collection;
        when given, every structured filter is checked against it (unknown column, path into a
        non-JSON column, value of the wrong type), so the engine never sees an expression it rejects.

    Returns ``("", {})`` for no filters.
    """
    if dialect not in ("server", "lite"):
        raise FilterError(f"dialect must be 'server' or 'lite', got {dialect!r}")
    if templates and dialect == "lite":
        raise FilterError("Milvus Lite has no filter templates; render with templates=False for Lite")
    parts: list[str] = []
    params: dict[str, Any] = {}
    for item in _items(filters):
        if isinstance(item, Filter):
            if fields is not None:
                _check_against(item, fields)
            kind = fields.get(item.root) if fields is not None else None
            parts.append(_render_one(item, kind, templates=templates, dialect=dialect, params=params))
        else:
            raw = item.strip()
            if not raw:
                continue
            if dialect == "lite" and ("{" in raw or "}" in raw):
                raise FilterError(
                    f"raw filter {short(raw, 80)!r} contains '{{' or '}}': Milvus Lite has no filter templates, "
                    "and when it rejects an expression holding a brace its embedded server fails instead of "
                    "answering. Write comparisons with such values as structured filters "
                    '(e.g. F.eq("title", "{draft}")), which are escaped and checked first'
                )
            check_raw(raw)
            if templates and _PLACEHOLDER.search(strip_string_literals(raw)):
                raise FilterError(
                    f"raw filter {short(raw, 80)!r} uses a template placeholder; milvus-m3 fills templates only "
                    "for structured filters. Write the value into the expression, or use F.eq(...) etc."
                )
            parts.append(raw)
    if not parts:
        return "", {}
    if len(parts) == 1:
        return parts[0], params
    return " and ".join(f"({p})" for p in parts), params


def path_expr(field: str) -> str:
    """``metadata.lang`` -> ``metadata["lang"]``; ``metadata.tags.0`` -> ``metadata["tags"][0]``."""
    path = _parse_path(field)
    out = path[0]
    for part in path[1:]:
        out += f"[{part}]" if part.isdigit() else f'["{part}"]'
    return out


def _render_one(
    f: Filter, kind: str | None, *, templates: bool, dialect: Dialect, params: dict[str, Any]
) -> str:
    lhs = path_expr(f.field)

    def value(v: Scalar) -> str:
        v = _coerce(v, kind)
        if templates:
            name = f"{PARAM_PREFIX}{len(params)}"
            params[name] = v
            return "{" + name + "}"
        return literal(v, dialect=dialect)

    if f.op in MEMBERSHIP:
        members = f.value if isinstance(f.value, tuple) else (f.value,)
        if templates:
            name = f"{PARAM_PREFIX}{len(params)}"
            params[name] = [_coerce(v, kind) for v in members]
            return f"{lhs} {f.op} {{{name}}}"
        return (
            f"{lhs} {f.op} [" + ", ".join(literal(_coerce(v, kind), dialect=dialect) for v in members) + "]"
        )
    if f.op == PREFIX:
        assert isinstance(f.value, str)
        return _render_prefix(lhs, f.value, value, dialect="server" if templates else dialect)
    assert not isinstance(f.value, tuple)
    return f"{lhs} {f.op} {value(f.value)}"


def _render_prefix(lhs: str, prefix: str, value: Callable[[Scalar], str], *, dialect: Dialect) -> str:
    """``like "p%"`` when the prefix holds no wildcard or backslash, else a half-open string range.

    Milvus Lite turns ``like "a\\%b%"`` into a prefix match on the text ``a\\%b`` (backslash
    included), so escaped wildcards do not work there, and it reads ``like "%"`` as ``== "%"``;
    ``lhs >= "a%b" and lhs < "a%c"`` selects exactly the strings that start with ``a%b`` on every
    engine (strings compare by UTF-8 bytes, which is code point order), and ``lhs >= ""`` every string.
    A like pattern is always a literal: the grammar has no template for it.
    """
    if prefix and not LIKE_WILDCARDS.intersection(prefix):
        return f"{lhs} like {string_literal(prefix + '%', dialect)}"
    upper = successor(prefix)
    low = f"{lhs} >= {value(prefix)}"
    if upper is None:
        return low
    return f"({low} and {lhs} < {value(upper)})"


# --------------------------------------------------------------------- checks


def _parse_path(field: Any) -> tuple[str, ...]:
    if not isinstance(field, str) or not field:
        raise FilterError(
            f"filter field must be a non-empty string like 'lang' or 'metadata.lang', got {field!r}"
        )
    parts = tuple(field.split("."))
    root = parts[0]
    if not _IDENT.match(root):
        raise FilterError(
            f"filter field {field!r}: {root!r} is not a field name (letters, digits, underscores, not starting "
            "with a digit); JSON keys go after a dot: metadata.lang"
        )
    if root in RESERVED_WORDS:
        raise FilterError(
            f"filter field {field!r}: {root!r} is a word of the Milvus expression language and cannot be "
            "filtered as a field; rename the field"
        )
    for part in parts[1:]:
        if not (_IDENT.match(part) or _INDEX.match(part)):
            raise FilterError(
                f"filter field {field!r}: JSON path part {part!r} must be an identifier (letters, digits, "
                "underscores) or an array index (0, 1, ...); rename the metadata key"
            )
    return parts


def _check_against(f: Filter, fields: Mapping[str, str]) -> None:
    kind = fields.get(f.root)
    if kind is None:
        known = ", ".join(sorted(fields)) or "none"
        raise FilterError(
            f"filter on {f.field!r}: the collection has no filterable field {f.root!r} (filterable: {known}); "
            f"free-form values live in metadata: filter on 'metadata.{f.root}'"
        )
    if kind == "json":
        if len(f.path) == 1:
            raise FilterError(
                f"filter on {f.field!r}: {f.root!r} is a JSON field; give a key path such as '{f.root}.lang'"
            )
        return
    if len(f.path) > 1:
        raise FilterError(
            f"filter on {f.field!r}: {f.root!r} is a {kind} field, not JSON; a dotted path only works into "
            "the metadata JSON field"
        )
    values = f.value if isinstance(f.value, tuple) else (f.value,)
    for v in values:
        cat = category(v)
        ok = (
            (kind == "varchar" and cat == "str")
            or (kind == "int64" and cat == "int")
            or (kind == "double" and cat in ("int", "float"))
            or (kind == "bool" and cat == "bool")
        )
        if not ok:
            want = {"varchar": "a string", "int64": "an int", "double": "a number", "bool": "a bool"}.get(
                kind, kind
            )
            raise FilterError(
                f"filter on {f.field!r}: the field is {kind} but the value {short(repr(v), 80)} is a {cat}; "
                f"give {want}"
            )
    if f.op == PREFIX and kind != "varchar":
        raise FilterError(f"filter on {f.field!r}: prefix works on string fields; {f.root!r} is {kind}")
    if kind == "bool" and f.op in RELATIONAL:
        raise FilterError(f"filter on {f.field!r}: {f.op} does not apply to a bool field; use == or !=")


def _coerce(value: Scalar, kind: str | None) -> Scalar:
    """A double field compares with float literals: Milvus asserts on an int inside a double ``in`` list."""
    if kind == "double" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _items(filters: FilterLike) -> list[str | Filter]:
    if filters is None:
        return []
    if isinstance(filters, (str, Filter)):
        return [filters]
    if isinstance(filters, Sequence):
        out: list[str | Filter] = []
        for i, item in enumerate(filters):
            if not isinstance(item, (str, Filter)):
                raise FilterError(
                    f"filter {i} is a {type(item).__name__}; give raw expression strings or Filter objects "
                    "(F.eq('lang', 'en'))"
                )
            out.append(item)
        return out
    raise FilterError(
        f"filter must be a raw expression string, a Filter, or a list of them; got {type(filters).__name__}"
    )

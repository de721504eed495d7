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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._literals import (
    Dialect,
    Scalar,
    as_tuple,
    category,
    check_members,
    check_scalar,
    literal,
    string_literal,
    successor,
)
from ._rawfilter import check_raw, strip_string_literals
from ._text import short
from .errors import FilterError

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

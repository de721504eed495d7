"""Filter values as Milvus literals: value checks, ``literal()``, escaping per dialect, prefix bounds.

String literals are not escaped the same way by every engine (checked against Milvus Lite 2.5.1 and
the Milvus grammar and parser sources):

* Both engines lex ``"..."`` with C-style escapes and forbid a raw CR or LF inside the quotes, and
  both read ``\\\\`` as a backslash and ``\\"`` as a double quote.
* A Milvus server (Go) unquotes with ``strconv.Unquote``: ``\\n``, ``\\r``, ``\\t`` and ``\\uXXXX`` are
  the characters they name. ``dialect="server"`` writes those.
* Milvus Lite unquotes with C++ ``std::quoted``, which drops the backslash of any other escape:
  ``"a\\nb"`` is the text ``anb``, so an escaped newline would silently match the wrong rows. Lite
  does accept a backslash followed by a raw newline (or CR LF) and reads it as that newline;
  ``dialect="lite"`` writes that and every other character raw. A carriage return that is not
  followed by a newline cannot be written for Lite at all: FilterError.

Private: ``milvus_m3.filters`` re-exports ``literal`` and ``Dialect``. Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Literal

from ._text import is_valid_utf8, short
from .errors import FilterError

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

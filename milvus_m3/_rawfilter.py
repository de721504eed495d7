"""Checks on raw filter expressions before ``filters.render`` combines them with other parts.

A raw part is put in parentheses and joined to the others with ``and``; a part whose own parentheses
do not balance could close that parenthesis and open another (``id != "" ) or ( id != ""`` turned a
tenant filter into "every row"), and an unterminated string literal could swallow the parts after it.
So, outside string literals, every ``(`` / ``[`` must be closed in order and every quote terminated.
``like`` must be followed by a string pattern: Milvus Lite's embedded engine dies on ``text like 3``
(measured on 2.5.1), and every later call then fails as if the server were away.

Private to ``filters.py``; imports neither pymilvus nor torch.
"""

from __future__ import annotations

import re

from ._text import short
from .errors import FilterError

__all__ = ["check_raw", "strip_string_literals"]

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

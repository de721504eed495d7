"""What Milvus cannot store in a JSON cell although ``json.dumps`` writes it: checked before any write.

Private to ``_rows.py`` (the ``metadata`` cell). Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._text import is_valid_utf8

__all__ = ["MAX_JSON_DEPTH", "json_problem"]

MAX_JSON_DEPTH = 64
"""Nesting levels a metadata value may have (deeper ones are refused before json.dumps recurses)."""


def json_problem(value: Any, depth: int = 0) -> str | None:
    """What Milvus (or JSON) cannot store in ``value``: a lone surrogate in a string or key, an int
    beyond int64, keys that become the same JSON key (``{1: "a", "1": "b"}``), nesting beyond
    ``MAX_JSON_DEPTH``. None when there is nothing; other types are left to ``json.dumps``."""
    if depth > MAX_JSON_DEPTH:
        return f"is nested deeper than {MAX_JSON_DEPTH} levels; flatten it"
    if isinstance(value, str):
        return None if is_valid_utf8(value) else "holds a string that is not valid UTF-8 (a lone surrogate)"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        ok = -(2**63) <= int(value) < 2**63
        return None if ok else f"holds the integer {int(value)}, beyond int64; store it as a string"
    if isinstance(value, Mapping):
        keys: dict[str, Any] = {}
        for key, item in value.items():
            name = (
                key
                if isinstance(key, str)
                else json.dumps(key)
                if isinstance(key, (int, float, bool))
                else None
            )
            if name is not None:
                if not is_valid_utf8(name):
                    return "has a key that is not valid UTF-8 (a lone surrogate)"
                if name in keys:
                    return (
                        f"has keys {keys[name]!r} and {key!r}, which are the same JSON key {name!r}; keep one"
                    )
                keys[name] = key
            problem = json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None

"""The checks every public entry point shares, in one place: texts ("is it a string", "is it empty",
"is it UTF-8"; ``CheckedTexts`` for texts already checked once) and options (ints, bools).

Private to the package: the public modules call these at their boundary so that bad input gets the
same message (field, row, fix) wherever it enters, and the layers below trust what passed. Imports
nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, InputError

__all__ = [
    "CheckedTexts",
    "check_bool",
    "check_int",
    "check_texts",
    "is_valid_utf8",
    "short",
    "utf8_error",
]


def check_bool(name: str, value: Any) -> bool:
    """``value`` when it is True or False (not 1, not "yes"), else a ConfigError naming ``name``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` when it is an int (not a bool) in [minimum, maximum], else a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be an int <= {maximum}, got {value!r}")
    return value


class CheckedTexts(tuple[str, ...]):
    """Texts checked once where they entered: every row a str, not blank, without NUL bytes, valid UTF-8.

    The ingest job builds it after its own per-record check (which names the file and line); the
    embedder (``check_texts``) and the manager's row check (``collection.rows.check_text``) trust it
    instead of checking each text again. Only the size against a collection stays to be checked.
    """

    __slots__ = ()


def short(text: object, limit: int = 120, *, squash: bool = False) -> str:
    """``text`` (or ``str(exc)``) cut to ``limit`` characters with "..."; ``squash`` folds whitespace runs."""
    out = str(text)
    if squash:
        out = " ".join(out.split())
    return out if len(out) <= limit else out[:limit] + "..."


def utf8_error(text: str) -> UnicodeEncodeError | None:
    """Why ``text`` cannot be written as UTF-8 (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err
    return None


def is_valid_utf8(text: str) -> bool:
    return utf8_error(text) is None


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _row(row_label: str | None, noun: str, i: int, *, typed: bool = False) -> str:
    if row_label is not None:
        return row_label.format(i=i)
    return f"{noun} {i}" if typed else f"{noun} at row {i}"


def check_texts(
    texts: Any,
    *,
    field: str = "text",
    noun: str = "text",
    one_string_hint: str = "wrap it in a list: [text]",
    allow_empty: bool = False,
    check_utf8: bool = True,
    expected: str = "a list (or tuple) of strings",
    row_label: str | None = None,
) -> list[str]:
    """``texts`` as a list of str, or an InputError naming ``field`` and the row, with the fix.

    Refused: one bare string (``one_string_hint`` says what to do instead), a non-sequence, a row that
    is not a str, an empty or whitespace-only row (unless ``allow_empty``), a row holding a lone
    surrogate (not encodable as UTF-8; unless ``check_utf8`` is False).
    ``expected`` says what to pass instead of a non-sequence; ``row_label`` (a format string with
    ``{i}``, e.g. "text at row {i}") names a row in every message instead of the default wording.
    """
    if isinstance(texts, CheckedTexts):
        return list(texts)
    if isinstance(texts, (str, bytes)):
        raise InputError(
            f"{field} is a single string; pass a list of strings: {one_string_hint}", field=field
        )
    if not isinstance(texts, Sequence) and not hasattr(texts, "__array__"):
        raise InputError(f"{field} must be {expected}, got {type(texts).__name__}", field=field)
    rows = list(texts)
    for i, text in enumerate(rows):
        if not isinstance(text, str):
            raise InputError(
                f"{_row(row_label, noun, i, typed=True)} is {_kind(text)}, not a string; "
                "give every row a non-empty string",
                field=field,
                row=i,
            )
        if not allow_empty and (not text or text.isspace()):
            raise InputError(
                f"{_row(row_label, noun, i)} is empty or whitespace-only; drop the row or give it some text",
                field=field,
                row=i,
            )
        if check_utf8:
            err = utf8_error(text)
            if err is not None:
                raise InputError(
                    f"{_row(row_label, noun, i)} is not valid UTF-8: it holds a lone surrogate "
                    f"({text[err.start]!r} at character {err.start}); fix the input encoding "
                    "(decode bytes with errors='replace')",
                    field=field,
                    row=i,
                ) from err
    return rows

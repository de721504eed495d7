"""Argument and text checks of M3Embedder (ConfigError / InputError naming the option or row)."""

from __future__ import annotations

from collections.abc import Sequence

from ._text import check_texts
from .errors import ConfigError

_MIN_MAX_LENGTH = 3  # <s>, one content token, </s>


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _check_max_length(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_MAX_LENGTH:
        raise ConfigError(
            f"{name} must be an int of at least {_MIN_MAX_LENGTH} tokens (<s>, one token, </s>), got {value!r}"
        )


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _check_devices(devices: Sequence[str] | None, device: str | None) -> tuple[str, ...] | None:
    if devices is None:
        return None
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise ConfigError(
            f"devices must be a non-empty list of devices such as ['cuda:0', 'cuda:1'], got {devices!r}"
        )
    if device is not None:
        raise ConfigError("pass device= or devices=, not both")
    for d in devices:
        if not isinstance(d, str) or not d.strip():
            raise ConfigError(f"devices must hold device names such as 'cuda:0', got {d!r}")
    return tuple(d.strip() for d in devices)


def _check_texts(texts: Sequence[str], *, allow_empty: bool) -> list[str]:
    # UTF-8 is checked by the backend when its tokenizer refuses a text (no extra pass over every text).
    return check_texts(
        texts,
        field="text",
        one_string_hint="e.g. encode_documents([text])",
        allow_empty=allow_empty,
        check_utf8=False,
        expected="a sequence of str (a list or tuple)",
        row_label="text at row {i}",
    )

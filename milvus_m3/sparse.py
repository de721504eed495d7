"""Lexical weights <-> Milvus sparse rows: int ids, validation, pruning, lexical matching score.

Pure Python + numpy: no pymilvus, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError, InputError

__all__ = ["MAX_SPARSE_ID", "lexical_score", "prune", "to_milvus_sparse", "validate_sparse_rows"]

MAX_SPARSE_ID = 2**32 - 2
"""Milvus stores sparse indices as uint32 and rejects 2^32-1 itself."""


def to_milvus_sparse(vec: Mapping[Any, Any], *, row: int | None = None) -> dict[int, float]:
    """Check one sparse vector and return it as {int id: float weight > 0}.

    Raises InputError naming the row and the offending id or weight. Zero weights are dropped
    (Milvus would store them and they only cost space); negative, NaN or infinite ones are errors.
    """
    where = f"row {row}: " if row is not None else ""
    if not isinstance(vec, Mapping):
        raise InputError(
            f"{where}sparse vector must be a dict of token id -> weight, got {type(vec).__name__}",
            field="sparse",
            row=row,
        )
    out: dict[int, float] = {}
    for key, weight in vec.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise InputError(
                f"{where}sparse id {key!r} is a {type(key).__name__}; ids must be ints "
                "(FlagEmbedding's lexical_weights use str ids: convert with int(k))",
                field="sparse",
                row=row,
            )
        idx = int(key)
        if idx < 0 or idx > MAX_SPARSE_ID:
            raise InputError(
                f"{where}sparse id {idx} is outside Milvus's range [0, 2^32-2]",
                field="sparse",
                row=row,
            )
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise InputError(
                f"{where}sparse weight for id {idx} is {weight!r}, not a number", field="sparse", row=row
            ) from None
        if not math.isfinite(w) or w < 0.0:
            raise InputError(
                f"{where}sparse weight for id {idx} is {w}; weights must be finite and >= 0",
                field="sparse",
                row=row,
            )
        if w > 0.0:
            out[idx] = w
    return out


def validate_sparse_rows(rows: Sequence[Mapping[Any, Any]]) -> list[dict[int, float]]:
    """Validate a batch; the error names the first bad row."""
    return [to_milvus_sparse(vec, row=i) for i, vec in enumerate(rows)]


def prune(
    vec: Mapping[int, float], *, top_k: int | None = None, mass: float | None = None
) -> dict[int, float]:
    """Keep the ``top_k`` largest weights and/or the largest weights that cover ``mass`` of the total.

    Ties are broken by token id so the result is deterministic. Returns a new dict.
    """
    if top_k is not None and top_k < 1:
        raise ConfigError(f"prune top_k must be >= 1, got {top_k}")
    if mass is not None and not 0.0 < mass <= 1.0:
        raise ConfigError(f"prune mass must be in (0, 1], got {mass}")
    if not vec or (top_k is None and mass is None):
        return dict(vec)
    ids = np.fromiter(vec.keys(), dtype=np.int64, count=len(vec))
    ws = np.fromiter(vec.values(), dtype=np.float64, count=len(vec))
    order = np.lexsort((ids, -ws))  # by weight desc, then id asc
    keep = len(order)
    if top_k is not None:
        keep = min(keep, top_k)
    if mass is not None:
        cum = np.cumsum(ws[order])
        need = int(np.searchsorted(cum, mass * cum[-1] * (1 - 1e-12), side="left")) + 1
        keep = min(keep, need)
    sel = order[:keep]
    return {int(i): float(w) for i, w in zip(ids[sel], ws[sel], strict=False)}


def lexical_score(query: Mapping[int, float], doc: Mapping[int, float]) -> float:
    """BGE-M3's lexical matching score: sum over shared ids of q_w * d_w (Milvus sparse IP).

    Weights are taken as Python floats (float64) whatever their type (numpy float32 included).
    """
    if len(query) > len(doc):
        query, doc = doc, query
    return float(sum(float(w) * float(doc[t]) for t, w in query.items() if t in doc))

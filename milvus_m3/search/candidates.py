"""The ``m3`` / ``m3-all`` value types: the BGE-M3 weights (``M3Weights``) and one query's candidates
with their exact scores (``CandidateSet``), fused by ``fusion.m3_scores``.

Pure numpy: no pymilvus, no torch. ``rerank.M3Reranker`` builds these from Milvus.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..fusion import M3_COLBERT_WEIGHT, M3_DENSE_WEIGHT, M3_SPARSE_WEIGHT, id_order, m3_scores
from ..sparse import lexical_score

__all__ = ["CandidateSet", "DocColbert", "M3Weights", "Mode", "ScoreScale", "sparse_score"]

Mode = Literal["m3", "m3-all"]
ScoreScale = Literal["sum", "mean"]
DocColbert = Callable[[Sequence[str | int], Sequence[str]], Sequence[npt.NDArray[np.float32]]]
"""``(ids, texts) -> one (tokens, dim) array per document``: where document ColBERT vectors come from."""

_FArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class M3Weights:
    """Weights of the three BGE-M3 scores (the paper's defaults)."""

    dense: float = M3_DENSE_WEIGHT
    sparse: float = M3_SPARSE_WEIGHT
    colbert: float = M3_COLBERT_WEIGHT

    def __post_init__(self) -> None:
        for name in ("dense", "sparse", "colbert"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"M3Weights.{name} must be a finite number >= 0, got {value!r}")
        if self.dense == 0 and self.sparse == 0:
            raise ConfigError("M3Weights: dense and sparse weights are both 0; at least one must be > 0")

    def total(self, mode: Mode) -> float:
        return self.dense + self.sparse + (self.colbert if mode == "m3-all" else 0.0)


sparse_score = lexical_score
"""BGE-M3's lexical matching score (``sparse.lexical_score``): sum over shared token ids of q_w * d_w."""


@dataclass(frozen=True)
class CandidateSet:
    """One query's ``m3`` candidates: the union of both lists with exact dense and sparse scores.

    ``from_dense`` / ``from_sparse`` say which ANN list found each candidate (the other score was
    computed from the stored vector). Weights apply later, so one set can be fused many ways.
    """

    ids: tuple[str | int, ...]
    dense: _FArray
    sparse: _FArray
    from_dense: npt.NDArray[np.bool_]
    from_sparse: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)

    def fused(self, weights: M3Weights) -> _FArray:
        """``w_dense * dense + w_sparse * sparse`` per candidate (``fusion.m3_scores``)."""
        return m3_scores(self.dense, self.sparse, w_dense=weights.dense, w_sparse=weights.sparse)

    def top(self, weights: M3Weights, limit: int | None = None) -> list[tuple[str | int, float]]:
        """Candidates by fused score, highest first; ties by id so the order is deterministic."""
        scores = self.fused(weights)
        order = sorted(range(len(self.ids)), key=lambda i: (-scores[i], id_order(self.ids[i])))
        if limit is not None:
            order = order[:limit]
        return [(self.ids[i], float(scores[i])) for i in order]

"""All score math as pure functions: reciprocal rank fusion, Milvus's weighted ranker, raw score sums,
distribution-based score fusion (``dbsf``), BGE-M3's scores (``dense_score``, ``colbert_score``) and weighted sum (``m3_scores``), and the one tie
order by id (``id_order``).

Each input is one candidate list: ``(id, score)`` pairs in rank order (best first), as one Milvus
search on one vector field returns them. Every function returns a new list of new ``(id, score)``
tuples, best first, ties broken by id (ints before strings, then ascending), and never mutates its
inputs. Scores are computed in float64; Milvus computes in float32, so the two agree to ~1e-7.

What Milvus does, and what these functions mirror:

* ``RRFRanker(k)``: the document at 1-based position ``r`` of a list gets ``1 / (k + r)`` from that
  list; the fused score is the sum over the lists that contain it. Positions count as given, the
  per-list scores are not looked at. ``k`` defaults to 60 in pymilvus and here.
* ``WeightedRanker(w_1, ..., w_n)``: every score is first mapped into [0, 1] by a function of the
  field's metric, then multiplied by its list's weight; the fused score is the sum. For ``IP`` (both
  BGE-M3 fields) the map is ``0.5 + arctan(s) / pi``; for ``COSINE`` ``(1 + s) / 2``; for ``L2``
  (a distance, smaller is better) ``1 - 2 * arctan(d) / pi``. Milvus Lite 2.5.1 always applies the
  map and ignores pymilvus's ``norm_score=False``; a Milvus server >= 2.5 honours it. Both engines
  refuse weights outside [0, 1]. A document missing from a list gets nothing from that list.

Distribution-based score fusion (``dbsf``; Milvus has no such ranker, qdrant-client's
``distribution_based_score_fusion`` defines it): each list's scores are mapped by that list's own
spread, ``(s - low) / (high - low)`` with ``low, high = mean -+ 3 * sd`` (sd the sample standard
deviation, n - 1); a one-hit list, or one whose scores are all equal, gives each of its hits 0.5. The
fused score is the (weighted) sum over the lists that hold the document.

BGE-M3's paper fuses raw scores instead: ``w_dense * dense + w_sparse * sparse (+ w_colbert * colbert)``
with weights 1, 0.3 (and 1); ``m3_scores`` computes it over arrays (the ``m3`` / ``m3-all`` modes).

This module imports neither pymilvus nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError

__all__ = [
    "DBSF_SPREAD",
    "M3_COLBERT_WEIGHT",
    "M3_DENSE_WEIGHT",
    "M3_SPARSE_WEIGHT",
    "NORMALIZERS",
    "RRF_K",
    "Normalize",
    "colbert_score",
    "dbsf",
    "dense_score",
    "id_order",
    "m3_scores",
    "normalize_score",
    "rrf",
    "score_sum",
    "tiered",
    "weighted",
]

RRF_K = 60
"""The RRF constant of pymilvus ``RRFRanker`` (and of Cormack et al. 2009)."""

DBSF_SPREAD = 3.0
"""DBSF's bounds: mean -+ this many sample standard deviations (qdrant-client's 3)."""

M3_DENSE_WEIGHT = 1.0
M3_SPARSE_WEIGHT = 0.3
M3_COLBERT_WEIGHT = 1.0
"""The BGE-M3 paper's weights of the dense, lexical (sparse) and ColBERT scores."""

Normalize = Literal["arctan", "bm25", "cosine", "l2", "none"]
"""How ``weighted`` maps raw scores before weighting: by the metric of the field they come from."""

IdT = TypeVar("IdT", bound=Hashable)


def _arctan(score: float) -> float:
    # Milvus: 0.5 + atan(score) / pi for IP (unbounded similarity, larger is better).
    return 0.5 + math.atan(score) / math.pi


def _bm25(score: float) -> float:
    # Milvus: 2 * atan(score) / pi for BM25 (a score >= 0, larger is better).
    return 2.0 * math.atan(score) / math.pi


def _cosine(score: float) -> float:
    # Milvus: (1 + score) / 2 for COSINE (similarity in [-1, 1]).
    return (1.0 + score) * 0.5


def _l2(distance: float) -> float:
    # Milvus: 1 - 2 * atan(distance) / pi for L2 (a distance: smaller is better).
    return 1.0 - 2.0 * math.atan(distance) / math.pi


def _identity(score: float) -> float:
    return score


NORMALIZERS: dict[str, Callable[[float], float]] = {
    "arctan": _arctan,
    "cosine": _cosine,
    "l2": _l2,
    "none": _identity,
}
"""The score maps of Milvus's WeightedRanker by metric (``arctan`` is the one for IP)."""

_MAPS: dict[str, Callable[[float], float]] = {**NORMALIZERS, "bm25": _bm25}
"""NORMALIZERS and the BM25 metric's map (``2 * arctan(s) / pi``, a BM25 leg's; ``Normalize`` names it)."""


def normalize_score(score: float, normalize: Normalize = "arctan") -> float:
    """One score mapped as Milvus's WeightedRanker maps it (see the module docstring)."""
    return _normalizer(normalize)(float(score))


def rrf(
    lists: Sequence[Sequence[tuple[IdT, float]]],
    k: float = RRF_K,
    limit: int | None = None,
    *,
    weights: Sequence[float] | None = None,
) -> list[tuple[IdT, float]]:
    """Reciprocal rank fusion: score(d) = sum over lists containing d of w_i / (k + rank), rank 1-based.

    The scores inside the lists are ignored; only their order counts (as in Milvus's RRFRanker, which is
    this with every weight 1, the default). ``weights``: one per list (weighted RRF).
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
        raise ConfigError(f"rrf k must be a finite number > 0, got {k!r}")
    ws = [1.0] * len(lists) if weights is None else _check_weights(weights, len(lists))
    parts: dict[IdT, list[float]] = {}
    for li, (ranking, w) in enumerate(zip(lists, ws, strict=True)):
        seen: set[IdT] = set()
        for rank, item in enumerate(ranking, start=1):
            doc = _item_id(item, li)
            if doc in seen:
                raise InputError(
                    f"rrf: id {doc!r} appears twice in list {li}; each list must rank an id once",
                    field="lists",
                    row=li,
                )
            seen.add(doc)
            parts.setdefault(doc, []).append(w / (k + rank))
    return _ordered(_exact_sums(parts), limit)


def weighted(
    lists: Sequence[Sequence[tuple[IdT, float]]],
    weights: Sequence[float],
    *,
    normalize: Normalize | Sequence[Normalize] = "arctan",
    limit: int | None = None,
) -> list[tuple[IdT, float]]:
    """Milvus's WeightedRanker: score(d) = sum over lists containing d of w_i * normalize(s_i(d)).

    ``normalize`` names the map for the metric the scores come from: "arctan" (IP, the default and
    what Milvus applies to both BGE-M3 fields), "bm25" (Milvus's map for a BM25 field), "cosine", "l2",
    or "none" for raw scores (what a Milvus server >= 2.5 does with ``WeightedRanker(..., norm_score=False)``);
    or one name per list.
    """
    names = [normalize] * len(lists) if isinstance(normalize, str) else list(normalize)
    if len(names) != len(lists):
        raise ConfigError(f"{len(names)} normalize names for {len(lists)} lists; give one per list")
    fns = [_normalizer(n) for n in names]
    ws = _check_weights(weights, len(lists))
    parts: dict[IdT, list[float]] = {}
    for li, (ranking, w) in enumerate(zip(lists, ws, strict=False)):
        fn = fns[li]
        seen: set[IdT] = set()
        for item in ranking:
            doc = _item_id(item, li)
            if doc in seen:
                raise InputError(
                    f"weighted: id {doc!r} appears twice in list {li}; each list must score an id once",
                    field="lists",
                    row=li,
                )
            seen.add(doc)
            parts.setdefault(doc, []).append(w * fn(_item_score(item, li)))
    return _ordered(_exact_sums(parts), limit)


def dbsf(
    lists: Sequence[Sequence[tuple[IdT, float]]],
    weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[tuple[IdT, float]]:
    """Distribution-based score fusion: score(d) = sum over lists containing d of w_i * norm_i(s_i(d)).

    ``norm_i`` maps list i's scores by that list's own distribution: ``(s - low) / (high - low)`` with
    ``low, high = mean -+ DBSF_SPREAD * sd`` over the list's scores (sd with n - 1, as qdrant-client's
    ``distribution_based_score_fusion``); a list of one hit, or whose scores are all equal, gives 0.5
    to each hit; an empty list gives nothing. Scores must be "higher is better" (similarities such as
    IP or BM25, as Milvus returns them; negate a distance first). ``weights``: one per list, >= 0
    (default 1 each; qdrant's function is this with every weight 1).
    """
    ws = [1.0] * len(lists) if weights is None else _check_weights(weights, len(lists))
    parts: dict[IdT, list[float]] = {}
    for li, (ranking, w) in enumerate(zip(lists, ws, strict=True)):
        scored: dict[IdT, float] = {}
        for item in ranking:
            doc = _item_id(item, li)
            if doc in scored:
                raise InputError(
                    f"dbsf: id {doc!r} appears twice in list {li}; each list must score an id once",
                    field="lists",
                    row=li,
                )
            score = _item_score(item, li)
            if not math.isfinite(score):
                raise InputError(
                    f"dbsf: list {li}: score {score!r} of id {doc!r} is not finite", field="lists", row=li
                )
            scored[doc] = score
        for doc, norm in _distribution_normalized(scored).items():
            parts.setdefault(doc, []).append(w * norm)
    return _ordered(_exact_sums(parts), limit)


def score_sum(
    lists: Sequence[Sequence[tuple[IdT, float]]],
    weights: Sequence[float] | None = None,
    *,
    limit: int | None = None,
) -> list[tuple[IdT, float]]:
    """Raw weighted sum over the union: score(d) = sum of w_i * s_i(d), 0 where d is missing.

    BGE-M3's own "dense + sparse" combination (``w_dense * s_dense + w_sparse * s_lexical``) is this
    with the paper's weights; weights default to 1 for every list.
    """
    ws = [1.0] * len(lists) if weights is None else weights
    return weighted(lists, ws, normalize="none", limit=limit)


def tiered(
    tiers: Sequence[Sequence[Sequence[tuple[IdT, float]]]],
    fuse: Callable[[Sequence[Sequence[tuple[IdT, float]]]], list[tuple[IdT, float]]],
) -> list[tuple[IdT, float]]:
    """One fused ranking at any depth, whose every prefix stays put when deeper tiers are added.

    ``tiers[j]`` holds each leg's candidate list of tier j (deeper than tier j - 1); the ranking is
    ``fuse(tiers[0])``, then the documents of ``fuse(tiers[1])`` that tier 0 did not rank (with their
    tier-1 score), and so on. Fusing deeper lists can reorder the top (a document gains a contribution
    from a list that ranked it below the old cut), so plain fusion of deeper lists would show one
    document on two pages and skip another; this ranking never does, however many tiers are read.
    """
    out: list[tuple[IdT, float]] = []
    seen: set[IdT] = set()
    for lists in tiers:
        for doc, score in fuse(lists):
            if doc not in seen:
                seen.add(doc)
                out.append((doc, score))
    return out


def m3_scores(
    dense: npt.ArrayLike,
    sparse: npt.ArrayLike,
    colbert: npt.ArrayLike | None = None,
    *,
    w_dense: float = M3_DENSE_WEIGHT,
    w_sparse: float = M3_SPARSE_WEIGHT,
    w_colbert: float = M3_COLBERT_WEIGHT,
) -> npt.NDArray[np.float64]:
    """BGE-M3's weighted sum per candidate: ``w_dense * dense + w_sparse * sparse (+ w_colbert * colbert)``.

    The arrays hold one raw score per candidate (same length); the result is a new float64 array.
    """
    d = np.asarray(dense, dtype=np.float64)
    s = np.asarray(sparse, dtype=np.float64)
    out: npt.NDArray[np.float64] = w_dense * d + w_sparse * s
    if colbert is not None:
        out = out + w_colbert * np.asarray(colbert, dtype=np.float64)
    return out


def dense_score(query: npt.ArrayLike, doc: npt.ArrayLike) -> float:
    """Inner product of two dense vectors (cosine for BGE-M3's normalised vectors)."""
    return float(np.dot(np.asarray(query, dtype=np.float64), np.asarray(doc, dtype=np.float64)))


def colbert_score(query: npt.ArrayLike, doc: npt.ArrayLike) -> float:
    """Mean over query token vectors of the max inner product with a document token vector.

    ``query`` (q_tokens, dim) and ``doc`` (d_tokens, dim), rows normalised, [CLS] dropped (as
    ``M3Embedder(colbert=True)`` and FlagEmbedding give them). An empty side scores 0.
    """
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(doc, dtype=np.float64)
    if q.ndim != 2 or d.ndim != 2:
        raise InputError(
            f"colbert vectors must be 2-d (tokens, dim), got shapes {q.shape} and {d.shape}", field="colbert"
        )
    if q.shape[0] == 0 or d.shape[0] == 0:
        return 0.0
    if q.shape[1] != d.shape[1]:
        raise InputError(f"colbert dims differ: query {q.shape[1]}, document {d.shape[1]}", field="colbert")
    return float((q @ d.T).max(axis=1).sum() / q.shape[0])


def id_order(doc: Hashable) -> tuple[int, object]:
    """The tie order of every ranking here: ints (ascending) before strings (ascending), never an int
    compared with a string; anything else (bools included: they are not ids) after, by repr."""
    if isinstance(doc, bool):
        return (2, repr(doc))
    if isinstance(doc, int):
        return (0, doc)
    if isinstance(doc, str):
        return (1, doc)
    return (2, repr(doc))


# --------------------------------------------------------------------- helpers


def _exact_sums(parts: dict[IdT, list[float]]) -> dict[IdT, float]:
    """Correctly rounded sums (math.fsum), so equal contributions tie exactly whatever the list order."""
    return {doc: math.fsum(vals) for doc, vals in parts.items()}


def _distribution_normalized(scored: dict[IdT, float]) -> dict[IdT, float]:
    """One list's scores mapped by its mean -+ DBSF_SPREAD sample standard deviations (see ``dbsf``)."""
    values = list(scored.values())
    if len(values) < 2 or max(values) == min(values):
        return {doc: 0.5 for doc in scored}  # one hit or no spread: no distribution to place it in
    mean = math.fsum(values) / len(values)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    low, high = mean - DBSF_SPREAD * sd, mean + DBSF_SPREAD * sd
    return {doc: (v - low) / (high - low) for doc, v in scored.items()}


def _normalizer(normalize: str) -> Callable[[float], float]:
    try:
        return _MAPS[normalize]
    except (KeyError, TypeError):
        raise ConfigError(
            f"normalize must be one of {sorted(_MAPS)}, got {normalize!r} "
            "('arctan' is Milvus's map for IP scores)"
        ) from None


def _check_weights(weights: Sequence[float], n_lists: int) -> list[float]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(f"weights must be a sequence of numbers, one per list, got {weights!r}")
    if len(weights) != n_lists:
        raise ConfigError(f"{len(weights)} weights for {n_lists} lists; give one weight per list")
    out: list[float] = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"weight {i} is {w!r}; weights must be finite numbers >= 0")
        out.append(float(w))
    return out


def _item_id(item: tuple[IdT, float], li: int) -> IdT:
    try:
        doc, _ = item
    except (TypeError, ValueError):
        raise InputError(
            f"list {li} holds {item!r}; every entry must be an (id, score) pair", field="lists", row=li
        ) from None
    return doc


def _item_score(item: tuple[IdT, float], li: int) -> float:
    score = item[1]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        raise InputError(
            f"list {li}: score {score!r} of id {item[0]!r} is not a number", field="lists", row=li
        )
    return float(score)


def _ordered(fused: dict[IdT, float], limit: int | None) -> list[tuple[IdT, float]]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be an int >= 0 or None, got {limit!r}")
    items = sorted(fused.items(), key=lambda kv: (-kv[1], id_order(kv[0])))
    if limit is not None:
        items = items[:limit]
    return [(doc, score) for doc, score in items]

"""The search options a caller gives (``SearchOptions``), the plan they become (``SearchPlan``), the checks.

``SearchOptions`` carries the per-call options of ``HybridSearcher.search`` / ``search_batch`` /
``search_embeddings`` as given (None: the searcher's default); the searcher checks them against its
defaults and its collection and turns them into a ``SearchPlan``, which ``execute.py`` runs. The
``check_*`` functions raise ConfigError / InputError with the fix in the message.

Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._checks import check_int, check_texts
from ..collection.legs import LEG_TABLE
from ..errors import ConfigError, InputError
from ..filters import FilterLike
from ..types import M3Embeddings
from .rankers import REGISTRY, ranker_spec

__all__ = [
    "CANDIDATE_FACTOR",
    "CLIENT_SIDE_MODES",
    "DEFAULT_CANDIDATES",
    "DEFAULT_MODE",
    "DEFAULT_RANKER",
    "FUSIONS",
    "LEGS",
    "MAX_RRF_K",
    "MAX_TOPK",
    "MODES",
    "RANKERS",
    "Fusion",
    "Leg",
    "Mode",
    "RankerName",
    "SearchOptions",
    "SearchPlan",
    "check_candidate_limit",
    "check_fusion",
    "check_legs",
    "check_mode",
    "check_params",
    "check_queries",
    "check_query_vectors",
    "check_ranker",
    "check_rrf_k",
    "check_weights",
]

Mode = Literal["hybrid", "dense", "sparse", "m3", "m3-all"]
Leg = Literal["dense", "sparse", "bm25"]
LEGS: tuple[str, ...] = tuple(LEG_TABLE)
"""The retrieval legs: the dense field, the learned-sparse field, Milvus's BM25 field (``CollectionSpec.bm25``).
A search runs any non-empty subset of its collection's legs; ``mode="hybrid"`` means all of them,
``"dense"`` / ``"sparse"`` that one leg."""
RankerName = Literal["rrf", "weighted", "dbsf"]
"""The names of ``rankers.REGISTRY`` (a test keeps the two equal), for type checkers."""
Fusion = Literal["auto", "server", "client"]
MODES: tuple[str, ...] = ("hybrid", "dense", "sparse", "m3", "m3-all")
CLIENT_SIDE_MODES = ("m3", "m3-all")
"""BGE-M3 paper fusion, computed here (rerank.py): raw dense + 0.3 x sparse over the union of both
candidate lists with exact scores from stored vectors ("m3"), re-ranked with ColBERT ("m3-all")."""
RANKERS: tuple[str, ...] = tuple(REGISTRY)
FUSIONS: tuple[str, ...] = ("auto", "server", "client")

MAX_TOPK = 16_384
"""Milvus's cap on offset + limit of one search, and on each hybrid sub-request's limit."""

DEFAULT_CANDIDATES = 100
CANDIDATE_FACTOR = 2
"""Default candidate depth per leg: 100, whatever the page (``offset`` never changes the ranking).

Fusion can only rank what the legs return: a document ranked 30th by every leg beats one ranked 1st
by one leg only, so each list must reach well below the final cut. 100 is what Milvus's own
hybrid-search examples use, and on SciFact (benchmarks/results/candidates.txt) three-leg RRF gains
0.0009 nDCG@10 from 100 to 1000 candidates for 9x the search time. Pages deeper than the fused top-100
lists reach are served from lists ``CANDIDATE_FACTOR`` times deeper, tier by tier: the documents a
deeper tier adds come after everything the shallower tiers ranked (``execute.py``), so consecutive
pages are always slices of one ranking.
"""

MAX_RRF_K = 16_384
"""Milvus accepts RRF k in (0, 16384), an int (pymilvus ``RRFRanker(k: int)``)."""

DEFAULT_MODE: Mode = "hybrid"
DEFAULT_RANKER: RankerName = "rrf"
"""The searcher's defaults (``HybridSearcher(mode=..., ranker=...)``; the CLI reads them here)."""


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """One call's options as given; None means "the searcher's default". Checked when planned."""

    limit: int = 10
    offset: int = 0
    mode: Mode | None = None
    ranker: RankerName | None = None
    rrf_k: int | None = None
    """RRF's k for this call (an int in 1..MAX_RRF_K - 1)."""
    weights: Sequence[float] | None = None
    filter: FilterLike = None
    output_fields: Sequence[str] | None = None
    candidate_limit: int | None = None
    group_by: str | None = None
    tenant: str | int | None = None
    """Only this tenant's rows (a collection with ``CollectionSpec.partition_key``)."""
    partition_names: Sequence[str] | None = None
    """Only these named partitions (Milvus servers; refused on Milvus Lite, which ignores them)."""
    legs: Sequence[str] | None = None
    norm_score: bool | None = None
    language: str | None = None
    """The query's language for the bm25 leg: a code of the collection's ``bm25_languages`` (Milvus
    analyses the query with that analyzer, ``analyzer_name``); None: its ``default`` analyzer."""


@dataclass(frozen=True, kw_only=True)
class SearchPlan:
    """One call's checked arguments, defaults filled in and the filter rendered."""

    limit: int
    offset: int
    mode: Mode
    ranker: RankerName
    rrf_k: int
    weights: tuple[float, ...]
    """One per leg (all 1.0 unless given)."""
    candidates: int
    """Per-leg candidate depth (the first tier; deeper pages and groups read further tiers)."""
    expr: str
    params: Mapping[str, Any] = field(default_factory=dict)
    """Template values of ``expr`` (``filter_params``); empty without templates."""
    output_fields: tuple[str, ...] = ()
    group_by: str | None = None
    tenant: str | int | None = None
    """The tenant the call is scoped to (its filter is in ``expr``); every hit is checked against it."""
    partition_names: tuple[str, ...] = ()
    legs: tuple[Leg, ...] = ("dense", "sparse")
    norm_score: bool = True
    """Weighted ranker: map scores into [0, 1] first (Milvus's default) or sum raw scores."""
    language: str | None = None
    """The bm25 leg's query analyzer (``analyzer_name``); None: the collection's default one."""

    @property
    def depth(self) -> int:
        """offset + limit: how far down the ranking this call reads."""
        return self.offset + self.limit


# --------------------------------------------------------------------- checks


def check_fusion(fusion: Any) -> Fusion:
    if fusion not in FUSIONS:
        raise ConfigError(f"fusion must be 'auto', 'server' or 'client', got {fusion!r}")
    result: Fusion = fusion
    return result


def check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    result: Mode = mode
    return result


def check_ranker(ranker: Any) -> RankerName:
    """A name of the ranker table (``rankers.REGISTRY``), or ConfigError listing them."""
    result: RankerName = ranker_spec(ranker).name  # type: ignore[assignment]  # RankerName = its keys
    return result


def check_rrf_k(k: Any) -> int:
    """RRF's k as Milvus's ``RRFRanker(k)`` takes it: an int in (0, MAX_RRF_K)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < k < MAX_RRF_K:
        raise ConfigError(
            f"rrf_k must be an int in 1..{MAX_RRF_K - 1} (Milvus's RRFRanker range; 60 is usual), got {k!r}"
        )
    return int(k)


def check_legs(legs: Any, available: Sequence[str]) -> tuple[Leg, ...]:
    """A non-empty subset of ``available`` legs, each once, in the order given."""
    if isinstance(legs, str):
        legs = [p.strip() for p in legs.split(",") if p.strip()]
    if not isinstance(legs, Sequence) or not legs:
        raise ConfigError(f"legs must be a non-empty list from {', '.join(LEGS)}, got {legs!r}")
    out: list[Leg] = []
    for leg in legs:
        if leg not in LEGS:
            raise ConfigError(f"unknown leg {leg!r}; legs are {', '.join(LEGS)}")
        if leg not in available:
            raise ConfigError(
                f"leg {leg!r} is not in this collection (its legs: {', '.join(available)}); "
                f"{LEG_TABLE[leg].missing_fix}"
            )
        if leg in out:
            raise ConfigError(f"leg {leg!r} is given twice")
        out.append(leg)
    return tuple(out)


def check_weights(
    weights: Any, legs: Sequence[str] = ("dense", "sparse"), ranker: str = DEFAULT_RANKER
) -> tuple[float, ...]:
    """One weight per leg, checked by ``ranker``'s weight rule (``rankers.py``: in [0, 1] for rrf and
    weighted, >= 0 for dbsf; never all 0)."""
    return ranker_spec(ranker).weight_rule(weights, legs)


def check_candidate_limit(value: Any) -> int:
    """A per-field candidate limit: an int in [1, MAX_TOPK]."""
    cand = check_int("candidate_limit", value, 1)
    if cand > MAX_TOPK:
        raise ConfigError(f"candidate_limit {cand} is above Milvus's per-request cap {MAX_TOPK}")
    return cand


def check_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{name} must be a dict of Milvus search parameters, got {type(params).__name__}")
    for key in ("metric_type", "params"):
        if key in params:
            raise ConfigError(
                f"{name} holds {key!r}; give only the inner parameters (e.g. {{'ef': 256}}): the metric is always IP"
            )
    return dict(params)


def check_queries(queries: Any) -> list[str]:
    """Query texts as a list of non-empty strings, or an InputError naming the row (field "query")."""
    return check_texts(
        queries, field="query", noun="query", one_string_hint="wrap it: [query]", check_utf8=False
    )


def check_query_vectors(queries: M3Embeddings) -> None:
    """InputError naming the query and field when a pre-computed query vector cannot be searched with:
    a dense vector holding NaN or inf, a sparse entry whose key is not an int token id (a str key would
    be read as another token) or whose weight is not finite."""
    dense = np.asarray(queries.dense, dtype=np.float32)
    finite = np.isfinite(dense).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"query {row}: dense vector holds NaN or inf; re-encode the query", field="dense", row=row
        )
    for row, sparse in enumerate(queries.sparse):
        for key, weight in dict(sparse).items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
                raise InputError(
                    f"query {row}: sparse key {key!r} is not a token id (an int >= 0); use the encoder's "
                    "output (M3Embeddings.sparse maps int token ids to weights)",
                    field="sparse",
                    row=row,
                )
            if not math.isfinite(float(weight)):
                raise InputError(
                    f"query {row}: sparse weight of token {key} is {weight}; weights must be finite",
                    field="sparse",
                    row=row,
                )

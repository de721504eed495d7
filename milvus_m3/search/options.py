"""The options a caller gives, declared once; the plan they become (``SearchPlan``); the checks.

Each option is declared once, as a field of a frozen dataclass with its type, default and one-line
doc (``metadata["doc"]``):

* ``SearchOptions``: a call's search options (``search`` / ``search_batch`` / ``search_embeddings`` of
  both searchers), as given (None: the searcher's default);
* ``RerankOptions``: a call's rerank-stage options (``search`` / ``search_batch``);
* ``SearcherOptions``: the constructor options of ``HybridSearcher`` and ``AsyncHybridSearcher``.

The public methods take them as ``**options: Unpack[...Kwargs]``: the TypedDicts below mirror the
dataclasses for type checkers and IDEs (a test keeps names and types equal), ``document_options``
writes the options into the methods' docstrings from the dataclasses' fields, and ``call_options`` /
``searcher_options`` turn the keywords into the dataclasses (an unknown name is a ConfigError listing
the valid ones). ``plan.py`` turns ``SearchOptions`` into a ``SearchPlan``, which ``execute.py`` runs.
The ``check_*`` functions raise ConfigError / InputError with the fix in the message.

Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar

import numpy as np

from .._checks import check_int, check_texts
from ..collection.legs import LEG_TABLE
from ..errors import ConfigError, InputError
from ..filters import FilterLike
from ..fusion import RRF_K
from ..types import M3Embeddings, Reranker
from .rankers import REGISTRY, ranker_spec

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # Python 3.10: typing_extensions (a dependency of torch)
    from typing_extensions import Unpack

__all__ = [
    "CANDIDATE_FACTOR",
    "CLIENT_SIDE_MODES",
    "DEFAULT_CANDIDATES",
    "DEFAULT_MODE",
    "DEFAULT_RANKER",
    "DEFAULT_RERANK_DEPTH",
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
    "RerankOptions",
    "SearchKwargs",
    "SearchOptions",
    "SearchPlan",
    "SearcherKwargs",
    "SearcherOptions",
    "TextSearchKwargs",
    "Unpack",
    "call_options",
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
    "document_options",
    "option_names",
    "searcher_options",
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


DEFAULT_RERANK_DEPTH = 50
"""Candidates the first stage gives the reranker per query (FlagEmbedding's examples rerank 20-100)."""


def doc(text: str) -> dict[str, str]:
    """A field's one-line doc, which ``document_options`` writes into the methods' docstrings."""
    return {"doc": text}


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """One call's search options as given; None means "the searcher's default". Checked when planned."""

    limit: int = field(default=10, metadata=doc("hits per query (an int >= 1; offset + limit <= MAX_TOPK)"))
    offset: int = field(default=0, metadata=doc("hits skipped first; every page is a slice of one ranking"))
    mode: Mode | None = field(default=None, metadata=doc("hybrid, dense, sparse, m3 or m3-all"))
    ranker: RankerName | None = field(
        default=None, metadata=doc("how hybrid fuses its legs: rrf, weighted or dbsf (rankers.REGISTRY)")
    )
    rrf_k: int | None = field(default=None, metadata=doc("RRF's k, an int in 1..MAX_RRF_K - 1"))
    weights: Sequence[float] | None = field(
        default=None, metadata=doc("one per leg (None: the searcher's for these legs, else all 1)")
    )
    filter: FilterLike = field(
        default=None,
        metadata=doc("a Filter (F.eq(...)), a raw Milvus expression, or a list of both (joined with and)"),
    )
    output_fields: Sequence[str] | None = field(
        default=None, metadata=doc("the fields each hit carries (None: text, metadata, declared fields)")
    )
    candidate_limit: int | None = field(
        default=None, metadata=doc("per-leg candidate depth (None: DEFAULT_CANDIDATES, whatever the page)")
    )
    group_by: str | None = field(
        default=None, metadata=doc("one hit per value of this varchar / int64 / bool field (e.g. parent_id)")
    )
    tenant: str | int | None = field(
        default=None, metadata=doc("only this tenant's rows (a collection with CollectionSpec.partition_key)")
    )
    partition_names: Sequence[str] | None = field(
        default=None, metadata=doc("only these named partitions (Milvus servers; refused on Milvus Lite)")
    )
    legs: Sequence[str] | None = field(
        default=None, metadata=doc("the legs mode hybrid fuses: a non-empty subset of dense, sparse, bm25")
    )
    norm_score: bool | None = field(
        default=None, metadata=doc("weighted ranker: map scores into [0, 1] first (True) or sum raw scores")
    )
    language: str | None = field(
        default=None,
        metadata=doc(
            "the bm25 leg's query analyzer: a code of the collection's bm25_languages (None: default)"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class RerankOptions:
    """One call's rerank-stage options as given (``search`` / ``search_batch``); None: the searcher's."""

    reranker: Reranker | None = field(
        default=None, metadata=doc("a cross-encoder second stage for this call (CrossEncoderReranker)")
    )
    rerank_depth: int | None = field(
        default=None, metadata=doc("first-stage hits the reranker re-orders (0: no rerank stage)")
    )


@dataclass(frozen=True, kw_only=True)
class SearcherOptions:
    """A searcher's constructor options (``HybridSearcher`` and ``AsyncHybridSearcher``), as given."""

    mode: Mode = field(default=DEFAULT_MODE, metadata=doc("every call's default mode"))
    ranker: RankerName = field(
        default=DEFAULT_RANKER, metadata=doc("the default ranker: rrf, weighted or dbsf")
    )
    rrf_k: int = field(default=RRF_K, metadata=doc("the default RRF k, an int in 1..MAX_RRF_K - 1"))
    weights: Sequence[float] | None = field(
        default=None,
        metadata=doc("one per leg of legs (None: all 1); in [0, 1] for rrf and weighted, >= 0 for dbsf"),
    )
    candidate_limit: int | None = field(
        default=None, metadata=doc("the default per-leg candidate depth (None: DEFAULT_CANDIDATES)")
    )
    legs: Sequence[str] | None = field(
        default=None, metadata=doc("the legs hybrid fuses, a subset of the collection's (None: all of them)")
    )
    norm_score: bool = field(
        default=True, metadata=doc("weighted ranker: map scores into [0, 1] first (Milvus's default)")
    )
    dense_params: Mapping[str, Any] | None = field(
        default=None, metadata=doc("extra dense search parameters, e.g. {'ef': 256} (HNSW), {'nprobe': 64}")
    )
    sparse_params: Mapping[str, Any] | None = field(
        default=None, metadata=doc("extra sparse search parameters, e.g. {'drop_ratio_search': 0.2}")
    )
    check: bool = field(
        default=True, metadata=doc("with an encoder: refuse a collection built for another model or dim")
    )
    fusion: Fusion = field(
        default="auto",
        metadata=doc("where hybrid RRF is computed: auto, server (hybrid_search) or client (fusion.rrf)"),
    )
    reranker: Reranker | None = field(
        default=None, metadata=doc("a cross-encoder second stage for every call (CrossEncoderReranker)")
    )
    rerank_depth: int = field(
        default=DEFAULT_RERANK_DEPTH, metadata=doc("first-stage hits the reranker re-orders (0: none)")
    )


class SearchKwargs(TypedDict, total=False):
    """``SearchOptions`` as keywords (``**options: Unpack[SearchKwargs]``); a test keeps the two equal."""

    limit: int
    offset: int
    mode: Mode | None
    ranker: RankerName | None
    rrf_k: int | None
    weights: Sequence[float] | None
    filter: FilterLike
    output_fields: Sequence[str] | None
    candidate_limit: int | None
    group_by: str | None
    tenant: str | int | None
    partition_names: Sequence[str] | None
    legs: Sequence[str] | None
    norm_score: bool | None
    language: str | None


class TextSearchKwargs(SearchKwargs, total=False):
    """``SearchOptions`` and ``RerankOptions`` as keywords (``search`` / ``search_batch``)."""

    reranker: Reranker | None
    rerank_depth: int | None


class SearcherKwargs(TypedDict, total=False):
    """``SearcherOptions`` as keywords (the searchers' constructors); a test keeps the two equal."""

    mode: Mode
    ranker: RankerName
    rrf_k: int
    weights: Sequence[float] | None
    candidate_limit: int | None
    legs: Sequence[str] | None
    norm_score: bool
    dense_params: Mapping[str, Any] | None
    sparse_params: Mapping[str, Any] | None
    check: bool
    fusion: Fusion
    reranker: Reranker | None
    rerank_depth: int


def option_names(*declarations: type) -> tuple[str, ...]:
    """The field names of the option dataclasses ``declarations``, in order."""
    return tuple(f.name for d in declarations for f in dataclasses.fields(d))


def _known(given: Mapping[str, Any], what: str, names: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the options are: {', '.join(names)}"
        )


def call_options(given: Mapping[str, Any], *, rerank: bool = True) -> tuple[SearchOptions, RerankOptions]:
    """A call's keywords as ``SearchOptions`` and ``RerankOptions`` (``rerank=False``: the call has no
    rerank stage, its options are unknown names); an unknown name is a ConfigError listing the valid ones."""
    declared = (SearchOptions, RerankOptions) if rerank else (SearchOptions,)
    _known(given, "search option", option_names(*declared))
    stage = {k: given[k] for k in option_names(RerankOptions) if k in given}
    search = {k: v for k, v in given.items() if k not in stage}
    return SearchOptions(**search), RerankOptions(**stage)


def searcher_options(given: Mapping[str, Any]) -> SearcherOptions:
    """A constructor's keywords as ``SearcherOptions`` (unknown names: a ConfigError listing the valid ones).
    Checked by ``plan.check_searcher_options``."""
    _known(given, "searcher option", option_names(SearcherOptions))
    return SearcherOptions(**given)


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def options_doc(*declarations: type) -> str:
    """The "Options" section of a docstring, written from the option dataclasses' fields."""
    lines = ["Options (keywords; name: type = default):"]
    for d in declarations:
        for f in dataclasses.fields(d):
            lines.append(f"    {f.name}: {f.type} = {f.default!r}")
            lines.append(f"        {f.metadata['doc']}")
    return "\n".join(lines)


def document_options(*declarations: type) -> Callable[[_Fn], _Fn]:
    """Append the options of ``declarations`` to the decorated function's (or class's) docstring, so
    ``help()`` lists them from their one declaration."""

    def decorate(fn: _Fn) -> _Fn:
        fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\n{options_doc(*declarations)}\n"
        return fn

    return decorate


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

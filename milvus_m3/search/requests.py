"""The one place where per-field Milvus search requests are built (dense, sparse, BM25).

A ``FieldRequest`` is one ANN request on one vector field: the data, the field, the limit, the
search parameters and the filter. It becomes either the keyword arguments of ``client.search`` or
a pymilvus ``AnnSearchRequest`` for ``hybrid_search``; the searcher, the ``m3`` reranker and the
evaluation runner all build theirs here, so a parameter default lives in exactly one place.

pymilvus is imported only by ``FieldRequest.ann_request`` and the Milvus ranker builders, when called;
``rankers.REGISTRY`` names which builder each ranker uses (a ranker with none is fused client-side).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..collection.fields import DENSE_FIELD, SPARSE_FIELD
from ..collection.legs import LEG_TABLE, LegSpec
from ..errors import ConfigError

__all__ = [
    "DEFAULT_DROP_RATIO_SEARCH",
    "DEFAULT_HNSW_EF",
    "DEFAULT_IVF_NPROBE",
    "LEG_REQUESTS",
    "FieldRequest",
    "LegRequestContext",
    "bm25_request",
    "dense_request",
    "dense_search_params",
    "leg_request",
    "rrf_ranker",
    "sparse_request",
    "sparse_search_params",
    "weighted_ranker",
]

DEFAULT_HNSW_EF = 128
"""HNSW search breadth when the caller gives none (raised to the candidate limit: Milvus needs ef >= k)."""

DEFAULT_IVF_NPROBE = 32
"""IVF clusters probed when the caller gives none (at most the collection's nlist)."""

DEFAULT_DROP_RATIO_SEARCH = 0.0
"""Sparse query weights dropped before searching: none, so the sparse ranking is exact."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldRequest:
    """One ANN request on one vector field (see the module docstring)."""

    field: str
    data: Sequence[Any]
    limit: int
    search_params: Mapping[str, Any]
    """``{"metric_type": ..., "params": {...}}`` as pymilvus takes it."""
    expr: str = ""
    expr_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``MilvusClient.search`` (add ``collection_name`` and output options)."""
        kwargs: dict[str, Any] = {
            "data": list(self.data),
            "anns_field": self.field,
            "limit": self.limit,
            "filter": self.expr,
            "search_params": _copy(self.search_params),
        }
        if self.expr_params:
            kwargs["filter_params"] = dict(self.expr_params)
        return kwargs

    def ann_request(self) -> Any:
        """A pymilvus ``AnnSearchRequest`` for ``hybrid_search``."""
        from pymilvus import AnnSearchRequest

        return AnnSearchRequest(
            data=list(self.data),
            anns_field=self.field,
            param=_copy(self.search_params),
            limit=self.limit,
            expr=self.expr or None,
            expr_params=dict(self.expr_params) or None,
        )


def dense_search_params(
    index_kind: str, limit: int, *, ivf_nlist: int = 1024, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Search parameters for the dense field (inner product) under index ``index_kind``.

    HNSW: ``ef`` = max(DEFAULT_HNSW_EF, limit) unless given (a given ``ef`` below ``limit`` is refused);
    IVF_*: ``nprobe`` = min(nlist, DEFAULT_IVF_NPROBE); ``overrides`` win.
    """
    kind = index_kind.upper()
    params: dict[str, Any] = {}
    if kind == "HNSW":
        params["ef"] = max(DEFAULT_HNSW_EF, limit)
    elif kind.startswith("IVF"):
        params["nprobe"] = min(ivf_nlist, DEFAULT_IVF_NPROBE)
    params.update(overrides or {})
    ef = params.get("ef")
    if kind == "HNSW" and isinstance(ef, int) and ef < limit:
        raise ConfigError(
            f"dense_params ef={ef} is below the {limit} candidates asked for; HNSW needs ef >= k: raise ef"
        )
    return {"metric_type": "IP", "params": params}


def sparse_search_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Search parameters for the learned-sparse field (inner product, nothing dropped unless asked)."""
    params: dict[str, Any] = {"drop_ratio_search": DEFAULT_DROP_RATIO_SEARCH}
    params.update(overrides or {})
    return {"metric_type": "IP", "params": params}


def dense_request(
    data: Sequence[Any],
    *,
    limit: int,
    index_kind: str = "AUTOINDEX",
    ivf_nlist: int = 1024,
    params: Mapping[str, Any] | None = None,
    expr: str = "",
    expr_params: Mapping[str, Any] | None = None,
    search_depth: int | None = None,
) -> FieldRequest:
    """A request on the dense field. ``search_depth`` (default ``limit``) is how deep the index must
    search (HNSW ``ef`` >= it): a grouped or paged search asks for fewer hits than it reads.
    ``index_kind`` AUTOINDEX / FLAT adds no default parameters: ``params`` go as given."""
    depth = limit if search_depth is None else search_depth
    return FieldRequest(
        field=DENSE_FIELD,
        data=data,
        limit=limit,
        search_params=dense_search_params(index_kind, depth, ivf_nlist=ivf_nlist, overrides=params),
        expr=expr,
        expr_params=dict(expr_params or {}),
    )


def sparse_request(
    data: Sequence[Any],
    *,
    limit: int,
    params: Mapping[str, Any] | None = None,
    expr: str = "",
    expr_params: Mapping[str, Any] | None = None,
    field: str = SPARSE_FIELD,
) -> FieldRequest:
    """A request on the learned-sparse field (``drop_ratio_search`` DEFAULT_DROP_RATIO_SEARCH unless given)."""
    return FieldRequest(
        field=field,
        data=data,
        limit=limit,
        search_params=sparse_search_params(params),
        expr=expr,
        expr_params=dict(expr_params or {}),
    )


def bm25_request(
    texts: Sequence[str],
    *,
    field: str,
    limit: int,
    params: Mapping[str, Any] | None = None,
    expr: str = "",
    expr_params: Mapping[str, Any] | None = None,
    analyzer_name: str | None = None,
) -> FieldRequest:
    """A request on a BM25 function field: the data are query texts, which the engine analyses.

    ``analyzer_name``: which of a multi-language analyzer's analyzers reads the query texts (None: the
    engine's choice, its ``default``)."""
    search_params: dict[str, Any] = {"metric_type": "BM25"}
    if analyzer_name is not None:
        search_params["analyzer_name"] = analyzer_name
    if params:
        search_params["params"] = dict(params)
    return FieldRequest(
        field=field,
        data=list(texts),
        limit=limit,
        search_params=search_params,
        expr=expr,
        expr_params=dict(expr_params or {}),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegRequestContext:
    """What a searcher knows besides a leg's query data: its index and parameter choices, the filter,
    the query language (BM25's analyzer) and how deep a grouped or paged search must read."""

    dense_index_kind: str = "AUTOINDEX"
    ivf_nlist: int = 1024
    dense_params: Mapping[str, Any] | None = None
    sparse_params: Mapping[str, Any] | None = None
    expr: str = ""
    expr_params: Mapping[str, Any] | None = None
    analyzer_name: str | None = None
    search_depth: int | None = None


def _dense_leg(leg: LegSpec, data: Sequence[Any], limit: int, ctx: LegRequestContext) -> FieldRequest:
    req = dense_request(
        data,
        limit=limit,
        index_kind=ctx.dense_index_kind,
        ivf_nlist=ctx.ivf_nlist,
        params=ctx.dense_params,
        expr=ctx.expr,
        expr_params=ctx.expr_params,
        search_depth=ctx.search_depth,
    )
    return dataclasses.replace(req, field=leg.field)


def _sparse_leg(leg: LegSpec, data: Sequence[Any], limit: int, ctx: LegRequestContext) -> FieldRequest:
    return sparse_request(
        data,
        limit=limit,
        params=ctx.sparse_params,
        expr=ctx.expr,
        expr_params=ctx.expr_params,
        field=leg.field,
    )


def _bm25_leg(leg: LegSpec, data: Sequence[Any], limit: int, ctx: LegRequestContext) -> FieldRequest:
    return bm25_request(
        data,
        field=leg.field,
        limit=limit,
        expr=ctx.expr,
        expr_params=ctx.expr_params,
        analyzer_name=ctx.analyzer_name,
    )


LEG_REQUESTS: Mapping[str, Callable[[LegSpec, Sequence[Any], int, LegRequestContext], FieldRequest]] = {
    "dense": _dense_leg,
    "sparse": _sparse_leg,
    "bm25": _bm25_leg,
}
"""The request builder of each leg of ``collection.legs.LEG_TABLE`` (a test keeps the keys equal)."""


def leg_request(leg: str, data: Sequence[Any], limit: int, ctx: LegRequestContext) -> FieldRequest:
    """The request of ``leg`` (a ``LEG_TABLE`` name) for ``data``, its queries' dense vectors, sparse
    vectors or texts (``collection.legs.query_data``)."""
    spec = LEG_TABLE[leg]
    return LEG_REQUESTS[leg](spec, data, limit, ctx)


def _copy(params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if isinstance(out.get("params"), Mapping):
        out["params"] = dict(out["params"])
    return out


def rrf_ranker(k: int) -> Any:
    """Milvus's ``RRFRanker(k)`` for ``hybrid_search`` (k an int, ``options.check_rrf_k``)."""
    from pymilvus import RRFRanker

    return RRFRanker(k)


def weighted_ranker(*weights: float, norm_score: bool = True) -> Any:
    """Milvus's ``WeightedRanker(w_1, ..., w_n)``; ``norm_score=False`` asks for raw scores (servers honour it,
    engines with ``Capabilities.ignores_norm_score`` do not)."""
    from pymilvus import WeightedRanker

    return WeightedRanker(*weights, norm_score=norm_score)

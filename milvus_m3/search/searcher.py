"""HybridSearcher: one request per vector field, Milvus-side fusion, filters, result mapping.

Modes:

* ``hybrid``: one ``AnnSearchRequest`` on the dense field and one on the sparse field (both inner
  product), fused by Milvus with ``RRFRanker(k)`` or ``WeightedRanker(w_dense, w_sparse)`` in one
  ``hybrid_search`` call. Each request fetches ``candidate_limit`` candidates.
* ``dense`` / ``sparse``: one plain ``search`` on that field; the score is the raw inner product.

A search is one encoder call (for ``search`` / ``search_batch``) and one Milvus call, whatever the
number of queries (two Milvus Lite exceptions below); ``search_embeddings`` skips the encoder. The
mapping from Milvus hits to ``Hit`` objects is the only per-hit work.

Measured Milvus Lite 2.5.1 behaviour this module is built around:

* A hybrid search whose filter the engine rejects returns no result list at all, without an error;
  a missing result list raises FilterError / SearchError here, it is never read as "no hits".
* Lite's RRF numbers ranks across the whole batch: in one hybrid request with several queries, the
  first hit of query 2 gets ``1 / (k + hits of query 1 + 1)``. On Lite a batch with the RRF ranker
  is therefore sent as one hybrid request per query (the weighted ranker, which does not look at
  ranks, stays one request). A Milvus server fuses each query on its own.
* With ``group_by`` a hybrid search groups inside each sub-search and then fuses hits, so the same
  group can come back twice (its best dense chunk and its best sparse chunk). The searcher asks for
  enough fused hits, keeps the first (best-fused) hit of each group and pages over groups itself.
  A Milvus server fuses per group; the same code then has nothing to remove.
* ``WeightedRanker`` maps IP scores through ``0.5 + arctan(s) / pi`` before weighting, whatever
  ``norm_score`` says, and accepts weights in [0, 1] only (see ``fusion.py``).
* Fused hits with equal scores come back in no fixed order; the searcher orders ties by id, so a
  query gets the same hits alone and inside a batch.
* A hybrid search reads its output fields with an internal query that quotes ids with ``'`` and
  no escaping: a hit whose id holds ``'`` gets another row's fields (the searcher then reads the
  fields of that result list again, with a correctly escaped query), and an id holding a backslash
  crashes the engine (nothing to do about it here; Lite's upsert already refuses ids with ``'``).
  ``filters.py`` lists the filter-expression hazards.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..collection import CollectionManager
from ..errors import ConfigError, FilterError, InputError, MilvusM3Error, SearchError
from ..filters import F, FilterLike, render
from ..fusion import RRF_K, rrf
from ..schema import (
    CHUNK_FIELD,
    DENSE_FIELD,
    ID_FIELD,
    METADATA_FIELD,
    PARENT_FIELD,
    SPARSE_FIELD,
    TEXT_FIELD,
    CollectionSpec,
    default_output_fields,
)
from ..types import Encoder, Hit, M3Embeddings

__all__ = ["HybridSearcher", "Mode", "RankerName"]

logger = logging.getLogger("milvus_m3.search")
logger.addHandler(logging.NullHandler())

Mode = Literal["hybrid", "dense", "sparse", "m3", "m3-all"]
RankerName = Literal["rrf", "weighted"]
MODES: tuple[str, ...] = ("hybrid", "dense", "sparse", "m3", "m3-all")
CLIENT_SIDE_MODES = ("m3", "m3-all")
"""BGE-M3 paper fusion, computed here (rerank.py): raw dense + 0.3 x sparse over the union of both
candidate lists with exact scores from stored vectors ("m3"), re-ranked with ColBERT ("m3-all")."""
RANKERS: tuple[str, ...] = ("rrf", "weighted")

MAX_TOPK = 16_384
"""Milvus's cap on offset + limit of one search, and on each hybrid sub-request's limit."""

DEFAULT_CANDIDATES = 100
CANDIDATE_FACTOR = 2
"""Default per-field candidate limit in hybrid mode: max(100, 2 * (offset + limit)), capped at 16384.

Fusion can only rank what the sub-searches return: a document ranked 30th by both fields beats one
ranked 1st by one field only, so each list must reach well below the final cut. 100 candidates is what
Milvus's own hybrid-search examples use for top-10 results; doubling the page depth keeps deep pages
as well served as the first.
"""

DEFAULT_HNSW_EF = 128
"""HNSW search breadth when the caller gives none (raised to the candidate limit: Milvus needs ef >= k)."""

DEFAULT_IVF_NPROBE = 32
"""IVF clusters probed when the caller gives none (at most the collection's nlist)."""

DEFAULT_DROP_RATIO_SEARCH = 0.0
"""Sparse query weights dropped before searching: none, so the sparse ranking is exact."""

MAX_RRF_K = 16_384
"""Milvus accepts RRF k in (0, 16384)."""

_FILTER_KINDS = {"varchar": "varchar", "int64": "int64", "double": "double", "bool": "bool"}
_GROUPABLE_KINDS = ("varchar", "int64", "bool")


class HybridSearcher:
    """Searches one milvus-m3 collection in hybrid, dense or sparse mode.

    manager: the CollectionManager holding the connection.
    collection: the collection name; it must have been built by milvus-m3.
    encoder: turns query texts into M3Embeddings (an ``M3Embedder`` or any ``Encoder``); only
        ``search_embeddings`` works without one.
    mode, ranker, rrf_k, weights, candidate_limit: defaults for every call (each call may override):
        ``weights`` are (dense, sparse) for the weighted ranker, each in [0, 1];
        ``candidate_limit`` is the per-field candidate count in hybrid mode (None: see
        ``DEFAULT_CANDIDATES``).
    dense_params / sparse_params: extra search parameters for each field (e.g. ``{"ef": 256}`` for
        HNSW, ``{"nprobe": 64}`` for IVF, ``{"drop_ratio_search": 0.2}`` for the sparse field).
    check: with an encoder, refuse a collection built for another model or dense dimension
        (SchemaMismatchError) before the first search.
    """

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        *,
        mode: Mode = "hybrid",
        ranker: RankerName = "rrf",
        rrf_k: float = RRF_K,
        weights: Sequence[float] = (1.0, 1.0),
        candidate_limit: int | None = None,
        dense_params: Mapping[str, Any] | None = None,
        sparse_params: Mapping[str, Any] | None = None,
        check: bool = True,
        fusion: Literal["auto", "server", "client"] = "auto",
    ) -> None:
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        if fusion not in ("auto", "server", "client"):
            raise ConfigError(f"fusion must be 'auto', 'server' or 'client', got {fusion!r}")

        self._AnnSearchRequest = AnnSearchRequest
        self._RRFRanker = RRFRanker
        self._WeightedRanker = WeightedRanker

        # Arguments first, so a typo fails before any round trip.
        self.mode: Mode = _check_mode(mode)
        self.ranker: RankerName = _check_ranker(ranker)
        self.rrf_k = _check_rrf_k(rrf_k)
        self.weights = _check_weights(weights)
        self.candidate_limit = None if candidate_limit is None else _check_int("candidate_limit", candidate_limit, 1)
        if self.candidate_limit is not None and self.candidate_limit > MAX_TOPK:
            raise ConfigError(f"candidate_limit {self.candidate_limit} is above Milvus's per-request cap {MAX_TOPK}")
        self._dense_params = _check_params("dense_params", dense_params)
        self._sparse_params = _check_params("sparse_params", sparse_params)

        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        if check and encoder is not None:
            manager.check_collection(collection, dense_dim=encoder.dense_dim, model_name=encoder.model_name)
        self.spec: CollectionSpec = manager.spec(collection)
        caps = manager.capabilities
        self._templates = bool(caps.filter_templates)
        self._dialect: Literal["lite", "server"] = "lite" if caps.is_lite else "server"
        self._lite_batch_rrf_bug = caps.is_lite
        # Where RRF is computed for hybrid mode. "auto": on Milvus Lite, here (fusion.rrf over one dense and
        # one sparse search sent at once; same ranking as Lite's RRFRanker, a test pins it, and Lite's
        # hybrid_search costs ~5x a dense search and mis-fuses batches); on a server, hybrid_search.
        self.fusion = fusion
        self._client_rrf = fusion == "client" or (fusion == "auto" and caps.is_lite)
        self._pool: Any = None
        self._lite_quoted_ids = caps.is_lite and self.spec.id_type == "varchar"
        self._dense_index = _dense_index_kind(self.spec, caps.default_dense_index)

        self._fields = _filter_fields(self.spec)
        self._output_known = frozenset(self._fields) | {DENSE_FIELD, SPARSE_FIELD}
        self._default_output = default_output_fields(self.spec)
        self._groupable = frozenset(
            name for name, kind in self._fields.items() if kind in _GROUPABLE_KINDS and name != ID_FIELD
        )
        self._default_ranker = self._make_ranker(self.ranker, self.rrf_k, self.weights)
        self._what_hybrid = f"hybrid search on {collection!r}"
        self._what_search = f"search on {collection!r}"

    def __repr__(self) -> str:
        return (
            f"HybridSearcher(collection={self.collection!r}, mode={self.mode!r}, ranker={self.ranker!r}, "
            f"uri={self.manager.uri!r})"
        )

    # ----------------------------------------------------------------- public

    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        offset: int = 0,
        mode: Mode | None = None,
        ranker: RankerName | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
    ) -> list[Hit]:
        """The best ``limit`` hits for one query text, after skipping ``offset``."""
        if not isinstance(query, str):
            raise InputError(
                f"query must be a string, got {type(query).__name__}; for several queries use search_batch",
                field="query",
            )
        if not query.strip():
            raise InputError("query is empty; give some text to search for (or skip the search)", field="query")
        return self.search_batch(
            [query], limit=limit, offset=offset, mode=mode, ranker=ranker, weights=weights, filter=filter,
            output_fields=output_fields, candidate_limit=candidate_limit, group_by=group_by,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        *,
        limit: int = 10,
        offset: int = 0,
        mode: Mode | None = None,
        ranker: RankerName | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
    ) -> list[list[Hit]]:
        """Hits for each query text: one encoder call and one Milvus call for the whole batch."""
        plan = self._plan(limit, offset, mode, ranker, weights, filter, output_fields, candidate_limit, group_by)
        texts = _check_queries(queries)
        if not texts:
            return []
        if self.encoder is None:
            raise ConfigError(
                "this HybridSearcher has no encoder; pass encoder=M3Embedder(...) (or any Encoder) when creating "
                "it, or search with pre-computed vectors via search_embeddings"
            )
        if plan.mode in CLIENT_SIDE_MODES:
            return self._client_side(texts, plan, None)
        embeddings = self.encoder.encode_queries(texts)
        if len(embeddings) != len(texts):
            raise SearchError(
                f"the encoder returned {len(embeddings)} embeddings for {len(texts)} queries; "
                "an Encoder must give one per text"
            )
        return self._run(embeddings, plan)

    def search_embeddings(
        self,
        queries: M3Embeddings,
        *,
        limit: int = 10,
        offset: int = 0,
        mode: Mode | None = None,
        ranker: RankerName | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
    ) -> list[list[Hit]]:
        """Hits for pre-computed query embeddings (one Milvus call; no encoder involved)."""
        plan = self._plan(limit, offset, mode, ranker, weights, filter, output_fields, candidate_limit, group_by)
        if not isinstance(queries, M3Embeddings):
            raise InputError(
                f"queries must be M3Embeddings (from encoder.encode_queries), got {type(queries).__name__}",
                field="queries",
            )
        if len(queries) and queries.dim != self.spec.dense_dim:
            raise InputError(
                f"query vectors have dim {queries.dim}, collection {self.collection!r} has dense dim "
                f"{self.spec.dense_dim}; encode queries with the model the collection was built with",
                field="dense",
            )
        if not len(queries):
            return []
        if plan.mode in CLIENT_SIDE_MODES:
            if plan.mode == "m3-all":
                raise ConfigError(
                    "mode 'm3-all' re-ranks with ColBERT vectors of the query text; use search/search_batch"
                )
            return self._client_side(["(pre-computed query)"] * len(queries), plan, queries)
        return self._run(queries, plan)

    def _client_side(self, texts: list[str], plan: _Plan, embeddings: M3Embeddings | None) -> list[list[Hit]]:
        """Modes m3 / m3-all through rerank.M3Reranker (paper weights 1, 0.3, 1)."""
        from .rerank import M3Reranker

        if plan.group_by is not None:
            raise ConfigError(f"group_by is not available in mode {plan.mode!r}; use hybrid, dense or sparse")
        if plan.params:
            raise ConfigError(
                f"mode {plan.mode!r} takes a raw filter expression or runs without templates; "
                "pass the filter as a string, or use mode='hybrid'"
            )
        if self.encoder is None:
            raise ConfigError(f"mode {plan.mode!r} needs an encoder; pass encoder= when creating the searcher")
        reranker = M3Reranker(
            self.manager, self.collection, self.encoder, candidates=plan.candidates,
            dense_search_params=self._dense_request_params(plan.candidates)["params"], check=False,
        )
        mode: Literal["m3", "m3-all"] = "m3" if plan.mode == "m3" else "m3-all"
        results = reranker.search_many(
            texts, limit=plan.offset + plan.limit, mode=mode, filter=plan.expr or None,
            query_embeddings=embeddings,
        )
        return [hits[plan.offset :] for hits in results]

    # ----------------------------------------------------------------- planning

    def _plan(
        self,
        limit: int,
        offset: int,
        mode: Mode | None,
        ranker: RankerName | None,
        weights: Sequence[float] | None,
        filter: FilterLike,
        output_fields: Sequence[str] | None,
        candidate_limit: int | None,
        group_by: str | None,
    ) -> _Plan:
        limit = _check_int("limit", limit, 1)
        offset = _check_int("offset", offset, 0)
        depth = offset + limit
        if depth > MAX_TOPK:
            raise ConfigError(
                f"offset + limit is {depth}; Milvus returns at most {MAX_TOPK} hits per query "
                "(page with a smaller offset, or narrow the search with a filter)"
            )
        mode_ = self.mode if mode is None else _check_mode(mode)
        if ranker is None and weights is None:
            name, ranker_obj = self.ranker, self._default_ranker
        else:
            name = self.ranker if ranker is None else _check_ranker(ranker)
            ws = self.weights if weights is None else _check_weights(weights)
            ranker_obj = self._make_ranker(name, self.rrf_k, ws)
        cand = self.candidate_limit if candidate_limit is None else _check_int("candidate_limit", candidate_limit, 1)
        if cand is None:
            cand = min(MAX_TOPK, max(DEFAULT_CANDIDATES, CANDIDATE_FACTOR * depth))
        elif mode_ == "hybrid" and cand < depth:
            raise ConfigError(
                f"candidate_limit {cand} is smaller than offset + limit = {depth}: fusion cannot return hits "
                f"no field search fetched; raise candidate_limit to >= {depth} or leave it None"
            )
        if cand > MAX_TOPK:
            raise ConfigError(f"candidate_limit {cand} is above Milvus's per-request cap {MAX_TOPK}")
        if output_fields is None:
            out = self._default_output
        else:
            if isinstance(output_fields, str):
                raise ConfigError(f"output_fields must be a list of field names, got the string {output_fields!r}")
            out = list(output_fields)
            unknown = [f for f in out if f not in self._output_known]
            if unknown:
                raise ConfigError(
                    f"output_fields {unknown} are not fields of collection {self.collection!r}; "
                    f"choose from {sorted(self._output_known)}"
                )
        if group_by is not None:
            if group_by not in self._groupable:
                raise ConfigError(
                    f"group_by={group_by!r}: Milvus groups by a varchar, int64 or bool field of the collection; "
                    f"choose from {sorted(self._groupable) or 'none (create the collection with chunked=True for parent_id)'}"
                )
            if group_by not in out:
                out = [*out, group_by]
        expr, params = render(filter, templates=self._templates, dialect=self._dialect, fields=self._fields)
        return _Plan(
            limit=limit, offset=offset, mode=mode_, ranker=ranker_obj, ranker_name=name, candidates=cand, expr=expr,
            params=params, output_fields=out, group_by=group_by,
        )

    def _make_ranker(self, name: str, k: float, weights: tuple[float, float]) -> Any:
        if name == "rrf":
            return self._RRFRanker(int(k) if float(k).is_integer() else k)
        return self._WeightedRanker(*weights)

    def _dense_request_params(self, k: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self._dense_index == "HNSW":
            params["ef"] = max(DEFAULT_HNSW_EF, k)
        elif self._dense_index.startswith("IVF"):
            params["nprobe"] = min(self.spec.ivf_nlist, DEFAULT_IVF_NPROBE)
        params.update(self._dense_params)
        ef = params.get("ef")
        if self._dense_index == "HNSW" and isinstance(ef, int) and ef < k:
            raise ConfigError(
                f"dense_params ef={ef} is below the {k} candidates asked for; HNSW needs ef >= k: raise ef"
            )
        return {"metric_type": "IP", "params": params}

    def _sparse_request_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"drop_ratio_search": DEFAULT_DROP_RATIO_SEARCH}
        params.update(self._sparse_params)
        return {"metric_type": "IP", "params": params}

    # ----------------------------------------------------------------- execution

    def _run(self, emb: M3Embeddings, plan: _Plan) -> list[list[Hit]]:
        n = len(emb)
        grouped = plan.group_by is not None
        try:
            if plan.mode != "hybrid":
                results = self._plain_search(emb, plan)
                what = f"{plan.mode} search"
            elif self._client_rrf and plan.ranker_name == "rrf" and not grouped:
                return self._client_side_rrf(emb, plan)
            elif n > 1 and self._lite_batch_rrf_bug and plan.ranker_name == "rrf":
                # Milvus Lite 2.5.1 numbers RRF ranks across the whole batch: the first hit of query 2
                # gets 1 / (k + hits of query 1 + 1). Only a one-query request is fused right there.
                results = []
                for i in range(n):
                    one = self._hybrid_search(emb.dense[i : i + 1], emb.sparse[i : i + 1], plan)
                    if len(one) != 1:
                        results = one
                        break
                    results.append(one[0])
                what = "hybrid search"
            else:
                results = self._hybrid_search(emb.dense, emb.sparse, plan)
                what = "hybrid search"
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, ParamError, grpc errors
            raise self._engine_error(exc, plan) from exc
        if len(results) != n:
            raise self._missing_results(what, len(results), n, plan)
        if self._lite_quoted_ids and plan.mode == "hybrid" and plan.output_fields:
            results = [self._refetch_if_quoted_ids(r, plan) for r in results]
        if grouped:
            assert plan.group_by is not None
            return [_grouped_hits(r, plan.group_by, plan.offset, plan.limit) for r in results]
        return [_hits(r) for r in results]

    def _client_side_rrf(self, emb: M3Embeddings, plan: _Plan) -> list[list[Hit]]:
        """Hybrid RRF computed here: one dense and one sparse search (sent concurrently), fused by fusion.rrf."""
        import concurrent.futures

        n = len(emb)
        k = plan.candidates
        kwargs: dict[str, Any] = {"output_fields": plan.output_fields, "filter": plan.expr, "limit": k}
        if plan.params:
            kwargs["filter_params"] = plan.params
        conn = self.manager.connection
        client = conn.client
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="milvus-m3-search")
        dense_f = self._pool.submit(
            conn.call, self._what_search, client.search, collection_name=self.collection, data=list(emb.dense),
            anns_field=DENSE_FIELD, search_params=self._dense_request_params(k), **kwargs,
        )
        sparse_f = self._pool.submit(
            conn.call, self._what_search, client.search, collection_name=self.collection, data=list(emb.sparse),
            anns_field=SPARSE_FIELD, search_params=self._sparse_request_params(), **kwargs,
        )
        try:
            dense_res, sparse_res = dense_f.result(), sparse_f.result()
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, ParamError, grpc errors
            raise self._engine_error(exc, plan) from exc
        if len(dense_res) != n or len(sparse_res) != n:
            raise self._missing_results("dense and sparse searches", min(len(dense_res), len(sparse_res)), n, plan)
        out: list[list[Hit]] = []
        depth = plan.offset + plan.limit
        for d_hits, s_hits in zip(dense_res, sparse_res):
            entities: dict[Any, Any] = {}
            lists = []
            for hits in (d_hits, s_hits):
                ranked = []
                for h in hits:
                    entities.setdefault(h[ID_FIELD], h["entity"])
                    ranked.append((h[ID_FIELD], float(h["distance"])))
                lists.append(ranked)
            fused = rrf(lists, k=self.rrf_k, limit=depth)[plan.offset :]
            out.append([_hit({ID_FIELD: i, "distance": score, "entity": dict(entities[i])}) for i, score in fused])
        return out

    def _missing_results(self, what: str, got: int, n: int, plan: _Plan) -> SearchError:
        """A result list missing for a query is an error, never 'no hits'."""
        if plan.expr:
            return FilterError(
                f"the engine rejected the filter {_short(plan.expr)!r} on collection {self.collection!r}: "
                f"the {what} returned {got} result lists for {n} queries (Milvus Lite answers a "
                "bad filter in a hybrid search this way); check field names, value types and syntax"
            )
        return SearchError(
            f"the {what} on {self.collection!r} returned {got} result lists for {n} queries; "
            "the engine failed without saying why (see the Milvus log)"
        )

    def _refetch_if_quoted_ids(self, result: Any, plan: _Plan) -> Any:
        """Milvus Lite hybrid search: give hits whose id holds a ``'`` their own fields back."""
        hits = list(result)
        ids = [h[ID_FIELD] for h in hits]
        if not any("'" in i for i in ids if isinstance(i, str)):
            return result
        expr, _ = render(F.in_(ID_FIELD, ids), templates=False, dialect=self._dialect)
        conn = self.manager.connection
        try:
            rows = conn.call(
                f"fetch fields from {self.collection!r}", conn.client.query, collection_name=self.collection,
                filter=expr, output_fields=plan.output_fields, limit=len(ids),
            )
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus errors
            raise SearchError(f"reading the fields of hybrid hits from {self.collection!r} failed: {exc}") from exc
        by_id = {row[ID_FIELD]: row for row in rows}
        for h in hits:
            entity = h["entity"]
            entity.clear()
            entity.update({k: v for k, v in by_id.get(h[ID_FIELD], {}).items() if k != ID_FIELD})
        return hits

    def _result_kwargs(self, plan: _Plan) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"output_fields": plan.output_fields}
        if plan.group_by is not None:
            kwargs["group_by_field"] = plan.group_by  # paged here, over groups
        elif plan.offset:
            kwargs["offset"] = plan.offset
        return kwargs

    def _hybrid_search(self, dense: Any, sparse: Sequence[Mapping[int, float]], plan: _Plan) -> Any:
        k = plan.candidates
        expr = plan.expr or None
        params = plan.params or None
        reqs = [
            self._AnnSearchRequest(
                data=list(dense), anns_field=DENSE_FIELD, param=self._dense_request_params(k), limit=k,
                expr=expr, expr_params=params,
            ),
            self._AnnSearchRequest(
                data=list(sparse), anns_field=SPARSE_FIELD, param=self._sparse_request_params(), limit=k,
                expr=expr, expr_params=params,
            ),
        ]
        depth = plan.offset + plan.limit
        # Grouped: the same group can come back once per request (see the module docstring).
        limit = min(MAX_TOPK, len(reqs) * depth) if plan.group_by is not None else plan.limit
        conn = self.manager.connection
        return conn.call(
            self._what_hybrid, conn.client.hybrid_search, collection_name=self.collection, reqs=reqs,
            ranker=plan.ranker, limit=limit, **self._result_kwargs(plan),
        )

    def _plain_search(self, emb: M3Embeddings, plan: _Plan) -> Any:
        depth = plan.offset + plan.limit
        if plan.mode == "dense":
            field, data, sparams = DENSE_FIELD, list(emb.dense), self._dense_request_params(depth)
        else:
            field, data, sparams = SPARSE_FIELD, emb.sparse, self._sparse_request_params()
        kwargs = self._result_kwargs(plan)
        if plan.params:
            kwargs["filter_params"] = plan.params
        conn = self.manager.connection
        return conn.call(
            self._what_search, conn.client.search, collection_name=self.collection, data=data, anns_field=field,
            filter=plan.expr, limit=depth if plan.group_by is not None else plan.limit, search_params=sparams,
            **kwargs,
        )

    def _engine_error(self, exc: Exception, plan: _Plan) -> MilvusM3Error:
        msg = " ".join(str(getattr(exc, "message", "") or exc).split())
        lowered = msg.lower()
        if plan.expr and any(s in lowered for s in ("expr", "filter", "phyfilterbitsnode", "parse")):
            return FilterError(
                f"the engine rejected the filter {_short(plan.expr)!r} on collection {self.collection!r}: "
                f"{_short(msg, 300)}. Check field names, value types and syntax, or build the filter with "
                "milvus_m3.filters.F"
            )
        return SearchError(f"{plan.mode} search on collection {self.collection!r} failed: {_short(msg, 300)}")


class _Plan:
    """One call's validated arguments."""

    __slots__ = (
        "candidates", "expr", "group_by", "limit", "mode", "offset", "output_fields", "params", "ranker", "ranker_name",
    )

    def __init__(
        self,
        *,
        limit: int,
        offset: int,
        mode: str,
        ranker: Any,
        ranker_name: str,
        candidates: int,
        expr: str,
        params: dict[str, Any],
        output_fields: list[str],
        group_by: str | None,
    ) -> None:
        self.limit = limit
        self.offset = offset
        self.mode = mode
        self.ranker = ranker
        self.ranker_name = ranker_name
        self.candidates = candidates
        self.expr = expr
        self.params = params
        self.output_fields = output_fields
        self.group_by = group_by


# --------------------------------------------------------------------- result mapping


def _hit(h: Any) -> Hit:
    entity = h["entity"]
    text = entity.pop(TEXT_FIELD, None)
    metadata = entity.pop(METADATA_FIELD, None)
    return Hit(h[ID_FIELD], float(h["distance"]), text, {} if metadata is None else metadata, entity)


def _hits(result: Any) -> list[Hit]:
    return _ties_by_id([_hit(h) for h in result])


def _ties_by_id(hits: list[Hit]) -> list[Hit]:
    """Equal scores in id order: Milvus sorts fused hits with an unstable sort, so without this the
    order of tied hits could change with the other queries of a batch."""
    if any(a.score == b.score for a, b in itertools.pairwise(hits)):
        hits.sort(key=lambda h: (-h.score, h.id))
    return hits


def _grouped_hits(result: Any, group_by: str, offset: int, limit: int) -> list[Hit]:
    seen: set[Any] = set()
    out: list[Hit] = []
    end = offset + limit
    for h in result:
        key = h["entity"].get(group_by)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > offset:
            out.append(_hit(h))
            if len(seen) >= end:
                break
    return _ties_by_id(out)


# --------------------------------------------------------------------- checks


def _filter_fields(spec: CollectionSpec) -> dict[str, str]:
    fields: dict[str, str] = {ID_FIELD: spec.id_type, TEXT_FIELD: "varchar", METADATA_FIELD: "json"}
    if spec.chunked:
        fields[PARENT_FIELD] = "varchar"
        fields[CHUNK_FIELD] = "int64"
    for sf in spec.scalar_fields:
        fields[sf.name] = _FILTER_KINDS.get(sf.dtype, sf.dtype)
    return fields


def _dense_index_kind(spec: CollectionSpec, default: str) -> str:
    kind = spec.dense_index.upper()
    return default.upper() if kind == "AUTO" else kind


def _check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    result: Mode = mode
    return result


def _check_ranker(ranker: Any) -> RankerName:
    if ranker not in RANKERS:
        raise ConfigError(
            f"ranker must be 'rrf' (reciprocal rank fusion) or 'weighted' (Milvus WeightedRanker), got {ranker!r}"
        )
    result: RankerName = ranker
    return result


def _check_rrf_k(k: Any) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or not 0 < k < MAX_RRF_K:
        raise ConfigError(f"rrf_k must be a number in (0, {MAX_RRF_K}) (Milvus's range; 60 is usual), got {k!r}")
    return float(k)


def _check_weights(weights: Any) -> tuple[float, float]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != 2:
        raise ConfigError(
            f"weights must be two numbers (dense, sparse) for the weighted ranker, got {weights!r}"
        )
    out: list[float] = []
    for name, w in zip(("dense", "sparse"), weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
            raise ConfigError(
                f"weights: the {name} weight is {w!r}; Milvus's WeightedRanker takes weights in [0, 1] "
                "(only their ratio matters: scale them so the larger is 1)"
            )
        out.append(float(w))
    if out[0] == 0.0 and out[1] == 0.0:
        raise ConfigError("weights are both 0, so every hit would score 0; give at least one weight > 0")
    return out[0], out[1]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
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


def _check_queries(queries: Any) -> list[str]:
    if isinstance(queries, str):
        raise InputError("queries must be a list of strings, not one string; wrap it: [query]", field="query")
    if not isinstance(queries, Sequence):
        raise InputError(f"queries must be a list of strings, got {type(queries).__name__}", field="query")
    out = list(queries)
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise InputError(f"query {i} is a {type(q).__name__}, not a string", field="query", row=i)
        if not q.strip():
            raise InputError(
                f"query {i} is empty; give some text to search for (or skip the search)", field="query", row=i
            )
    return out


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

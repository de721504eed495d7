"""HybridSearcher: the public search methods, their options and the call plan (run by ``execute.py``).

Modes:

* ``hybrid``: one request on the dense field and one on the sparse field (both inner product, each
  fetching ``candidate_limit`` candidates), fused with RRF(k) or Milvus's ``WeightedRanker(w_dense,
  w_sparse)``. Where the fusion happens depends on the engine and on ``fusion=`` (``execute.py``):
  - the weighted ranker, and RRF with ``fusion="server"`` (the ``"auto"`` choice on a Milvus server):
    one ``hybrid_search`` call with one ``AnnSearchRequest`` per field, fused by Milvus (on an engine
    that numbers RRF ranks across a batch, Milvus Lite, RRF sends one ``hybrid_search`` per query);
  - RRF with ``fusion="client"`` (the ``"auto"`` choice on Milvus Lite, whose ``hybrid_search`` costs
    ~5x a dense search): one dense and one sparse ``search`` sent at once, fused here by ``fusion.rrf``,
    the same ranking as Milvus's ``RRFRanker`` (a test pins it). Grouped RRF always uses ``hybrid_search``.
* ``dense`` / ``sparse``: one plain ``search`` on that field; the score is the raw inner product.
* ``m3`` / ``m3-all``: BGE-M3's raw-score fusion computed client-side (``rerank.py``).

A search is one encoder call (for ``search`` / ``search_batch``) and, apart from the cases above, one
Milvus call whatever the number of queries; ``search_embeddings`` skips the encoder. The mapping from
Milvus hits to ``Hit`` objects is the only per-hit work.

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

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .._tenancy import check_partition_names, check_tenant, check_tenant_rows, scope
from ..collection import CollectionManager
from ..errors import ConfigError, InputError, SearchError
from ..filters import FilterLike, render
from ..fusion import RRF_K
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
from ..types import Encoder, Hit, M3Embeddings, Reranker
from .execute import PlanRunner
from .options import (
    CANDIDATE_FACTOR,
    CLIENT_SIDE_MODES,
    DEFAULT_CANDIDATES,
    DEFAULT_MODE,
    DEFAULT_RANKER,
    MAX_TOPK,
    Fusion,
    Mode,
    RankerName,
    SearchOptions,
    SearchPlan,
    check_candidate_limit,
    check_fusion,
    check_int,
    check_mode,
    check_params,
    check_queries,
    check_ranker,
    check_rrf_k,
    check_weights,
)
from .rerank_stage import DEFAULT_RERANK_DEPTH, check_rerank_depth, check_reranker, with_rerank_stage

__all__ = ["HybridSearcher", "Mode", "RankerName"]

logger = logging.getLogger("milvus_m3.search")

_FILTER_KINDS = {"varchar": "varchar", "int64": "int64", "double": "double", "bool": "bool"}
_GROUPABLE_KINDS = ("varchar", "int64", "bool")


class HybridSearcher:
    """Searches one milvus-m3 collection in hybrid, dense, sparse, m3 or m3-all mode.

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
    fusion: where hybrid RRF is computed: "server" (``hybrid_search``), "client" (``fusion.rrf`` over
        two plain searches), "auto" (client where the engine's ``hybrid_search`` is slow: Milvus Lite).
    """

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        *,
        mode: Mode = DEFAULT_MODE,
        ranker: RankerName = DEFAULT_RANKER,
        rrf_k: float = RRF_K,
        weights: Sequence[float] = (1.0, 1.0),
        candidate_limit: int | None = None,
        dense_params: Mapping[str, Any] | None = None,
        sparse_params: Mapping[str, Any] | None = None,
        check: bool = True,
        fusion: Fusion = "auto",
        reranker: Reranker | None = None,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
    ) -> None:
        self.fusion: Fusion = check_fusion(fusion)
        self.reranker = check_reranker(reranker)
        self.rerank_depth = check_rerank_depth(rerank_depth)
        # Arguments first, so a typo fails before any round trip.
        self.mode: Mode = check_mode(mode)
        self.ranker: RankerName = check_ranker(ranker)
        self.rrf_k = check_rrf_k(rrf_k)
        self.weights = check_weights(weights)
        self.candidate_limit = None if candidate_limit is None else check_candidate_limit(candidate_limit)
        dense = check_params("dense_params", dense_params)
        sparse = check_params("sparse_params", sparse_params)

        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        if check and encoder is not None:
            manager.check_collection(collection, dense_dim=encoder.dense_dim, model_name=encoder.model_name)
        self.spec: CollectionSpec = manager.spec(collection)
        caps = manager.capabilities
        self._templates = caps.filter_templates
        self._dialect = caps.filter_dialect
        self._partitions = caps.partitions
        self._engine = caps.display_name
        self._runner = PlanRunner(
            manager, collection, self.spec, caps, fusion=self.fusion, dense_params=dense, sparse_params=sparse
        )
        self._client_rrf = self._runner.client_rrf

        self._fields = _filter_fields(self.spec)
        self._output_known = frozenset(self._fields) | {DENSE_FIELD, SPARSE_FIELD}
        self._default_output = tuple(default_output_fields(self.spec))
        self._groupable = frozenset(
            name for name, kind in self._fields.items() if kind in _GROUPABLE_KINDS and name != ID_FIELD
        )

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
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int | None = None,
    ) -> list[Hit]:
        """The best ``limit`` hits for one query text, after skipping ``offset``.

        tenant: only that tenant's rows (a collection built with ``CollectionSpec(partition_key=...)``);
        partition_names: only those partitions (Milvus servers).
        """
        if not isinstance(query, str):
            raise InputError(
                f"query must be a string, got {type(query).__name__}; for several queries use search_batch",
                field="query",
            )
        if not query.strip():
            raise InputError(
                "query is empty; give some text to search for (or skip the search)", field="query"
            )
        options = SearchOptions(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
        )
        stage = (reranker, rerank_depth, self.reranker, self.rerank_depth)
        return with_rerank_stage(self._search_texts, [query], options, *stage)[0]

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
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int | None = None,
    ) -> list[list[Hit]]:
        """Hits for each query text: one encoder call and one Milvus call for the whole batch."""
        options = SearchOptions(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
        )
        stage = (reranker, rerank_depth, self.reranker, self.rerank_depth)
        return with_rerank_stage(self._search_texts, queries, options, *stage)

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
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """Hits for pre-computed query embeddings (one Milvus call; no encoder, no rerank stage)."""
        options = SearchOptions(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
        )
        return self._search_vectors(queries, options)

    # ----------------------------------------------------------------- the two paths

    def _search_texts(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        plan = self._plan(options)
        texts = check_queries(queries)
        if not texts:
            return []
        if self.encoder is None:
            raise ConfigError(
                "this HybridSearcher has no encoder; pass encoder=M3Embedder(...) (or any Encoder) when creating "
                "it, or search with pre-computed vectors via search_embeddings"
            )
        if plan.mode in CLIENT_SIDE_MODES:
            return self._scoped(self._runner.run_m3(texts, plan, self.encoder, None), plan)
        embeddings = self.encoder.encode_queries(texts)
        if len(embeddings) != len(texts):
            raise SearchError(
                f"the encoder returned {len(embeddings)} embeddings for {len(texts)} queries; "
                "an Encoder must give one per text"
            )
        return self._scoped(self._runner.run(embeddings, plan), plan)

    def _search_vectors(self, queries: M3Embeddings, options: SearchOptions) -> list[list[Hit]]:
        plan = self._plan(options)
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
            pre = ["(pre-computed query)"] * len(queries)
            return self._scoped(self._runner.run_m3(pre, plan, self.encoder, queries), plan)
        return self._scoped(self._runner.run(queries, plan), plan)

    def _scoped(self, results: list[list[Hit]], plan: SearchPlan) -> list[list[Hit]]:
        """``results``, after checking that a tenant-scoped search returned that tenant's rows only."""
        if plan.tenant is not None and self.spec.partition_key is not None:
            rows = [{**h.fields, ID_FIELD: h.id} for hits in results for h in hits]
            check_tenant_rows(
                rows, self.spec.partition_key, plan.tenant, what="search", collection=self.collection
            )
        return results

    # ----------------------------------------------------------------- planning

    def plan(self, options: SearchOptions) -> SearchPlan:
        """``options`` checked and planned as ``search`` would (``AsyncHybridSearcher`` runs the plan)."""
        return self._plan(options)

    def _plan(self, options: SearchOptions) -> SearchPlan:
        """``options`` checked against this searcher's defaults and collection."""
        limit = check_int("limit", options.limit, 1)
        offset = check_int("offset", options.offset, 0)
        depth = offset + limit
        if depth > MAX_TOPK:
            raise ConfigError(
                f"offset + limit is {depth}; Milvus returns at most {MAX_TOPK} hits per query "
                "(page with a smaller offset, or narrow the search with a filter)"
            )
        mode = self.mode if options.mode is None else check_mode(options.mode)
        ranker = self.ranker if options.ranker is None else check_ranker(options.ranker)
        weights = self.weights if options.weights is None else check_weights(options.weights)
        candidates = self._candidates(options.candidate_limit, mode, depth)
        output_fields = self._output_fields(options.output_fields, options.group_by)
        pk = self.spec.partition_key
        tenant = None
        if options.tenant is not None:
            tenant = check_tenant(self.spec, options.tenant, collection=self.collection)
            output_fields = output_fields if pk in output_fields else (*output_fields, str(pk))
        partitions = check_partition_names(
            options.partition_names, supported=self._partitions, engine=self._engine
        )
        expr, params = render(
            scope(options.filter, pk, tenant),
            templates=self._templates and mode not in CLIENT_SIDE_MODES,  # m3 takes literals
            dialect=self._dialect,
            fields=self._fields,
        )
        return SearchPlan(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            rrf_k=self.rrf_k,
            weights=weights,
            candidates=candidates,
            expr=expr,
            params=params,
            output_fields=output_fields,
            group_by=options.group_by,
            tenant=tenant,
            partition_names=partitions,
        )

    def _candidates(self, candidate_limit: int | None, mode: Mode, depth: int) -> int:
        if candidate_limit is None:
            cand = self.candidate_limit
        else:
            cand = check_int("candidate_limit", candidate_limit, 1)
        if cand is None:
            return min(MAX_TOPK, max(DEFAULT_CANDIDATES, CANDIDATE_FACTOR * depth))
        if mode == "hybrid" and cand < depth:
            raise ConfigError(
                f"candidate_limit {cand} is smaller than offset + limit = {depth}: fusion cannot return hits "
                f"no field search fetched; raise candidate_limit to >= {depth} or leave it None"
            )
        if cand > MAX_TOPK:
            raise ConfigError(f"candidate_limit {cand} is above Milvus's per-request cap {MAX_TOPK}")
        return cand

    def _output_fields(self, output_fields: Sequence[str] | None, group_by: str | None) -> tuple[str, ...]:
        if output_fields is None:
            out = self._default_output
        else:
            if isinstance(output_fields, str):
                raise ConfigError(
                    f"output_fields must be a list of field names, got the string {output_fields!r}"
                )
            out = tuple(output_fields)
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
                out = (*out, group_by)
        return out


def _filter_fields(spec: CollectionSpec) -> dict[str, str]:
    fields: dict[str, str] = {ID_FIELD: spec.id_type, TEXT_FIELD: "varchar", METADATA_FIELD: "json"}
    if spec.chunked:
        fields[PARENT_FIELD] = "varchar"
        fields[CHUNK_FIELD] = "int64"
    for sf in spec.scalar_fields:
        fields[sf.name] = _FILTER_KINDS.get(sf.dtype, sf.dtype)
    return fields

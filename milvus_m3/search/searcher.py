"""HybridSearcher: the public search methods, their options and the call plan (run by ``execute.py``).

Modes:

* ``hybrid``: the collection's legs (``legs=``: dense, sparse, bm25), each fetching ``candidate_limit``
  candidates, fused with (weighted) RRF(k) or a weighted score sum (normalised as Milvus's
  ``WeightedRanker`` does, or raw with ``norm_score=False``). Where the fusion runs (Milvus's
  ``hybrid_search`` or here, from one plain search per leg) is ``execute.py``'s choice, made from the
  engine's capabilities; both give the same ranking (tests pin it).
* ``dense`` / ``sparse``: one plain ``search`` on that field; the score is the raw inner product.
* ``m3`` / ``m3-all``: BGE-M3's raw-score fusion computed client-side (``rerank.py``).

A search is one encoder call (``search`` / ``search_batch``; ``search_embeddings`` skips it) and at
most one Milvus call per leg, whatever the number of queries.

Measured Milvus Lite 2.5.1 behaviour this module is built around:

* A hybrid search whose filter the engine rejects returns no result list at all, without an error;
  a missing result list raises FilterError / SearchError here, it is never read as "no hits".
* Lite's RRF numbers ranks across the whole batch (query 2's first hit gets ``1 / (k + hits of
  query 1 + 1)``): engine RRF there goes one query per request. A Milvus server fuses each query alone.
* With ``group_by`` Lite's hybrid search groups inside each sub-search and then fuses, which ranks
  groups differently from the ungrouped ranking: grouped fused searches run here instead, keeping the
  first hit of each group in the fused ranking (one hit per group, in hybrid order).
* ``WeightedRanker`` maps IP scores through ``0.5 + arctan(s) / pi`` whatever ``norm_score`` says, maps
  BM25 scores as a distance (inverted), and takes weights in [0, 1] only (see ``fusion.py``).
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

from .._checks import check_bool
from ..collection.identity import identity
from ..collection.manager import CollectionManager
from ..collection.schema import (
    DENSE_FIELD,
    ID_FIELD,
    SPARSE_FIELD,
    CollectionSpec,
    default_output_fields,
)
from ..collection.tenancy import check_tenant_rows
from ..errors import ConfigError, InputError, SearchError
from ..filters import FilterLike
from ..fusion import RRF_K
from ..types import Encoder, Hit, M3Embeddings, Reranker
from ._planning import GROUPABLE_KINDS, Planning, filter_fields
from .execute import PlanRunner
from .options import (
    CLIENT_SIDE_MODES,
    DEFAULT_MODE,
    DEFAULT_RANKER,
    Fusion,
    Leg,
    Mode,
    RankerName,
    SearchOptions,
    SearchPlan,
    check_candidate_limit,
    check_fusion,
    check_legs,
    check_mode,
    check_params,
    check_queries,
    check_query_vectors,
    check_ranker,
    check_rrf_k,
    check_weights,
)
from .rankers import check_server_fusion
from .rerank_stage import DEFAULT_RERANK_DEPTH, check_rerank_depth, check_reranker, with_rerank_stage

__all__ = ["HybridSearcher", "Mode", "RankerName"]

logger = logging.getLogger("milvus_m3.search")


class HybridSearcher(Planning):
    """Searches one milvus-m3 collection in hybrid, dense, sparse, m3 or m3-all mode.

    manager: the CollectionManager holding the connection.
    collection: the collection name; it must have been built by milvus-m3.
    encoder: turns query texts into M3Embeddings (an ``M3Embedder`` or any ``Encoder``); only
        ``search_embeddings`` works without one.
    legs: the legs a hybrid search fuses (any non-empty subset of the collection's ``spec.legs``:
        "dense", "sparse", "bm25"); None: all of them (three on a collection built with ``bm25=True``).
        A one-leg search returns that leg's raw scores. ``mode="dense"`` / ``"sparse"`` is the shorthand
        for one leg, ``"hybrid"`` for ``legs``.
    mode, ranker, rrf_k, weights, candidate_limit, norm_score: defaults for every call (each call may
        override each): ``ranker`` one of ``search.rankers.REGISTRY`` ("rrf", "weighted", "dbsf");
        ``rrf_k`` an int in 1..16383 (Milvus's RRFRanker range); ``weights`` one per leg (None: all 1),
        each in [0, 1] for rrf and weighted, >= 0 for dbsf, used by every ranker (weighted RRF:
        ``w / (k + rank)``; DBSF: ``w`` times each leg's normalised score); ``candidate_limit`` is the
        per-leg candidate depth (None: ``DEFAULT_CANDIDATES``, whatever the page); ``norm_score``
        (weighted ranker): map each leg's scores into [0, 1] first (Milvus's default) or sum raw
        scores (computed here on engines that ignore Milvus's ``norm_score=False``).
    dense_params / sparse_params: extra search parameters for each field (e.g. ``{"ef": 256}`` for
        HNSW, ``{"nprobe": 64}`` for IVF, ``{"drop_ratio_search": 0.2}`` for the sparse field).
    check: with an encoder, refuse a collection built for another model or dense dimension
        (SchemaMismatchError) before the first search.
    fusion: where hybrid RRF is computed: "server" (``hybrid_search``), "client" (``fusion.rrf`` over
        two plain searches), "auto" (client where the engine's ``hybrid_search`` is slow: Milvus Lite).
        A ranker Milvus does not have ("dbsf") is always fused client-side; "server" refuses it.
    """

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        *,
        mode: Mode = DEFAULT_MODE,
        ranker: RankerName = DEFAULT_RANKER,
        rrf_k: int = RRF_K,
        weights: Sequence[float] | None = None,
        candidate_limit: int | None = None,
        legs: Sequence[str] | None = None,
        norm_score: bool = True,
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
        check_server_fusion(self.fusion, self.ranker)
        self.rrf_k = check_rrf_k(rrf_k)
        self.norm_score = check_bool("norm_score", norm_score)
        self.candidate_limit = None if candidate_limit is None else check_candidate_limit(candidate_limit)
        dense = check_params("dense_params", dense_params)
        sparse = check_params("sparse_params", sparse_params)

        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        if check and encoder is not None:
            manager.check_collection(collection, **identity(encoder))
        self.spec: CollectionSpec = manager.spec(collection)
        self.legs: tuple[Leg, ...] = check_legs(self.spec.legs if legs is None else legs, self.spec.legs)
        self.weights = None if weights is None else check_weights(weights, self.legs, self.ranker)
        caps = manager.capabilities
        self._templates = caps.filter_templates
        self._dialect = caps.filter_dialect
        self._partitions = caps.partitions
        self._engine = caps.display_name
        self._runner = PlanRunner(
            manager, collection, self.spec, caps, fusion=self.fusion, dense_params=dense, sparse_params=sparse
        )
        self._client_rrf = self._runner.client_rrf

        self._fields = filter_fields(self.spec)
        self._output_known = frozenset(self._fields) | {DENSE_FIELD, SPARSE_FIELD}
        self._default_output = tuple(default_output_fields(self.spec))
        self._groupable = frozenset(
            name for name, kind in self._fields.items() if kind in GROUPABLE_KINDS and name != ID_FIELD
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
        rrf_k: int | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
        legs: Sequence[str] | None = None,
        norm_score: bool | None = None,
        language: str | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int | None = None,
    ) -> list[Hit]:
        """The best ``limit`` hits for one query text, after skipping ``offset``.

        tenant: only that tenant's rows (a collection built with ``CollectionSpec(partition_key=...)``);
        partition_names: only those partitions (Milvus servers).
        language: the query's language for the bm25 leg, a code of the collection's ``bm25_languages``
        (the analyzer Milvus reads the query with); None: its ``default`` analyzer.
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
            rrf_k=rrf_k,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
            legs=legs,
            norm_score=norm_score,
            language=language,
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
        rrf_k: int | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
        legs: Sequence[str] | None = None,
        norm_score: bool | None = None,
        language: str | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int | None = None,
    ) -> list[list[Hit]]:
        """Hits for each query text: one encoder call and one Milvus call for the whole batch."""
        options = SearchOptions(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            rrf_k=rrf_k,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
            legs=legs,
            norm_score=norm_score,
            language=language,
        )
        stage = (reranker, rerank_depth, self.reranker, self.rerank_depth)
        return with_rerank_stage(self._search_texts, queries, options, *stage)

    def search_embeddings(
        self,
        queries: M3Embeddings,
        *,
        texts: Sequence[str] | None = None,
        limit: int = 10,
        offset: int = 0,
        mode: Mode | None = None,
        ranker: RankerName | None = None,
        rrf_k: int | None = None,
        weights: Sequence[float] | None = None,
        filter: FilterLike = None,
        output_fields: Sequence[str] | None = None,
        candidate_limit: int | None = None,
        group_by: str | None = None,
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
        legs: Sequence[str] | None = None,
        norm_score: bool | None = None,
        language: str | None = None,
    ) -> list[list[Hit]]:
        """Hits for pre-computed query embeddings (one Milvus call per leg at most; no encoder, no
        rerank stage).

        ``texts``: the query texts, one per embedding, for the bm25 leg (which analyses the text)."""
        options = SearchOptions(
            limit=limit,
            offset=offset,
            mode=mode,
            ranker=ranker,
            rrf_k=rrf_k,
            weights=weights,
            filter=filter,
            output_fields=output_fields,
            candidate_limit=candidate_limit,
            group_by=group_by,
            tenant=tenant,
            partition_names=partition_names,
            legs=legs,
            norm_score=norm_score,
            language=language,
        )
        return self._search_vectors(queries, options, texts)

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
        return self._scoped(self._runner.run(embeddings, texts, plan), plan)

    def _search_vectors(
        self, queries: M3Embeddings, options: SearchOptions, texts: Sequence[str] | None = None
    ) -> list[list[Hit]]:
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
        check_query_vectors(queries)
        if plan.mode in CLIENT_SIDE_MODES:
            if plan.mode == "m3-all":
                raise ConfigError(
                    "mode 'm3-all' re-ranks with ColBERT vectors of the query text; use search/search_batch"
                )
            pre = ["(pre-computed query)"] * len(queries)
            return self._scoped(self._runner.run_m3(pre, plan, self.encoder, queries), plan)
        if texts is not None:
            texts = check_queries(texts)
            if len(texts) != len(queries):
                raise InputError(
                    f"texts holds {len(texts)} queries for {len(queries)} embeddings; give one text per embedding",
                    field="texts",
                )
        return self._scoped(self._runner.run(queries, texts, plan), plan)

    def _scoped(self, results: list[list[Hit]], plan: SearchPlan) -> list[list[Hit]]:
        """``results``, after checking that a tenant-scoped search returned that tenant's rows only."""
        if plan.tenant is not None and self.spec.partition_key is not None:
            rows = [{**h.fields, ID_FIELD: h.id} for hits in results for h in hits]
            check_tenant_rows(
                rows, self.spec.partition_key, plan.tenant, what="search", collection=self.collection
            )
        return results

    # ----------------------------------------------------------------- planning

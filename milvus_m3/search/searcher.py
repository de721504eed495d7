"""HybridSearcher: the public search methods (options declared in ``options.py``, planned by
``plan.plan``, run by ``execute.py``), and the pure steps both searchers drive.

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
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ..collection.identity import identity
from ..collection.manager import CollectionManager
from ..collection.schema import ID_FIELD, CollectionSpec
from ..collection.tenancy import check_tenant_rows
from ..errors import ConfigError, InputError, SearchError
from ..types import Encoder, Hit, M3Embeddings, Reranker
from .execute import PlanRunner
from .options import (
    CLIENT_SIDE_MODES,
    Fusion,
    Leg,
    Mode,
    RankerName,
    RerankOptions,
    SearcherKwargs,
    SearcherOptions,
    SearchKwargs,
    SearchOptions,
    SearchPlan,
    TextSearchKwargs,
    Unpack,
    call_options,
    check_queries,
    check_query_vectors,
    document_options,
    searcher_options,
)
from .plan import SearchDefaults, SearchTarget, check_searcher_options, plan, search_defaults
from .rerank_stage import with_rerank_stage

__all__ = ["HybridSearcher", "Mode", "RankerName", "check_query", "encoded"]

logger = logging.getLogger("milvus_m3.search")


def check_query(query: Any) -> str:
    """One query text (``search``), or an InputError saying the fix."""
    if not isinstance(query, str):
        raise InputError(
            f"query must be a string, got {type(query).__name__}; for several queries use search_batch",
            field="query",
        )
    if not query.strip():
        raise InputError("query is empty; give some text to search for (or skip the search)", field="query")
    return query


def encoded(embeddings: M3Embeddings, texts: Sequence[str]) -> M3Embeddings:
    """The encoder's answer for ``texts``, or a SearchError when it is not one embedding per text."""
    if len(embeddings) != len(texts):
        raise SearchError(
            f"the encoder returned {len(embeddings)} embeddings for {len(texts)} queries; "
            "an Encoder must give one per text"
        )
    return embeddings


@document_options(SearcherOptions)
class HybridSearcher:
    """Searches one milvus-m3 collection in hybrid, dense, sparse, m3 or m3-all mode.

    manager: the CollectionManager holding the connection.
    collection: the collection name; it must have been built by milvus-m3.
    encoder: turns query texts into M3Embeddings (an ``M3Embedder`` or any ``Encoder``); only
        ``search_embeddings`` works without one.

    The options below are every call's defaults (each call may override each; ``searcher.defaults``
    holds them, checked). ``legs``: any non-empty subset of the collection's ``spec.legs`` ("dense",
    "sparse", "bm25"); None: all of them (three on a collection built with ``bm25=True``); a one-leg
    search returns that leg's raw scores; ``mode="dense"`` / ``"sparse"`` is the shorthand for one leg,
    ``"hybrid"`` for ``legs``. ``ranker`` is one of ``search.rankers.REGISTRY``; ``rrf_k`` Milvus's
    RRFRanker range; ``weights`` are used by every ranker (weighted RRF: ``w / (k + rank)``; DBSF: ``w``
    times each leg's normalised score); ``candidate_limit`` is the per-leg candidate depth, whatever the
    page; ``norm_score=False`` sums raw scores (computed here on engines that ignore Milvus's
    ``norm_score=False``). ``fusion``: "auto" is client-side where the engine's ``hybrid_search`` is
    slow (Milvus Lite); a ranker Milvus does not have ("dbsf") is always fused client-side, and
    "server" refuses it.

    The options are declared once (``search.options.SearcherOptions``; ``SearcherKwargs`` for type
    checkers); an unknown name is a ConfigError listing them. ``close()`` (or ``with HybridSearcher(...)
    as searcher:``) shuts the thread pool the legs of a search are sent from; a closed searcher refuses
    new searches.
    """

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        **options: Unpack[SearcherKwargs],
    ) -> None:
        given = check_searcher_options(searcher_options(options))  # a typo fails before any round trip
        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        if given.check and encoder is not None:
            manager.check_collection(collection, **identity(encoder))
        self.spec: CollectionSpec = manager.spec(collection)
        self.defaults: SearchDefaults = search_defaults(given, self.spec)
        """The checked constructor options: what a call's None options become."""
        caps = manager.capabilities
        self.target: SearchTarget = SearchTarget.of(collection, self.spec, caps)
        """The collection and engine every call is planned against."""
        self._runner = PlanRunner(
            manager,
            collection,
            self.spec,
            caps,
            fusion=self.defaults.fusion,
            dense_params=self.defaults.dense_params,
            sparse_params=self.defaults.sparse_params,
        )
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"HybridSearcher(collection={self.collection!r}, mode={self.mode!r}, ranker={self.ranker!r}, "
            f"uri={self.manager.uri!r})"
        )

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> HybridSearcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Shut the thread pool the legs of a search are sent from (idempotent). The manager and the
        encoder belong to their owners and stay open; a closed searcher refuses new searches."""
        self._closed = True
        self._runner.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """SearchError when ``close()`` was called."""
        if self._closed:
            raise SearchError(
                f"this searcher of {self.collection!r} is closed (close() was called or its with block "
                "ended); create a new one"
            )

    # ----------------------------------------------------------------- the defaults, by name

    @property
    def mode(self) -> Mode:
        return self.defaults.mode

    @property
    def ranker(self) -> RankerName:
        return self.defaults.ranker

    @property
    def rrf_k(self) -> int:
        return self.defaults.rrf_k

    @property
    def weights(self) -> tuple[float, ...] | None:
        return self.defaults.weights

    @property
    def candidate_limit(self) -> int | None:
        return self.defaults.candidate_limit

    @property
    def legs(self) -> tuple[Leg, ...]:
        return self.defaults.legs

    @property
    def norm_score(self) -> bool:
        return self.defaults.norm_score

    @property
    def fusion(self) -> Fusion:
        return self.defaults.fusion

    @property
    def reranker(self) -> Reranker | None:
        return self.defaults.reranker

    @property
    def rerank_depth(self) -> int:
        return self.defaults.rerank_depth

    # ----------------------------------------------------------------- public

    @document_options(SearchOptions, RerankOptions)
    def search(self, query: str, **options: Unpack[TextSearchKwargs]) -> list[Hit]:
        """The best ``limit`` hits for one query text, after skipping ``offset``; a None option is the
        searcher's default."""
        check_query(query)
        return self._staged([query], options)[0]

    @document_options(SearchOptions, RerankOptions)
    def search_batch(self, queries: Sequence[str], **options: Unpack[TextSearchKwargs]) -> list[list[Hit]]:
        """Hits for each query text: one encoder call and one Milvus call for the whole batch; a None
        option is the searcher's default."""
        return self._staged(queries, options)

    @document_options(SearchOptions)
    def search_embeddings(
        self, queries: M3Embeddings, *, texts: Sequence[str] | None = None, **options: Unpack[SearchKwargs]
    ) -> list[list[Hit]]:
        """Hits for pre-computed query embeddings (one Milvus call per leg at most; no encoder, no
        rerank stage); a None option is the searcher's default.

        ``texts``: the query texts, one per embedding, for the bm25 leg (which analyses the text)."""
        search, _ = call_options(options, rerank=False)
        self.check_open()
        prepared = self.prepare_vectors(queries, search, texts)
        if prepared is None:
            return []
        planned, texts = prepared
        if planned.mode in CLIENT_SIDE_MODES:
            return self.scoped(self.run_m3(None, planned, queries), planned)
        return self.scoped(self._runner.run(queries, texts, planned), planned)

    def plan(self, options: SearchOptions) -> SearchPlan:
        """``options`` checked and planned as a search would (``plan.plan`` with this searcher's
        defaults and target)."""
        return plan(options, self.defaults, self.target)

    # ----------------------------------------------------------------- the pure parts both searchers drive

    def prepare_texts(self, queries: Sequence[str], options: SearchOptions) -> tuple[SearchPlan, list[str]]:
        """The plan and the checked query texts of a text search (no round trip)."""
        planned = self.plan(options)
        texts = check_queries(queries)
        if texts and self.encoder is None:
            raise ConfigError(
                "this searcher has no encoder; pass encoder=M3Embedder(...) (or any Encoder) when creating it, "
                "or search with pre-computed vectors via search_embeddings"
            )
        return planned, texts

    def prepare_vectors(
        self, queries: M3Embeddings, options: SearchOptions, texts: Sequence[str] | None
    ) -> tuple[SearchPlan, list[str] | None] | None:
        """The plan and the checked texts of a search by pre-computed vectors, every vector checked
        (no round trip); None when there is no query."""
        planned = self.plan(options)
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
            return None
        check_query_vectors(queries)
        if planned.mode in CLIENT_SIDE_MODES:
            if planned.mode == "m3-all":
                raise ConfigError(
                    "mode 'm3-all' re-ranks with ColBERT vectors of the query text; use search/search_batch"
                )
            return planned, None
        if texts is None:
            return planned, None
        checked = check_queries(texts)
        if len(checked) != len(queries):
            raise InputError(
                f"texts holds {len(checked)} queries for {len(queries)} embeddings; give one text per embedding",
                field="texts",
            )
        return planned, checked

    def scoped(self, results: list[list[Hit]], plan: SearchPlan) -> list[list[Hit]]:
        """``results``, after checking that a tenant-scoped search returned that tenant's rows only."""
        if plan.tenant is not None and self.spec.partition_key is not None:
            rows = [{**h.fields, ID_FIELD: h.id} for hits in results for h in hits]
            check_tenant_rows(
                rows, self.spec.partition_key, plan.tenant, what="search", collection=self.collection
            )
        return results

    def run_m3(
        self, texts: list[str] | None, plan: SearchPlan, embeddings: M3Embeddings | None
    ) -> list[list[Hit]]:
        """Modes m3 / m3-all on the sync client, through this searcher's one ``M3Reranker`` (``texts``
        None: by the pre-computed ``embeddings``)."""
        if texts is None:
            assert embeddings is not None
            texts = ["(pre-computed query)"] * len(embeddings)
        return self._runner.run_m3(texts, plan, self.encoder, embeddings)

    # ----------------------------------------------------------------- the sync driver

    def _staged(self, queries: Sequence[str], options: Any) -> list[list[Hit]]:
        search, stage = call_options(options)
        self.check_open()
        defaults = self.defaults
        return with_rerank_stage(
            self._first_stage,
            queries,
            search,
            stage.reranker,
            stage.rerank_depth,
            defaults.reranker,
            defaults.rerank_depth,
        )

    def _first_stage(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        planned, texts = self.prepare_texts(queries, options)
        if not texts:
            return []
        if planned.mode in CLIENT_SIDE_MODES:
            return self.scoped(self.run_m3(texts, planned, None), planned)
        assert self.encoder is not None  # prepare_texts refuses texts without an encoder
        embeddings = encoded(self.encoder.encode_queries(texts), texts)
        return self.scoped(self._runner.run(embeddings, texts, planned), planned)

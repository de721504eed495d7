"""AsyncHybridSearcher: ``HybridSearcher``'s search methods as coroutines, on pymilvus's ``AsyncMilvusClient``.

The plan (defaults, checks, filter rendering, tenant scoping) is made by a ``HybridSearcher`` over
the manager's sync side, so both searchers accept and refuse exactly the same calls; the plan is run
by ``AsyncPlanRunner``, which runs ``PlanRunner.steps`` (the one orchestration: strategies, requests,
candidate tiers, fusion, group_by, result mapping) and awaits its Milvus calls on ``AsyncMilvusClient``:
the legs of a client-fused search are sent together with ``asyncio.gather``.

The encoder runs in a worker thread (one per searcher, so torch and the tokenizer see one call at a
time), so the event loop never blocks on the model. Modes ``m3`` / ``m3-all`` (client-side re-ranking
over stored vectors, ``rerank.py``) run whole in that worker on the sync client; every other mode is
async end to end. Results equal ``HybridSearcher``'s (tests compare them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from ..collection.async_manager import AsyncCollectionManager
from ..collection.schema import ID_FIELD
from ..collection.tenancy import check_tenant_rows
from ..errors import ConfigError, InputError, SearchError
from ..filters import FilterLike
from ..fusion import RRF_K
from ..types import Encoder, Hit, M3Embeddings, Reranker
from ._steps import Call, adrive
from .execute import PlanRunner
from .options import (
    CLIENT_SIDE_MODES,
    DEFAULT_MODE,
    DEFAULT_RANKER,
    Fusion,
    Mode,
    RankerName,
    SearchOptions,
    SearchPlan,
    check_queries,
    check_query_vectors,
)
from .rerank_stage import DEFAULT_RERANK_DEPTH, first_stage, rerank_hits
from .searcher import HybridSearcher

__all__ = ["AsyncHybridSearcher", "AsyncPlanRunner"]


class AsyncPlanRunner(PlanRunner):
    """Runs a ``SearchPlan`` with ``await``: ``PlanRunner.steps`` (the same strategies, requests, fusion
    and result mapping), its Milvus calls awaited on the async manager's ``AsyncMilvusClient``."""

    def __init__(self, amanager: AsyncCollectionManager, collection: str, **kwargs: Any) -> None:
        caps = amanager.capabilities
        super().__init__(amanager.sync, collection, amanager.spec(collection), caps, **kwargs)
        self.amanager = amanager

    async def arun(self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan) -> list[list[Hit]]:
        """Hits per query of ``emb``, as ``run`` gives them (``texts``: the query texts, for bm25)."""
        return await adrive(self.steps(emb, texts, plan), self._asend)

    async def _asend(self, calls: list[Call]) -> list[Any]:
        """The async transport: the calls of one step sent together."""
        got = await asyncio.gather(*(self.amanager.call(c.what, c.method, **c.kwargs) for c in calls))
        return list(got)


class AsyncHybridSearcher:
    """``HybridSearcher`` for asyncio code: the same constructor arguments and per-call options, and
    ``await searcher.search(...)`` / ``search_batch`` / ``search_embeddings`` giving the same hits.

    manager: an ``AsyncCollectionManager``. Constructing one reads the collection's spec (and checks it
    against the encoder) with the sync client: do it at start-up, or ``await AsyncHybridSearcher.create(...)``
    to do that in a worker thread.
    """

    def __init__(
        self,
        manager: AsyncCollectionManager,
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
        self.sync = HybridSearcher(
            manager.sync,
            collection,
            encoder,
            mode=mode,
            ranker=ranker,
            rrf_k=rrf_k,
            weights=weights,
            candidate_limit=candidate_limit,
            legs=legs,
            norm_score=norm_score,
            dense_params=dense_params,
            sparse_params=sparse_params,
            check=check,
            fusion=fusion,
            reranker=reranker,
            rerank_depth=rerank_depth,
        )
        """The sync searcher that plans every call (and runs m3 / m3-all in the worker thread)."""
        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        self._runner = AsyncPlanRunner(
            manager,
            collection,
            fusion=self.sync.fusion,
            dense_params=dense_params,
            sparse_params=sparse_params,
        )
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="milvus-m3-encode"
        )

    @classmethod
    async def create(
        cls, manager: AsyncCollectionManager, collection: str, encoder: Encoder | None = None, **kwargs: Any
    ) -> AsyncHybridSearcher:
        """The searcher, built in a worker thread (its spec read and checks are sync round trips)."""
        return await asyncio.to_thread(functools.partial(cls, manager, collection, encoder, **kwargs))

    def __repr__(self) -> str:
        return f"AsyncHybridSearcher(collection={self.collection!r}, mode={self.sync.mode!r}, uri={self.manager.uri!r})"

    def close(self) -> None:
        """Stop the encoder's worker thread (the manager is closed by its owner)."""
        self._worker.shutdown(wait=False)

    async def search(
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
        """``HybridSearcher.search``, awaited (the rerank stage scores in the worker thread)."""
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
        return (await self._staged([query], options, reranker, rerank_depth))[0]

    async def search_batch(
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
        """``HybridSearcher.search_batch``, awaited (the rerank stage scores in the worker thread)."""
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
        return await self._staged(queries, options, reranker, rerank_depth)

    async def search_embeddings(
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
        """``HybridSearcher.search_embeddings``, awaited (no encoder involved)."""
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
        plan = self.sync.plan(options)
        if not isinstance(queries, M3Embeddings):
            raise InputError(
                f"queries must be M3Embeddings (from encoder.encode_queries), got {type(queries).__name__}",
                field="queries",
            )
        if plan.mode in CLIENT_SIDE_MODES or not len(queries) or queries.dim != self.sync.spec.dense_dim:
            return await self._in_worker(self.sync.search_embeddings, queries, options, texts=texts)
        check_query_vectors(queries)
        if texts is not None:
            texts = check_queries(texts)
            if len(texts) != len(queries):
                raise InputError(
                    f"texts holds {len(texts)} queries for {len(queries)} embeddings; give one text per embedding",
                    field="texts",
                )
        return self._scoped(await self._runner.arun(queries, texts, plan), plan)

    # ----------------------------------------------------------------- internals

    async def _staged(
        self, queries: Sequence[str], options: SearchOptions, reranker: Reranker | None, depth: int | None
    ) -> list[list[Hit]]:
        """The first stage awaited, then this call's rerank stage (if any) in the worker thread."""
        first, stage = first_stage(
            options,
            reranker,
            depth,
            default_reranker=self.sync.reranker,
            default_depth=self.sync.rerank_depth,
        )
        results = await self._search_texts(queries, first)
        if stage is None:
            return results
        rerank = functools.partial(
            rerank_hits,
            check_queries(queries),
            results,
            stage.reranker,
            offset=options.offset,
            limit=options.limit,
        )
        return await asyncio.get_running_loop().run_in_executor(self._worker, rerank)

    async def _search_texts(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        plan = self.sync.plan(options)
        texts = check_queries(queries)
        if not texts:
            return []
        if self.encoder is None:
            raise ConfigError(
                "this AsyncHybridSearcher has no encoder; pass encoder=M3Embedder(...) (or any Encoder), or "
                "search with pre-computed vectors via search_embeddings"
            )
        if plan.mode in CLIENT_SIDE_MODES:
            return await self._in_worker(self.sync.search_batch, texts, options)
        loop = asyncio.get_running_loop()
        embeddings = await loop.run_in_executor(self._worker, self.encoder.encode_queries, texts)
        if len(embeddings) != len(texts):
            raise SearchError(
                f"the encoder returned {len(embeddings)} embeddings for {len(texts)} queries; "
                "an Encoder must give one per text"
            )
        return self._scoped(await self._runner.arun(embeddings, texts, plan), plan)

    async def _in_worker(
        self, method: Any, queries: Any, options: SearchOptions, **extra: Any
    ) -> list[list[Hit]]:
        kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)} | extra
        loop = asyncio.get_running_loop()
        result: list[list[Hit]] = await loop.run_in_executor(
            self._worker, functools.partial(method, queries, **kwargs)
        )
        return result

    def _scoped(self, results: list[list[Hit]], plan: SearchPlan) -> list[list[Hit]]:
        pk = self.sync.spec.partition_key
        if plan.tenant is not None and pk is not None:
            rows = [{**h.fields, ID_FIELD: h.id} for hits in results for h in hits]
            check_tenant_rows(rows, pk, plan.tenant, what="search", collection=self.collection)
        return results

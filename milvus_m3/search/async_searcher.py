"""AsyncHybridSearcher: ``HybridSearcher``'s search methods as coroutines, on pymilvus's ``AsyncMilvusClient``.

Thin over the sync searcher: the options are the same declarations (``options.py``), every call is
planned by the same pure function (``plan.plan``, with the defaults and target of a ``HybridSearcher``
over the manager's sync side, ``.sync``) and checked by the same pure steps (``prepare_texts`` /
``prepare_vectors`` / ``scoped``), so both searchers accept and refuse exactly the same calls; only the
driving differs. The plan is run by ``AsyncPlanRunner``, which runs ``PlanRunner.steps`` (the one orchestration: strategies, requests,
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
import functools
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ..collection.async_manager import AsyncCollectionManager
from ..types import Encoder, Hit, M3Embeddings
from ._steps import Call, adrive
from .execute import PlanRunner
from .options import (
    CLIENT_SIDE_MODES,
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
    document_options,
)
from .rerank_stage import first_stage, rerank_hits
from .searcher import HybridSearcher, check_query, encoded

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


@document_options(SearcherOptions)
class AsyncHybridSearcher:
    """``HybridSearcher`` for asyncio code: the same constructor arguments and per-call options, and
    ``await searcher.search(...)`` / ``search_batch`` / ``search_embeddings`` giving the same hits.

    manager: an ``AsyncCollectionManager``. Constructing one reads the collection's spec (and checks it
    against the encoder) with the sync client: do it at start-up, or ``await AsyncHybridSearcher.create(...)``
    to do that in a worker thread. ``close()`` (or ``async with``) stops the encoder's worker thread and
    closes the sync twin; a closed searcher refuses new searches.
    """

    def __init__(
        self,
        manager: AsyncCollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        **options: Unpack[SearcherKwargs],
    ) -> None:
        self.sync = HybridSearcher(manager.sync, collection, encoder, **options)
        """The sync searcher whose defaults and target plan every call (and which runs m3 / m3-all in
        the worker thread)."""
        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        defaults = self.sync.defaults
        self._runner = AsyncPlanRunner(
            manager,
            collection,
            fusion=defaults.fusion,
            dense_params=defaults.dense_params,
            sparse_params=defaults.sparse_params,
        )
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="milvus-m3-encode"
        )

    @classmethod
    async def create(
        cls,
        manager: AsyncCollectionManager,
        collection: str,
        encoder: Encoder | None = None,
        **options: Unpack[SearcherKwargs],
    ) -> AsyncHybridSearcher:
        """The searcher, built in a worker thread (its spec read and checks are sync round trips)."""
        return await asyncio.to_thread(functools.partial(cls, manager, collection, encoder, **options))

    def __repr__(self) -> str:
        return f"AsyncHybridSearcher(collection={self.collection!r}, mode={self.sync.mode!r}, uri={self.manager.uri!r})"

    async def __aenter__(self) -> AsyncHybridSearcher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the encoder's worker thread and close the sync twin (idempotent; the manager is closed
        by its owner)."""
        self._worker.shutdown(wait=False)
        self.sync.close()

    @property
    def closed(self) -> bool:
        return self.sync.closed

    @document_options(SearchOptions, RerankOptions)
    async def search(self, query: str, **options: Unpack[TextSearchKwargs]) -> list[Hit]:
        """``HybridSearcher.search``, awaited (the rerank stage scores in the worker thread)."""
        check_query(query)
        return (await self._staged([query], options))[0]

    @document_options(SearchOptions, RerankOptions)
    async def search_batch(
        self, queries: Sequence[str], **options: Unpack[TextSearchKwargs]
    ) -> list[list[Hit]]:
        """``HybridSearcher.search_batch``, awaited (the rerank stage scores in the worker thread)."""
        return await self._staged(queries, options)

    @document_options(SearchOptions)
    async def search_embeddings(
        self, queries: M3Embeddings, *, texts: Sequence[str] | None = None, **options: Unpack[SearchKwargs]
    ) -> list[list[Hit]]:
        """``HybridSearcher.search_embeddings``, awaited (no encoder involved)."""
        search, _ = call_options(options, rerank=False)
        self.sync.check_open()
        prepared = self.sync.prepare_vectors(queries, search, texts)
        if prepared is None:
            return []
        planned, checked = prepared
        if planned.mode in CLIENT_SIDE_MODES:
            results = await self._in_worker(self.sync.run_m3, None, planned, queries)
        else:
            results = await self._runner.arun(queries, checked, planned)
        return self.sync.scoped(results, planned)

    # ----------------------------------------------------------------- the async driver

    async def _staged(self, queries: Sequence[str], options: Any) -> list[list[Hit]]:
        """The first stage awaited, then this call's rerank stage (if any) in the worker thread."""
        search, stage_options = call_options(options)
        self.sync.check_open()
        first, stage = first_stage(
            search,
            stage_options.reranker,
            stage_options.rerank_depth,
            default_reranker=self.sync.reranker,
            default_depth=self.sync.rerank_depth,
        )
        results = await self._first_stage(queries, first)
        if stage is None:
            return results
        rerank = functools.partial(
            rerank_hits,
            check_queries(queries),
            results,
            stage.reranker,
            offset=search.offset,
            limit=search.limit,
        )
        return await asyncio.get_running_loop().run_in_executor(self._worker, rerank)

    async def _first_stage(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        planned, texts = self.sync.prepare_texts(queries, options)
        if not texts:
            return []
        if planned.mode in CLIENT_SIDE_MODES:
            results = await self._in_worker(self.sync.run_m3, texts, planned, None)
        else:
            loop = asyncio.get_running_loop()
            assert self.encoder is not None  # prepare_texts refuses texts without an encoder
            emb = await loop.run_in_executor(self._worker, self.encoder.encode_queries, texts)
            results = await self._runner.arun(encoded(emb, texts), texts, planned)
        return self.sync.scoped(results, planned)

    async def _in_worker(self, fn: Any, *args: Any) -> list[list[Hit]]:
        result: list[list[Hit]] = await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)
        return result

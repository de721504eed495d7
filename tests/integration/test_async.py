"""AsyncHybridSearcher and AsyncCollectionManager on pymilvus's AsyncMilvusClient.

Against Milvus Lite's embedded mode (a ``.db`` file) and the loopback gRPC server tier: every mode's
hits equal the sync searcher's (same ids, order, scores); 50 searches run concurrently on one event
loop through the gRPC server and each equals its sync twin; the encoder runs off the event loop;
async get / upsert / delete validate and scope like the sync manager.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3 import AsyncCollectionManager, AsyncHybridSearcher
from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import InputError
from milvus_m3.filters import F
from milvus_m3.search import HybridSearcher
from milvus_m3.search.options import Fusion
from milvus_m3.types import Hit, M3Embeddings

pytestmark = pytest.mark.integration

TEXTS = [
    "Milvus is an open-source vector database for similarity search.",
    "BGE-M3 gives dense and learned sparse vectors from one encoder pass.",
    "Bread dough rises because yeast releases carbon dioxide.",
    "Reciprocal rank fusion merges ranked lists without score calibration.",
    "HNSW is a graph index for approximate nearest neighbour search.",
    "Sourdough needs a starter culture of wild yeast and bacteria.",
    "Sparse lexical weights come from a linear layer over token states.",
    "A vector database shards collections and replicates segments.",
]
QUERIES = ["vector database", "yeast bread", "rank fusion of lists", "sparse token weights", "graph index"]
CASES: list[dict[str, Any]] = [
    {"mode": "hybrid"},
    {"mode": "hybrid", "ranker": "weighted", "weights": (1.0, 0.5)},
    {"mode": "hybrid", "offset": 2, "limit": 3},
    {"mode": "dense"},
    {"mode": "sparse"},
    {"mode": "m3"},
    {"mode": "hybrid", "filter": F.eq("topic", "food")},
    {"mode": "dense", "tenant": "t1"},
    {"mode": "hybrid", "tenant": "t0", "filter": 'id != "d0"'},
    {"mode": "hybrid", "ranker": "dbsf", "tenant": "t1"},
    {"mode": "hybrid", "ranker": "dbsf", "weights": (2.0, 0.5), "offset": 1, "limit": 4},
    {"mode": "hybrid", "rrf_k": 5, "weights": (1.0, 0.5)},
]


def key(hits: Sequence[Hit]) -> list[tuple[Any, float, Any]]:
    return [(h.id, h.score, h.text) for h in hits]


class ThreadRecorder:
    """The tiny embedder, recording the thread each query encoding runs in."""

    def __init__(self, inner: M3Embedder) -> None:
        self.inner = inner
        self.threads: list[str] = []
        self.model_name = inner.model_name
        self.dense_dim = inner.dense_dim

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self.inner.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        self.threads.append(threading.current_thread().name)
        return self.inner.encode_queries(texts)


def _fill(manager: CollectionManager, embedder: M3Embedder) -> None:
    spec = CollectionSpec(
        dense_dim=embedder.dense_dim,
        model_name=embedder.model_name,
        partition_key="tenant",
        scalar_fields=(ScalarField(name="topic", default="misc"),),
    )
    manager.create_collection("docs", spec=spec, recreate=True)
    topics = ["db", "ml", "food", "ml", "db", "food", "ml", "db"]
    manager.upsert(
        "docs",
        ids=[f"d{i}" for i in range(len(TEXTS))],
        texts=TEXTS,
        embeddings=embedder.encode_documents(TEXTS),
        fields={"topic": topics, "tenant": [f"t{i % 2}" for i in range(len(TEXTS))]},
    )


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectionManager]:
    if request.param == "lite":
        m = CollectionManager(str(tmp_path / "async.db"))
        try:
            yield m
        finally:
            m.close()
    else:
        yield request.getfixturevalue("server_manager")


def test_async_hits_equal_the_sync_searchers(tier: CollectionManager, tiny_embedder: M3Embedder) -> None:
    _fill(tier, tiny_embedder)
    sync = HybridSearcher(tier, "docs", tiny_embedder)
    recorder = ThreadRecorder(tiny_embedder)

    async def main() -> list[list[list[Hit]]]:
        async with AsyncCollectionManager(manager=tier) as am:
            searcher = await AsyncHybridSearcher.create(am, "docs", recorder)
            try:
                out = []
                for case in CASES:
                    out.append([await searcher.search(q, **case) for q in QUERIES])
                    out.append(await searcher.search_batch(QUERIES, **case))
                return out
            finally:
                searcher.close()

    got = asyncio.run(main())
    for i, case in enumerate(CASES):
        want = [sync.search(q, **case) for q in QUERIES]
        assert [key(h) for h in got[2 * i]] == [key(h) for h in want], case
        assert [key(h) for h in got[2 * i + 1]] == [key(h) for h in sync.search_batch(QUERIES, **case)], case
        assert any(want), case
    # the event loop thread never ran the encoder
    assert recorder.threads and all(t.startswith("milvus-m3-encode") for t in recorder.threads)


@pytest.mark.server
def test_fifty_concurrent_searches_on_the_grpc_server(
    server_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    _fill(server_manager, tiny_embedder)
    sync = HybridSearcher(server_manager, "docs", tiny_embedder)
    jobs = [(QUERIES[i % len(QUERIES)], CASES[i % len(CASES)]) for i in range(50)]
    want = [key(sync.search(q, **case)) for q, case in jobs]

    async def main() -> list[list[Hit]]:
        async with AsyncCollectionManager(server_manager.connection.uri) as am:
            searcher = AsyncHybridSearcher(am, "docs", tiny_embedder)
            try:
                return await asyncio.gather(*(searcher.search(q, **case) for q, case in jobs))
            finally:
                searcher.close()

    got = asyncio.run(main())
    assert len(got) == 50
    for (q, case), hits, expected in zip(jobs, got, want, strict=True):
        assert key(hits) == expected, (q, case)


def test_async_get_upsert_delete(tier: CollectionManager, tiny_embedder: M3Embedder) -> None:
    _fill(tier, tiny_embedder)
    emb = tiny_embedder.encode_documents(["new one", "new two"])

    async def main() -> None:
        async with AsyncCollectionManager(manager=tier) as am:
            assert (
                await am.upsert(
                    "docs", ids=["n1", "n2"], texts=["new one", "new two"], embeddings=emb, tenant="t0"
                )
                == 2
            )
            rows = await am.get("docs", ["n1", "n2", "d1"], tenant="t0")
            assert [r["id"] for r in rows] == ["n1", "n2"]  # d1 is t1's
            assert rows == tier.get("docs", ["n1", "n2"])
            with pytest.raises(InputError, match="another tenant"):
                await am.upsert("docs", ids=["d1"], texts=["x"], embeddings=emb.select([0]), tenant="t0")
            with pytest.raises(InputError):
                await am.upsert("docs", ids=["bad"], texts=[""], embeddings=emb.select([0]), tenant="t0")
            assert await am.delete("docs", ids=["d1"], tenant="t0") == 0
            assert await am.delete("docs", ids=["n1", "n2"], tenant="t0") == 2
            assert await am.count("docs") == len(TEXTS)

    asyncio.run(main())
    assert tier.get("docs", ["d1"])[0]["text"] == TEXTS[1]


def test_a_cancelled_call_gives_the_lite_file_lock_back(tmp_path: Path, tiny_embedder: M3Embedder) -> None:
    """A call cancelled while it waits for the Lite file's lock (a write holds it) must not keep it."""
    from milvus_m3.engine import lite as _lite

    uri = str(tmp_path / "cancel.db")
    manager = CollectionManager(uri)
    _fill(manager, tiny_embedder)
    emb = tiny_embedder.encode_documents(["late"])

    async def main() -> int:
        async with AsyncCollectionManager(manager=manager) as am:
            lock = _lite.acquire(uri)
            try:
                with lock.write():  # a writer of this process holds the file
                    waiting = asyncio.ensure_future(am.count("docs"))
                    await asyncio.sleep(0.2)
                    waiting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await waiting
            finally:
                _lite.release(uri)
            # the cancelled read took the lock after the writer left and gave it back: a write goes through
            await asyncio.wait_for(
                am.upsert("docs", ids=["late"], texts=["late"], embeddings=emb, tenant="t0"), 60
            )
            return await am.count("docs")

    try:
        assert asyncio.run(main()) == len(TEXTS) + 1
    finally:
        manager.close()


LEG_CASES: list[dict[str, Any]] = [
    {"mode": "hybrid"},
    {"mode": "hybrid", "legs": ["dense", "bm25"]},
    {"mode": "hybrid", "legs": ["sparse", "bm25"], "ranker": "weighted", "weights": (0.7, 1.0)},
    {"mode": "hybrid", "legs": ["bm25"]},
    {"mode": "hybrid", "ranker": "weighted", "weights": (1.0, 0.3, 0.6)},
    {"mode": "hybrid", "ranker": "weighted", "norm_score": False},
    {"mode": "hybrid", "ranker": "rrf", "weights": (1.0, 0.5, 0.5)},
    {"mode": "hybrid", "offset": 3, "limit": 4, "candidate_limit": 7},
    {"mode": "hybrid", "group_by": "topic", "limit": 3},
    {"mode": "hybrid", "legs": ["dense", "bm25"], "filter": F.eq("topic", "db")},
]


@pytest.mark.parametrize("fusion", ["auto", "server", "client"])
def test_async_legs_and_bm25_equal_the_sync_searchers(
    tier: CollectionManager, tiny_embedder: M3Embedder, fusion: Fusion
) -> None:
    """Every legs= / bm25 / norm_score / paging / group_by case, both fusion places: the same hits,
    order and scores as HybridSearcher (search, search_batch and search_embeddings with texts)."""
    spec = CollectionSpec(
        dense_dim=tiny_embedder.dense_dim,
        model_name=tiny_embedder.model_name,
        bm25=True,
        scalar_fields=(ScalarField(name="topic", default="misc"),),
    )
    tier.create_collection("legs3", spec=spec, recreate=True)
    tier.upsert(
        "legs3",
        ids=[f"d{i}" for i in range(len(TEXTS))],
        texts=TEXTS,
        embeddings=tiny_embedder.encode_documents(TEXTS),
        fields={"topic": ["db", "ml", "food", "ml", "db", "food", "ml", "db"]},
    )
    sync = HybridSearcher(tier, "legs3", tiny_embedder, fusion=fusion)
    emb = tiny_embedder.encode_queries(QUERIES)

    async def main() -> list[list[list[Hit]]]:
        async with AsyncCollectionManager(manager=tier) as am:
            searcher = await AsyncHybridSearcher.create(am, "legs3", tiny_embedder, fusion=fusion)
            try:
                out = []
                for case in LEG_CASES:
                    out.append([await searcher.search(q, **case) for q in QUERIES])
                    out.append(await searcher.search_batch(QUERIES, **case))
                    out.append(await searcher.search_embeddings(emb, texts=QUERIES, **case))
                return out
            finally:
                searcher.close()

    got = asyncio.run(main())
    for i, case in enumerate(LEG_CASES):
        want = [sync.search(q, **case) for q in QUERIES]
        assert any(want), case
        assert [key(h) for h in got[3 * i]] == [key(h) for h in want], case
        assert [key(h) for h in got[3 * i + 1]] == [key(h) for h in sync.search_batch(QUERIES, **case)], case
        by_vectors = sync.search_embeddings(emb, texts=QUERIES, **case)
        assert [key(h) for h in got[3 * i + 2]] == [key(h) for h in by_vectors], case


def test_async_search_methods_take_the_sync_keywords() -> None:
    """Each async search method lists the sync method's keywords, with the same defaults."""
    import inspect

    for name in ("search", "search_batch", "search_embeddings", "__init__"):
        sync_sig = inspect.signature(getattr(HybridSearcher, name))
        async_sig = inspect.signature(getattr(AsyncHybridSearcher, name))
        want = [(p.name, p.kind, p.default) for p in list(sync_sig.parameters.values())[2:]]
        got = [(p.name, p.kind, p.default) for p in list(async_sig.parameters.values())[2:]]
        assert got == want, name


def test_async_rerank_stage_equals_the_sync_one(
    tmp_path: Path, tiny_embedder: M3Embedder, tiny_reranker: Any
) -> None:
    """The rerank stage on the async searcher: the same first stage, the same cross-encoder order,
    per searcher and per call, single queries and batches."""
    with CollectionManager(str(tmp_path / "rr.db")) as manager:
        _fill(manager, tiny_embedder)
        sync = HybridSearcher(manager, "docs", tiny_embedder, reranker=tiny_reranker, rerank_depth=8)

        async def main() -> tuple[list[list[Hit]], list[list[Hit]], list[Hit]]:
            async with AsyncCollectionManager(manager=manager) as am:
                searcher = await AsyncHybridSearcher.create(
                    am, "docs", tiny_embedder, reranker=tiny_reranker, rerank_depth=8
                )
                plain = await AsyncHybridSearcher.create(am, "docs", tiny_embedder)
                try:
                    one = [await searcher.search(q, limit=3, offset=1) for q in QUERIES]
                    batch = await searcher.search_batch(QUERIES, limit=4)
                    per_call = await plain.search(QUERIES[0], limit=3, reranker=tiny_reranker, rerank_depth=6)
                    return one, batch, per_call
                finally:
                    searcher.close()
                    plain.close()

        one, batch, per_call = asyncio.run(main())
        assert [key(h) for h in one] == [key(sync.search(q, limit=3, offset=1)) for q in QUERIES]
        assert [key(h) for h in batch] == [key(h) for h in sync.search_batch(QUERIES, limit=4)]
        want = HybridSearcher(manager, "docs", tiny_embedder).search(
            QUERIES[0], limit=3, reranker=tiny_reranker, rerank_depth=6
        )
        assert key(per_call) == key(want)
        assert all(h.rerank_score is not None and h.first_stage_score is not None for h in per_call)


def test_async_with_closes_the_searcher_and_a_closed_one_refuses_searches(
    tmp_path: Path, tiny_embedder: M3Embedder
) -> None:
    from milvus_m3.errors import SearchError

    with CollectionManager(str(tmp_path / "close.db")) as manager:
        _fill(manager, tiny_embedder)

        async def main() -> AsyncHybridSearcher:
            async with AsyncCollectionManager(manager=manager) as am:
                async with AsyncHybridSearcher(am, "docs", tiny_embedder) as searcher:
                    assert await searcher.search(QUERIES[0], limit=2) and not searcher.closed
                assert searcher.closed and searcher.sync.closed
                searcher.close()  # idempotent
                with pytest.raises(SearchError, match="closed"):
                    await searcher.search(QUERIES[0])
                with pytest.raises(SearchError, match="closed"):
                    await searcher.search_batch(QUERIES)
                with pytest.raises(SearchError, match="closed"):
                    await searcher.search_embeddings(tiny_embedder.encode_queries(QUERIES[:1]))
                return searcher

        asyncio.run(main())


def test_async_m3_first_stage_is_reranked_once(
    tmp_path: Path, tiny_embedder: M3Embedder, tiny_reranker: Any
) -> None:
    """Modes m3 / m3-all run in the worker as the first stage only: a searcher's reranker re-orders
    them once, so each hit keeps its m3 score as ``first_stage_score``, as the sync searcher's do."""
    with CollectionManager(str(tmp_path / "m3rr.db")) as manager:
        _fill(manager, tiny_embedder)
        options: dict[str, Any] = {"mode": "m3", "reranker": tiny_reranker, "rerank_depth": 6}
        sync = HybridSearcher(manager, "docs", tiny_embedder, **options)

        async def main() -> list[list[Hit]]:
            async with AsyncCollectionManager(manager=manager) as am:
                async with await AsyncHybridSearcher.create(am, "docs", tiny_embedder, **options) as searcher:
                    return await searcher.search_batch(QUERIES, limit=3)

        def full(hits: Sequence[Hit]) -> list[tuple[Any, float, Any]]:
            return [(h.id, h.score, h.first_stage_score) for h in hits]

        got = asyncio.run(main())
        want = sync.search_batch(QUERIES, limit=3)
        assert [full(h) for h in got] == [full(h) for h in want]
        assert all(h.first_stage_score != h.rerank_score for hits in got for h in hits)

"""Reliability round three (issue 27), the search side: BM25 on an empty collection, pages under tied
scores, tenants racing for one id, tenant values no search can reach, the event loop during deep async
searches. Each case runs on Milvus Lite and, where the engine matters, on the gRPC server tier."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from milvus_m3 import AsyncCollectionManager, AsyncHybridSearcher, CollectionManager, HybridSearcher
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration


@pytest.fixture(params=["lite", "server"])
def any_manager(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[CollectionManager]:
    if request.param == "lite":
        with CollectionManager(uri=str(tmp_path / "r.db")) as m:
            yield m
    else:
        yield request.getfixturevalue("server_manager")


# ----------------------------------------------------------------------------- 10: BM25, nothing stored


@pytest.mark.parametrize("legs", [("bm25",), ("dense", "bm25"), ("dense", "sparse", "bm25")])
def test_bm25_search_on_an_empty_collection_is_no_hits(
    any_manager: CollectionManager, legs: tuple[str, ...]
) -> None:
    enc = FakeEncoder(16)
    any_manager.create_collection(
        "empty_bm25", dense_dim=16, bm25=True, recreate=True, model_name=enc.model_name
    )
    searcher = HybridSearcher(any_manager, "empty_bm25", enc)
    assert searcher.search("what is stored here", legs=legs) == []
    assert searcher.search_batch(["a query", "another one"], legs=legs) == [[], []]
    for fusion in ("client", "server") if len(legs) > 1 else ("auto",):
        assert HybridSearcher(any_manager, "empty_bm25", enc, fusion=fusion).search("x y", legs=legs) == []
    # once a row is there, the same search finds it
    any_manager.upsert(
        "empty_bm25",
        ids=["a"],
        texts=["what is stored here"],
        embeddings=enc.encode_documents(["what is stored here"]),
    )
    assert [h.id for h in searcher.search("stored", legs=legs)] == ["a"]


def test_async_bm25_search_on_an_empty_collection_is_no_hits(tmp_path: Any) -> None:
    enc = FakeEncoder(16)

    async def main() -> list[Any]:
        async with AsyncCollectionManager(uri=str(tmp_path / "a.db")) as manager:
            manager.sync.create_collection(
                "e", dense_dim=16, bm25=True, recreate=True, model_name=enc.model_name
            )
            async with await AsyncHybridSearcher.create(manager, "e", enc) as searcher:
                return await searcher.search("anything at all")

    assert asyncio.run(main()) == []


def test_async_delete_with_a_filter_the_engine_rejects_is_a_filter_error(tmp_path: Any) -> None:
    """16, the async manager too: a raw filter Milvus refuses is a FilterError naming it, never a raw
    MilvusException; nothing is deleted."""
    from milvus_m3.errors import FilterError

    enc = FakeEncoder(16)

    async def main() -> int:
        async with AsyncCollectionManager(uri=str(tmp_path / "d.db")) as manager:
            manager.sync.create_collection("d", dense_dim=16, recreate=True, model_name=enc.model_name)
            await manager.upsert("d", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"]))
            with pytest.raises(FilterError, match=r"'1 == 1'.*build it with milvus_m3\.filters\.F"):
                await manager.delete("d", filter="1 == 1")
            return await manager.count("d")

    assert asyncio.run(main()) == 1

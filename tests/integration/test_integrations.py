"""The LangChain and LlamaIndex retrievers, with the real langchain-core and llama-index-core packages, on
Milvus Lite with the tiny checkpoint: their results equal ``HybridSearcher.search`` (same ids, order
and scores), sync and async, for every mode and with filters, tenants and other search options.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3 import AsyncCollectionManager, AsyncHybridSearcher
from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import ConfigError
from milvus_m3.filters import F
from milvus_m3.search import HybridSearcher

langchain = pytest.importorskip("milvus_m3.integrations.langchain")
llama_index = pytest.importorskip("milvus_m3.integrations.llama_index")

pytestmark = pytest.mark.integration

TEXTS = [
    "Milvus is an open-source vector database for similarity search.",
    "BGE-M3 gives dense and learned sparse vectors from one encoder pass.",
    "Bread dough rises because yeast releases carbon dioxide.",
    "Reciprocal rank fusion merges ranked lists without score calibration.",
    "HNSW is a graph index for approximate nearest neighbour search.",
    "Sourdough needs a starter culture of wild yeast and bacteria.",
]
QUERIES = ["vector database", "yeast bread", "rank fusion"]
CASES: list[dict[str, Any]] = [
    {},
    {"mode": "dense", "limit": 3},
    {"mode": "sparse"},
    {"mode": "m3", "limit": 4},
    {"filter": F.eq("topic", "food")},
    {"tenant": "t1"},
    {"search_kwargs": {"ranker": "weighted", "weights": (1.0, 0.3)}},
]


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: M3Embedder) -> Iterator[HybridSearcher]:
    m = CollectionManager(str(tmp_path_factory.mktemp("adapters") / "adapters.db"))
    spec = CollectionSpec(
        dense_dim=tiny_embedder.dense_dim,
        model_name=tiny_embedder.model_name,
        partition_key="tenant",
        scalar_fields=(ScalarField(name="topic", default="misc"),),
    )
    m.create_collection("docs", spec=spec, recreate=True)
    m.upsert(
        "docs",
        ids=[f"d{i}" for i in range(len(TEXTS))],
        texts=TEXTS,
        embeddings=tiny_embedder.encode_documents(TEXTS),
        metadata=[{"n": i} for i in range(len(TEXTS))],
        fields={"topic": ["db", "ml", "food", "ml", "db", "food"], "tenant": ["t0", "t1"] * 3},
    )
    try:
        yield HybridSearcher(m, "docs", tiny_embedder)
    finally:
        m.close()


def direct(searcher: HybridSearcher, query: str, case: dict[str, Any]) -> list[tuple[Any, float, Any, Any]]:
    options = {k: v for k, v in case.items() if k != "search_kwargs"}
    options.setdefault("limit", 10)
    hits = searcher.search(query, **options, **case.get("search_kwargs", {}))
    return [(h.id, h.score, h.text, dict(h.metadata)) for h in hits]


def test_langchain_documents_equal_the_searchers_hits(searcher: HybridSearcher) -> None:
    from langchain_core.documents import Document

    for case in CASES:
        retriever = langchain.MilvusM3Retriever(searcher=searcher, **case)
        for q in QUERIES:
            docs = retriever.invoke(q)
            assert all(isinstance(d, Document) for d in docs)
            got = [
                (d.metadata["id"], d.metadata["score"], d.page_content, d.metadata["metadata"]) for d in docs
            ]
            assert got == direct(searcher, q, case), (case, q)
            assert [d.id for d in docs] == [str(d.metadata["id"]) for d in docs]
            if "tenant" in case:
                assert {d.metadata["fields"]["tenant"] for d in docs} == {case["tenant"]}
            # ainvoke through a sync searcher (worker thread) gives the same
            adocs = asyncio.run(retriever.ainvoke(q))
            assert [(d.metadata["id"], d.metadata["score"]) for d in adocs] == [(g[0], g[1]) for g in got]
    assert any(direct(searcher, q, {}) for q in QUERIES)


def test_llama_index_nodes_equal_the_searchers_hits(searcher: HybridSearcher) -> None:
    from llama_index.core.schema import NodeWithScore

    for case in CASES:
        retriever = llama_index.MilvusM3Retriever(searcher, **case)
        for q in QUERIES:
            nodes = retriever.retrieve(q)
            assert all(isinstance(n, NodeWithScore) for n in nodes)
            got = [
                (n.node.metadata["id"], n.score, n.node.get_content(), n.node.metadata["metadata"])
                for n in nodes
            ]
            assert got == direct(searcher, q, case), (case, q)
            assert [n.node.node_id for n in nodes] == [str(g[0]) for g in got]
            anodes = asyncio.run(retriever.aretrieve(q))
            assert [(n.node.node_id, n.score) for n in anodes] == [(str(g[0]), g[1]) for g in got]


def test_both_adapters_await_an_async_searcher(searcher: HybridSearcher, tiny_embedder: M3Embedder) -> None:
    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        async with AsyncCollectionManager(manager=searcher.manager) as am:
            asearcher = AsyncHybridSearcher(am, "docs", tiny_embedder)
            try:
                lc = langchain.MilvusM3Retriever(searcher=asearcher, limit=4)
                li = llama_index.MilvusM3Retriever(asearcher, limit=4)
                docs = await lc.ainvoke(QUERIES[0])
                nodes = await li.aretrieve(QUERIES[0])
                sync_docs = await asyncio.to_thread(lc.invoke, QUERIES[0])  # the async searcher's sync twin
                return docs, nodes, sync_docs
            finally:
                asearcher.close()

    docs, nodes, sync_docs = asyncio.run(main())
    want = [(g[0], g[1]) for g in direct(searcher, QUERIES[0], {"limit": 4})]
    assert [(d.metadata["id"], d.metadata["score"]) for d in docs] == want
    assert [(n.node.metadata["id"], n.score) for n in nodes] == want
    assert [(d.metadata["id"], d.metadata["score"]) for d in sync_docs] == want


def test_bad_adapter_arguments_say_the_fix(searcher: HybridSearcher) -> None:
    with pytest.raises(ConfigError, match="HybridSearcher or an AsyncHybridSearcher"):
        langchain.MilvusM3Retriever(searcher=object()).invoke("x")
    with pytest.raises(ConfigError, match="retriever's own fields"):
        llama_index.MilvusM3Retriever(searcher, search_kwargs={"limit": 3}).retrieve("x")


def test_frameworks_are_imported_only_by_their_adapter_and_a_missing_one_names_the_extra() -> None:
    code = (
        "import sys, milvus_m3, milvus_m3.integrations; "
        "assert 'langchain_core' not in sys.modules and 'llama_index' not in sys.modules; "
        "sys.modules['langchain_core'] = None\n"
        "try:\n    import milvus_m3.integrations.langchain\n"
        "except milvus_m3.MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert "pip install 'milvus-m3[langchain]'" in out.stdout

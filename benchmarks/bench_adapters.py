"""Overhead of the framework adapters and the async searcher against a direct ``HybridSearcher.search``.

One Milvus Lite file, the tiny BGE-M3-shaped checkpoint (so the encoder is cheap and any adapter cost
shows), a small corpus. Per round every contender answers the same query (rotated order); the figure
is the median over rounds of the paired ratio time(contender) / time(direct), and the ratio of the
medians. Each contender's hits are checked against the direct ones (same ids and scores) every round.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_adapters.py --rounds 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import CACHE, footer, header, interleaved, median, paired_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()

    import langchain_core
    import llama_index.core

    from milvus_m3 import AsyncCollectionManager, AsyncHybridSearcher, CollectionManager, M3Embedder
    from milvus_m3.integrations.langchain import MilvusM3Retriever as LangChainRetriever
    from milvus_m3.integrations.llama_index import MilvusM3Retriever as LlamaIndexRetriever
    from milvus_m3.testing import build_checkpoint

    checkpoint = CACHE / "tiny-bge-m3-v1"
    if not (checkpoint / ".complete").is_file():
        build_checkpoint(checkpoint)
    header(
        "adapter overhead vs HybridSearcher.search (Milvus Lite, tiny checkpoint)",
        threads=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
        f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS')}",
        versions=f"langchain-core {langchain_core.__version__}, llama-index-core {llama_index.core.__version__}",
        corpus=f"{args.docs} docs, limit {args.limit}, hybrid RRF (client-side on Lite), {args.rounds} rounds",
    )
    embedder = M3Embedder(checkpoint, device="cpu", precision="fp32")
    words = "vector database sparse dense fusion bread yeast graph index token weight search rank".split()
    texts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + f" doc {i}" for i in range(args.docs)
    ]
    queries = [f"{words[i % len(words)]} {words[(i * 5 + 3) % len(words)]}" for i in range(50)]

    with tempfile.TemporaryDirectory() as tmp:
        manager = CollectionManager(str(Path(tmp) / "bench.db"))
        manager.create_collection("docs", dense_dim=embedder.dense_dim, model_name=embedder.model_name)
        manager.upsert(
            "docs",
            ids=[f"d{i}" for i in range(args.docs)],
            texts=texts,
            embeddings=embedder.encode_documents(texts),
        )
        loop = asyncio.new_event_loop()
        amanager = AsyncCollectionManager(manager=manager)
        asearcher = AsyncHybridSearcher(amanager, "docs", embedder)
        searcher = asearcher.sync
        langchain = LangChainRetriever(searcher=searcher, limit=args.limit)
        llama = LlamaIndexRetriever(searcher, limit=args.limit)
        state = {"i": 0}

        def query() -> str:
            return queries[state["i"] % len(queries)]

        want: dict[int, list[tuple[Any, float]]] = {}

        def direct() -> list[tuple[Any, float]]:
            got = [(h.id, h.score) for h in searcher.search(query(), limit=args.limit)]
            want[state["i"]] = got
            return got

        contenders = [
            ("direct", direct),
            (
                "langchain.invoke",
                lambda: [(d.metadata["id"], d.metadata["score"]) for d in langchain.invoke(query())],
            ),
            (
                "llama_index.retrieve",
                lambda: [(n.node.metadata["id"], n.score) for n in llama.retrieve(query())],
            ),
            (
                "AsyncHybridSearcher.search",
                lambda: [
                    (h.id, h.score)
                    for h in loop.run_until_complete(asearcher.search(query(), limit=args.limit))
                ],
            ),
        ]
        results: dict[int, dict[str, Any]] = {}

        def on_result(name: str, r: int, elapsed: float, result: Any) -> None:
            results.setdefault(r, {})[name] = result
            if len(results[r]) == len(contenders):
                first = results[r]["direct"]
                bad = [n for n, v in results[r].items() if v != first]
                assert not bad, f"round {r}: {bad} differ from the direct search"
                state["i"] += 1

        for _name, fn in contenders:  # warm up every path once
            fn()
        times = interleaved(contenders, args.rounds, on_result=on_result, quiet=True)
        print(f"\n{'contender':<28} {'median ms':>10} {'median paired ratio':>20} {'ratio of medians':>17}")
        base = median(times["direct"])
        for name, _ in contenders:
            ratio = median(paired_ratios(times, name, "direct"))
            print(
                f"{name:<28} {median(times[name]) * 1e3:>10.3f} {ratio:>20.3f} {median(times[name]) / base:>17.3f}"
            )
        print("\nevery round: each contender's ids and scores equal the direct search's")
        asearcher.close()
        loop.run_until_complete(amanager.close())
        loop.close()
        manager.close()
    footer()


if __name__ == "__main__":
    main()

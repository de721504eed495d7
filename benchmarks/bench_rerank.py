"""The rerank stage's cost on the full-size bge-reranker-v2-m3 architecture (random weights), CPU.

Per query and depth (20, 50, 100 first-stage hits): the first stage (``HybridSearcher.search``: the
full-size BGE-M3 encodes the query, Milvus Lite runs the hybrid search over SciFact passages stored
with random vectors: search cost does not depend on what the vectors hold), our
``CrossEncoderReranker.score`` on those hits, and FlagEmbedding's ``FlagReranker.compute_score`` on the
same (query, text) pairs, with the largest score difference between the two. Target: ours at least
1.1x FlagReranker's speed with equal scores (abs diff <= 1e-5 on fp32).

To keep one CPU run to minutes, passages are the first ``--words`` words of SciFact abstracts (a
cross-encoder's cost grows with the pair's tokens: a full abstract, ~370 tokens, costs ~8x more).
Checkpoints (built once, ~15 s each, 2.2 GB each):

    python -m milvus_m3.testing .cache/bge-m3-full-random --full-size
    python -m milvus_m3.testing .cache/bge-reranker-full-random --full-size --reranker
    python benchmarks/bench_rerank.py [--depths 20,50,100] [--words 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

EMBEDDER_DIR = C.CACHE / "bge-m3-full-random"
RERANKER_DIR = C.CACHE / "bge-reranker-full-random"
TARGET = 1.1
QUERIES = (
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "Vitamin D deficiency is linked to a higher risk of tuberculosis.",
)


def passages(n: int, words: int) -> list[tuple[str, str]]:
    try:
        corpus = C.scifact_corpus()[:n]
    except OSError:
        base = "Hybrid retrieval combines dense embeddings with learned sparse weights for exact terms"
        corpus = [(f"d{i}", f"{i} {base}") for i in range(n)]
    return [(doc_id, " ".join(text.split()[:words])) for doc_id, text in corpus]


def build_collection(uri: str, embedder: Any, docs: list[tuple[str, str]]) -> None:
    from milvus_m3 import CollectionManager, M3Embeddings

    rng = np.random.default_rng(0)
    dense = rng.standard_normal((len(docs), embedder.dense_dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = [
        {
            int(t): float(w)
            for t, w in zip(rng.choice(250000, 60, replace=False), rng.random(60) + 0.01, strict=True)
        }
        for _ in docs
    ]
    with CollectionManager(uri) as manager:
        manager.create_collection(
            "bench", dense_dim=embedder.dense_dim, model_name=embedder.model_name, recreate=True
        )
        manager.upsert(
            "bench",
            ids=[d for d, _ in docs],
            texts=[t for _, t in docs],
            embeddings=M3Embeddings(dense, sparse),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,50,100")
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embedder", type=Path, default=EMBEDDER_DIR)
    parser.add_argument("--reranker", type=Path, default=RERANKER_DIR)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    for path in (args.embedder, args.reranker):
        if not (path / "model.safetensors").is_file():
            print(f"missing {path}: build it first (see the module docstring)", file=sys.stderr)
            return 2

    import torch
    from FlagEmbedding import FlagReranker

    from milvus_m3 import CollectionManager, CrossEncoderReranker, HybridSearcher, M3Embedder

    torch.set_num_threads(args.threads)
    C.header(
        "bench_rerank: cross-encoder second stage, full-size bge-reranker-v2-m3 architecture (random weights), CPU",
        threads=f"torch {torch.get_num_threads()} (OMP_NUM_THREADS / MKL_NUM_THREADS as set: one thread)",
        versions=f"torch {torch.__version__}, FlagEmbedding {version('FlagEmbedding')}, transformers {version('transformers')}",
        data=f"{args.docs} SciFact passages cut to their first {args.words} words; one query per depth",
    )
    embedder = M3Embedder(args.embedder, device="cpu", precision="fp32", threads=args.threads)
    ours = CrossEncoderReranker(args.reranker, device="cpu", precision="fp32", threads=args.threads)
    flag = FlagReranker(str(args.reranker), use_fp16=False, devices="cpu")  # its defaults: batch 128, max 512
    print(
        f"ours: {ours!r}, encoder {ours._model.kind}, batch_size 32; FlagReranker: batch_size 128, max_length 512"
    )
    docs = passages(args.docs, args.words)
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "bench.db")
        build_collection(uri, embedder, docs)
        with CollectionManager(uri) as manager:
            searcher = HybridSearcher(manager, "bench", embedder)
            searcher.search(QUERIES[0], limit=5)  # warm-up: first Milvus call, first encode
            ours.score(QUERIES[0], [docs[0][1]])
            flag.compute_score([(QUERIES[0], docs[0][1])])
            print()
            print(
                "depth  tokens/pair  first stage   ours      FlagReranker  ours/first  flag/ours  max |diff|"
            )
            ratios = []
            for i, depth in enumerate(depths):
                query = QUERIES[i % len(QUERIES)]
                t0 = time.perf_counter()
                hits = searcher.search(query, limit=depth)
                first_s = time.perf_counter() - t0
                texts = [h.text or "" for h in hits]
                timed: dict[str, float] = {}
                scores: dict[str, list[float]] = {}
                pairs = [(query, t) for t in texts]
                contenders = [
                    ("ours", lambda pairs=pairs: ours.score_pairs(pairs)),
                    ("flag", lambda pairs=pairs: flag.compute_score(pairs)),
                ]
                for name, fn in contenders if i % 2 == 0 else contenders[::-1]:
                    t0 = time.perf_counter()
                    scores[name] = list(fn())
                    timed[name] = time.perf_counter() - t0
                diff = max(abs(a - b) for a, b in zip(scores["ours"], scores["flag"], strict=True))
                tokens = np.mean(
                    [
                        len(x) + len(ours._model.token_ids([query])[0]) + 4
                        for x in ours._model.token_ids(texts)
                    ]
                )
                ratio = timed["flag"] / timed["ours"]
                ratios.append((ratio, diff))
                print(
                    f"{depth:>5}  {tokens:>11.1f}  {first_s * 1e3:>8.1f} ms  {timed['ours']:>6.2f} s  "
                    f"{timed['flag']:>9.2f} s  {timed['ours'] / first_s:>9.1f}x  {ratio:>8.2f}x  {diff:.2e}",
                    flush=True,
                )
    worst = min(r for r, _ in ratios)
    equal = all(d <= 1e-5 for _, d in ratios)
    print()
    print(
        f"ours vs FlagReranker.compute_score: {worst:.2f}x at worst (target >= {TARGET}x) with max |diff| "
        f"{max(d for _, d in ratios):.2e} -> {'MET' if worst >= TARGET and equal else 'NOT MET'}"
    )
    print(
        "why: FlagReranker runs a first batch (up to 128 pairs) once to probe memory and then again for the "
        "scores, so at depth <= 128 it computes every pair twice; ours sorts by length and pads per batch "
        "and runs the plain-torch XLM-R encoder (the embedder's) with no transformers wrapper"
    )
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

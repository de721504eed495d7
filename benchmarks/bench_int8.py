"""int8 vs fp32 on CPU: M3Embedder(precision="int8") against M3Embedder(precision="fp32") on the full-size
BGE-M3 architecture (random weights: ``python -m milvus_m3.testing .cache/bge-m3-full-random --full-size``).

Target: int8 at least 2.0x fp32 (median of per-round ratios, same texts, one run). Also printed, on
these random weights: the dense cosine of int8 to fp32 and the share of each text's top-10 sparse
terms (by weight) that int8 keeps. Random weights say how much the arithmetic moves; the retrieval
quality of int8 on a trained model needs the real checkpoint (or the SciFact run of item 4).

    python benchmarks/bench_int8.py [--texts 8] [--max-length 128] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

FULL_DIR = C.CACHE / "bge-m3-full-random"
TARGET = 2.0


def texts(n: int) -> list[str]:
    try:
        corpus = C.scifact_corpus()
        return [text for _, text in corpus[:n]]
    except OSError:
        base = "Hybrid retrieval combines dense embeddings with learned sparse weights for exact terms. "
        return [f"{i}: " + base * (1 + i % 4) for i in range(n)]


def top10(vec: dict[int, float]) -> set[int]:
    return set(sorted(vec, key=vec.__getitem__)[-10:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from milvus_m3.embedder.model import M3Embedder
    from milvus_m3.testing import FULL_SIZE, build_checkpoint

    if not (FULL_DIR / "model.safetensors").is_file():
        print(f"building the full-size checkpoint in {FULL_DIR} ...", flush=True)
        build_checkpoint(FULL_DIR, **FULL_SIZE)
    common = {
        "device": "cpu",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "document_max_length": args.max_length,
        "overflow": "truncate",
    }
    fp32 = M3Embedder(FULL_DIR, precision="fp32", **common)
    int8 = M3Embedder(FULL_DIR, precision="int8", **common)
    docs = texts(args.texts)
    tokens = sum(fp32.encode_documents(docs).token_counts)
    C.header(
        "int8 (dynamic quantisation of Linear layers, per-channel weight scales) vs fp32, M3Embedder on CPU, full-size random BGE-M3",
        model=f"{FULL_DIR} (24 layers, hidden 1024, random weights)",
        texts=f"{len(docs)} SciFact abstracts cut to {args.max_length} tokens ({tokens} tokens), batch {args.batch_size}",
        threads=f"M3Embedder(threads={args.threads}); torch.get_num_threads() = {torch.get_num_threads()}",
        torch=f"{torch.__version__}, quantized engine {torch.backends.quantized.engine}",
    )
    outputs: dict[str, object] = {}

    def keep(name: str, _r: int, _t: float, result: object) -> None:
        outputs[name] = result

    times = C.interleaved(
        [("fp32", lambda: fp32.encode_documents(docs)), ("int8", lambda: int8.encode_documents(docs))],
        args.rounds,
        on_result=keep,
    )
    ratios = C.paired_ratios(times, "fp32", "int8")
    speed = C.median(ratios)
    a, b = outputs["fp32"], outputs["int8"]
    cos = (a.dense * b.dense).sum(axis=1)  # type: ignore[attr-defined]
    kept = [len(top10(x) & top10(y)) / len(top10(x)) for x, y in zip(a.sparse, b.sparse, strict=True) if x]  # type: ignore[attr-defined]
    print("\nseconds per call (median):", ", ".join(f"{n} {C.median(v):.2f} s" for n, v in times.items()))
    print(
        f"tokens/s: fp32 {tokens / C.median(times['fp32']):.1f}, int8 {tokens / C.median(times['int8']):.1f}"
    )
    print(
        f"int8 speed-up over fp32: {speed:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
        f"target >= {TARGET}x: {'met' if speed >= TARGET else 'NOT met'}"
    )
    print(f"dense cosine int8 vs fp32: mean {float(np.mean(cos)):.4f}, min {float(np.min(cos)):.4f}")
    print(f"top-10 sparse terms kept by int8: mean {float(np.mean(kept)):.3f}, min {float(np.min(kept)):.3f}")
    sizes = [len(x) for x in a.sparse]  # type: ignore[attr-defined]
    print(
        f"  (random weights: fp32 sparse vectors hold {min(sizes)}-{max(sizes)} terms, median "
        f"{int(np.median(sizes))}; the share is over min(10, terms) of each non-empty one)"
    )
    # The scheme before per-channel scales, on the same texts (quality only, not timed): context for
    # the two figures above.
    per_tensor = M3Embedder(FULL_DIR, precision="int8", **common)
    per_tensor._backend._modules = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(fp32._backend._modules), {torch.nn.Linear}, dtype=torch.qint8
    )
    c = per_tensor.encode_documents(docs)
    cos_t = (a.dense * c.dense).sum(axis=1)  # type: ignore[attr-defined]
    kept_t = [len(top10(x) & top10(y)) / len(top10(x)) for x, y in zip(a.sparse, c.sparse, strict=True) if x]  # type: ignore[attr-defined]
    print(
        f"per-tensor int8 (torch's default scales, the first version) on the same texts: dense cosine "
        f"mean {float(np.mean(cos_t)):.4f}, top-10 sparse terms kept mean {float(np.mean(kept_t)):.3f}"
    )
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

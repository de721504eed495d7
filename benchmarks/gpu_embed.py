"""GPU embedding throughput: M3Embedder against FlagEmbedding called directly, fp16 and bf16.

Run through ``benchmarks/gpu_embed.sh`` (it bounds the whole run to under 10 minutes). The model is the
full-size BGE-M3 architecture with random weights (built once into .cache/bge-m3-full-random; its cost
is the real model's). Texts: ``--n`` SciFact abstracts (title + text, their natural length mix, cut to
``--max-length``), the same for both contenders, same batch size. Per precision the two contenders run
interleaved for ``--rounds`` rounds; the figures are medians.

A third contender, "M3Embedder+tokens", runs 4x the batch size with batches bounded by
``--max-batch-tokens`` padded tokens (M3Embedder's token budget), so long texts run in smaller batches
and short ones in bigger ones.

Printed per precision and contender: docs/s, tokens/s (real tokens, without padding), the ratio to
FlagEmbedding, and the share of the GPU's matrix throughput reached, with

    FLOPs of one text of s tokens = 2 * P * s + 4 * L * h * s^2

where P is the parameter count of the matrix multiplications (per layer 4h^2 + 2hI, plus the sparse
head; the embedding tables are lookups), L the layers and h the hidden size (QK^T and AV). "useful"
counts real tokens only; "executed" adds padding and, for FlagEmbedding, its probe pass. The share is
given against the spec sheet (H200 dense fp16/bf16: 989 TFLOP/s) and against a large matmul measured
on the device at the start.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_embed as E

SPEC_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def spec_peak(name: str) -> float | None:
    for key, value in SPEC_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def matmul_peak(torch: Any, dtype: Any, n: int = 8192, iters: int = 30) -> float:
    """TFLOP/s of an n x n x n matmul in ``dtype`` on this GPU (the best of a few timed runs)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 * iters / (start.elapsed_time(end) / 1000) / 1e12)
    del a, b
    torch.cuda.empty_cache()
    return best


def pick_gpu_texts(model_dir: Path, n: int, max_length: int) -> tuple[list[str], list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        corpus = [t for _, t in C.scifact_corpus()]
    except OSError:
        print(
            f"SciFact not found at {C.SCIFACT} (set MILVUS_M3_SCIFACT); using built-in sentences", flush=True
        )
        base = (
            "Dense retrieval maps queries and documents into one vector space. "
            "Learned sparse weights keep the exactness of lexical matching. "
        )
        corpus = [base * (1 + i % 24) for i in range(n)]
    rng = np.random.default_rng(0)
    idx = rng.choice(len(corpus), n, replace=n > len(corpus))
    texts = [corpus[i] for i in idx]
    lengths = [min(len(x), max_length) for x in tok(texts, add_special_tokens=True)["input_ids"]]
    return texts, lengths


BUDGET = "M3Embedder+tokens"
"""M3Embedder with 4x the batch size, batches bounded by --max-batch-tokens padded tokens."""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--n", type=int, default=4096, help="texts per call")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precisions", default="fp16,bf16")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=131072,
        help="a third contender: M3Embedder with 4x --batch-size texts per batch bounded by this many "
        "padded tokens (0: leave it out)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds for the timed part; rounds stop early when the next would exceed it",
    )
    p.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="check this script's code paths on CPU with the tiny checkpoint (fp32; figures meaningless)",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("FlagEmbedding").setLevel(logging.ERROR)
    import torch

    smoke = args.smoke_cpu
    if not smoke and not torch.cuda.is_available():
        print(
            f"CUDA is not available to torch {torch.__version__}; this benchmark needs a GPU", file=sys.stderr
        )
        return 2
    device = "cpu" if smoke else "cuda:0"
    sync = (lambda: None) if smoke else torch.cuda.synchronize
    started = time.perf_counter()
    model_dir = args.model_dir or E.ensure_checkpoint(tiny=smoke)
    config = json.loads((model_dir / "config.json").read_text())
    texts, lengths = pick_gpu_texts(model_dir, args.n, args.max_length)
    gpu = "CPU smoke test" if smoke else torch.cuda.get_device_name(0)
    C.header(
        "gpu_embed: full-size BGE-M3 architecture (random weights) on CUDA",
        gpu=f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}",
        model=str(model_dir),
        workload=(
            f"{args.n} SciFact abstracts, {sum(lengths)} real tokens (median {int(np.median(lengths))}, "
            f"{sum(1 for x in lengths if x == args.max_length)} cut to {args.max_length}), batch_size "
            f"{args.batch_size}, up to {args.rounds} interleaved rounds per precision"
        ),
        setup=f"checkpoint and texts ready after {time.perf_counter() - started:.0f}s",
    )
    useful = C.flops(config, lengths)
    spec = spec_peak(gpu)
    per_round_budget = args.budget / max(1, len(args.precisions.split(",")))
    precisions = ["fp32"] if smoke else [x.strip() for x in args.precisions.split(",") if x.strip()]
    for precision in precisions:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        measured = 1.0 if smoke else matmul_peak(torch, dtype)
        print(
            f"\n## {precision}: measured 8192^3 matmul {measured:.0f} TFLOP/s"
            + (f" (spec sheet {spec:.0f})" if spec else ""),
            flush=True,
        )
        runners = {
            E.M3: E.make_m3(model_dir, args.batch_size, args.max_length, device=device, precision=precision),
            **(
                {
                    BUDGET: E.make_m3(
                        model_dir,
                        4 * args.batch_size,
                        args.max_length,
                        device=device,
                        precision=precision,
                        max_batch_tokens=args.max_batch_tokens,
                    )
                }
                if args.max_batch_tokens
                else {}
            ),
            E.FLAG: E.make_flag(
                model_dir, args.batch_size, args.max_length, device=device, precision=precision
            ),
        }
        for fn in runners.values():
            fn(texts[: 2 * args.batch_size])
        sync()
        outputs: dict[str, Any] = {}
        times: dict[str, list[float]] = {name: [] for name in runners}
        t_prec = time.perf_counter()
        for r in range(args.rounds):
            order = list(runners) if r % 2 == 0 else list(runners)[::-1]
            for name in order:
                sync()
                t0 = time.perf_counter()
                outputs[name] = runners[name](texts)  # numpy outputs: synchronised
                times[name].append(time.perf_counter() - t0)
            spent = time.perf_counter() - t_prec
            print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in runners), flush=True)
            if spent / (r + 1) * (r + 2) > per_round_budget:
                break
        print(
            f"{'contender':17s} {'s/call':>7s} {'docs/s':>8s} {'tokens/s':>9s} {'vs Flag':>8s} "
            f"{'useful TFLOP/s':>15s} {'executed':>9s} {'% of measured':>14s} {'% of spec':>10s}"
        )
        for name, ts in times.items():
            med = C.median(ts)
            ratio = C.median([b / a for a, b in zip(ts, times[E.FLAG], strict=False)])
            executed = C.flops(
                config,
                C.executed_lengths(
                    lengths,
                    4 * args.batch_size if name == BUDGET else args.batch_size,
                    probe=name == E.FLAG,
                    plan=(
                        E.m3_batch_plan(args.max_batch_tokens if name == BUDGET else None)
                        if name != E.FLAG
                        else None
                    ),
                ),
            )
            u, x = useful / med / 1e12, executed / med / 1e12
            print(
                f"{name:17s} {med:7.2f} {args.n / med:8.0f} {sum(lengths) / med:9.0f} {ratio:7.3f}x "
                f"{u:15.1f} {x:9.1f} {100 * u / measured:13.1f}% "
                + (f"{100 * u / spec:9.1f}%" if spec else "      n/a")
            )
        print(
            f"  outputs M3Embedder vs FlagEmbedding (tolerance 2e-3 in half precision): "
            f"{E.compare(outputs[E.M3], outputs[E.FLAG], tol=2e-3)}"
        )
        del runners, outputs
        gc.collect()
        if not smoke:
            torch.cuda.empty_cache()
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

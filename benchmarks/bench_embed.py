"""Embedding speed: M3Embedder against FlagEmbedding called directly and pymilvus's BGEM3EmbeddingFunction.

Every contender gets the same SciFact abstracts (a mix of short and long, some cut to the max length),
the same max length and batch size, on the same checkpoint: by default the full-size BGE-M3
architecture (XLM-R large, 24 layers, hidden 1024, vocab 250,002, sparse and ColBERT heads) with random
weights, which costs exactly what the real model costs. Rounds are interleaved (the order rotates each
round) and the ratios are paired per round, then the median is taken: the machine may be shared.

    python benchmarks/bench_embed.py                  # full size: 24 texts, 256 tokens, batch 8, 3 rounds
    python benchmarks/bench_embed.py --tiny           # 2-layer checkpoint: the per-call overheads dominate
    python benchmarks/bench_embed.py --profile        # also: where one call's time goes, per contender

The checkpoints are built once into .cache/ (full size: 2.3 GB, about a minute). pymilvus's
``BGEM3EmbeddingFunction`` comes from the ``milvus-model`` package; install it outside the shared venv
with ``pip install --no-deps --target .cache/pylib milvus-model onnxruntime flatbuffers`` (it needs
FlagEmbedding, peft, datasets and scipy, which the venv has; it would pip-install any that are missing at
import time, so the benchmark checks first and skips it instead).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

FULL_DIR = C.CACHE / "bge-m3-full-random"
TINY_DIR = C.CACHE / "bge-m3-tiny-random"
M3 = "M3Embedder"
FLAG = "FlagEmbedding"
PMM = "milvus-model"
TOL = 1e-4


# ----------------------------------------------------------------------------------------- setup


def ensure_checkpoint(tiny: bool) -> Path:
    """Build the random-weight checkpoint once; reruns reuse it."""
    from milvus_m3.testing import FULL_SIZE, build_checkpoint

    path = TINY_DIR if tiny else FULL_DIR
    if (path / "sparse_linear.pt").is_file() and (path / "model.safetensors").is_file():
        return path
    print(f"building {'tiny' if tiny else 'full-size'} checkpoint in {path} ...", flush=True)
    t0 = time.perf_counter()
    build_checkpoint(path, **({} if tiny else FULL_SIZE))
    print(f"  built in {time.perf_counter() - t0:.0f}s", flush=True)
    return path


def pick_texts(model_dir: Path, n: int, max_length: int) -> tuple[list[str], list[int]]:
    """``n`` SciFact abstracts spread from short to longer than ``max_length``; their token counts
    (with <s> and </s>, after cutting to ``max_length``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    corpus = [text for _, text in C.scifact_corpus()]
    lengths = [len(ids) for ids in tok(corpus, add_special_tokens=True)["input_ids"]]
    idx = C.mixed_length_texts(corpus, lengths, n, max_length)
    return [corpus[i] for i in idx], [min(lengths[i], max_length) for i in idx]


def padded_tokens(lengths: Sequence[int], batch_size: int) -> int:
    """Tokens the model runs on, padding included, with length-sorted batches (what all three do)."""
    srt = sorted(lengths, reverse=True)
    return sum(len(srt[i : i + batch_size]) * srt[i] for i in range(0, len(srt), batch_size))


# ----------------------------------------------------------------------------------- contenders

Output = tuple[np.ndarray, list[dict[int, float]]]


def make_m3(
    model_dir: Path,
    batch_size: int,
    max_length: int,
    device: str = "cpu",
    precision: str = "fp32",
    max_batch_tokens: int | None = None,
) -> Callable[[list[str]], Output]:
    import torch

    from milvus_m3.embedder.model import M3Embedder

    emb = M3Embedder(
        str(model_dir),
        device=device,
        precision=precision,
        threads=torch.get_num_threads(),  # keep the --threads setting the other contenders run with
        max_batch_tokens=max_batch_tokens,
        batch_size=batch_size,
        document_max_length=max_length,
        overflow="truncate",
    )

    def run(texts: list[str]) -> Output:
        out = emb.encode_documents(texts)
        return np.asarray(out.dense, dtype=np.float32), list(out.sparse)

    return run


def quiet_flag_progress() -> None:
    """FlagEmbedding shows progress bars whenever there are more texts than one batch; they cost
    microseconds per batch but fill the results with noise, so they are switched off for everyone."""
    import FlagEmbedding.inference.embedder.encoder_only.m3 as flag_m3

    if getattr(flag_m3, "_bench_quiet", False):
        return
    tqdm, trange = flag_m3.tqdm, flag_m3.trange
    flag_m3.tqdm = lambda *a, **k: tqdm(*a, **{**k, "disable": True})
    flag_m3.trange = lambda *a, **k: trange(*a, **{**k, "disable": True})
    flag_m3._bench_quiet = True


def make_flag(
    model_dir: Path,
    batch_size: int,
    max_length: int,
    device: str = "cpu",
    precision: str = "fp32",
    max_batch_tokens: int | None = None,
) -> Callable[[list[str]], Output]:
    from FlagEmbedding import BGEM3FlagModel

    quiet_flag_progress()
    model = BGEM3FlagModel(
        str(model_dir),
        use_fp16=precision == "fp16",
        use_bf16=precision == "bf16",
        devices=device,
        normalize_embeddings=True,
        batch_size=batch_size,
        passage_max_length=max_length,
    )

    def run(texts: list[str]) -> Output:
        out = model.encode(
            texts,
            batch_size=batch_size,
            max_length=max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=False,
        )
        sparse = [{int(k): float(v) for k, v in row.items()} for row in out["lexical_weights"]]
        return np.asarray(out["dense_vecs"], dtype=np.float32), sparse

    run.model = model  # type: ignore[attr-defined]
    return run


def m3_batch_plan(max_batch_tokens: int | None = None) -> Any:
    """M3Embedder's own batching (it ends a batch early rather than pad much), for the cost model."""
    try:
        from milvus_m3.embedder.batching import plan_batches as _plan_batches
    except ImportError:
        return None
    return lambda lengths, batch_size: _plan_batches(lengths, batch_size, max_batch_tokens)


def milvus_model_problem() -> str | None:
    """Why pymilvus's BGEM3EmbeddingFunction cannot run here, or None."""
    C.add_pylib()
    if importlib.util.find_spec("milvus_model") is None:
        return (
            "milvus-model is not installed (pip install --no-deps --target .cache/pylib milvus-model "
            "onnxruntime flatbuffers)"
        )
    # milvus_model pip-installs missing dependencies when imported: refuse instead.
    missing = [
        m for m in ("peft", "datasets", "scipy", "FlagEmbedding") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return f"milvus-model would pip-install {', '.join(missing)} at import time; install them first"
    return None


def make_milvus_model(
    model_dir: Path,
    batch_size: int,
    max_length: int,
    device: str = "cpu",
    precision: str = "fp32",
    max_batch_tokens: int | None = None,
) -> Callable[[list[str]], Output]:
    from milvus_model.hybrid import BGEM3EmbeddingFunction

    quiet_flag_progress()

    # It passes unknown keywords to BGEM3FlagModel: that is how the max length is set.
    fn = BGEM3EmbeddingFunction(
        model_name=str(model_dir),
        batch_size=batch_size,
        device=device,
        use_fp16=precision == "fp16",
        use_bf16=precision == "bf16",
        passage_max_length=max_length,
        return_dense=True,
        return_sparse=True,
    )

    def run(texts: list[str]) -> Output:
        out = fn.encode_documents(texts)
        csr = out["sparse"]
        sparse = []
        for r in range(csr.shape[0]):
            lo, hi = csr.indptr[r], csr.indptr[r + 1]
            sparse.append(
                {int(i): float(w) for i, w in zip(csr.indices[lo:hi], csr.data[lo:hi], strict=False)}
            )
        return np.stack(out["dense"]).astype(np.float32), sparse

    return run


# ------------------------------------------------------------------------------------ equality


def compare(a: Output, b: Output, tol: float = TOL) -> str:
    """Dense max abs diff; sparse: same token sets and weights within ``tol``."""
    dense_diff = float(np.max(np.abs(a[0] - b[0]))) if a[0].size else 0.0
    set_diffs = 0
    mismatched_max_w = 0.0
    w_diff = 0.0
    for x, y in zip(a[1], b[1], strict=False):
        kx, ky = set(x), set(y)
        only = kx ^ ky
        set_diffs += len(only)
        for k in only:
            mismatched_max_w = max(mismatched_max_w, x.get(k, 0.0), y.get(k, 0.0))
        for k in kx & ky:
            w_diff = max(w_diff, abs(x[k] - y[k]))
    ok = dense_diff <= tol and w_diff <= tol and mismatched_max_w <= tol
    sets = (
        "same token sets"
        if set_diffs == 0
        else (f"{set_diffs} tokens in one set only (largest weight {mismatched_max_w:.2e})")
    )
    return (
        f"{'EQUAL' if ok else 'DIFFERENT'}: dense max |diff| {dense_diff:.2e}; {sets}; "
        f"sparse max |diff| {w_diff:.2e}"
    )


# ------------------------------------------------------------------------------------- profile


class ForwardTimer:
    """Times every call of FlagEmbedding's inference module (both contenders run that module)."""

    def __init__(self) -> None:
        from FlagEmbedding.finetune.embedder.encoder_only.m3 import (
            EncoderOnlyEmbedderM3ModelForInference as cls,
        )

        self.cls = cls
        self.original = cls.forward
        self.calls: list[tuple[tuple[int, ...], float]] = []

    def __enter__(self) -> ForwardTimer:
        original, calls = self.original, self.calls

        def timed_forward(module: Any, text_input: Any = None, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = original(module, text_input, *args, **kwargs)
            calls.append((tuple(text_input["input_ids"].shape), time.perf_counter() - t0))
            return out

        self.cls.forward = timed_forward
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.forward = self.original


CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "tokenize (tokenizer __call__)",
        lambda f, n: n == "__call__" and f.endswith("tokenization_utils_base.py"),
    ),
    ("pad (tokenizer.pad)", lambda f, n: n == "pad" and f.endswith("tokenization_utils_base.py")),
    ("forward (model, all calls)", lambda f, n: n == "timed_forward"),
    ("sparse -> dict", lambda f, n: n in ("_process_token_weights", "_sparse_rows")),
    (
        "model.to / model.float",
        lambda f, n: n in ("to", "float") and f.endswith(os.path.join("nn", "modules", "module.py")),
    ),
    ("tensor -> numpy", lambda f, n: n == "_convert_to_numpy"),
]


def profile_once(
    fn: Callable[[list[str]], Output], texts: list[str], batches: int
) -> tuple[dict[str, float], list[Any], str]:
    prof = cProfile.Profile()
    with ForwardTimer() as timer:
        t0 = time.perf_counter()
        prof.enable()
        fn(texts)
        prof.disable()
        total = time.perf_counter() - t0
    raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    shares = {"total": total}
    for label, match in CATEGORIES:
        shares[label] = sum(v[3] for (f, _, n), v in raw.items() if match(f, n))
    fw = timer.calls
    # One forward more than there are batches: the first one was a probe of the longest batch.
    shares["probe"] = fw[0][1] if len(fw) == batches + 1 and fw[0][0] == fw[1][0] else 0.0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(10)
    return shares, fw, buf.getvalue()


def profile(
    runners: dict[str, Callable[[list[str]], Output]], texts: list[str], repeats: int, batch_size: int
) -> list[str]:
    """cProfile ``repeats`` calls of each runner, interleaved; medians per category."""
    names = [n for n in (FLAG, M3) if n in runners]
    runs: dict[str, list[tuple[dict[str, float], list[Any], str]]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(profile_once(runners[name], texts, -(-len(texts) // batch_size)))
    lines: list[str] = []
    for name in names:
        # The call with the median total, so that the categories add up to its total.
        ranked = sorted(runs[name], key=lambda run: run[0]["total"])
        shares, fw, top_text = ranked[len(ranked) // 2]
        total = shares["total"]
        lines.append(
            f"## profile: {name}, {len(texts)} texts: the median (by total) of {repeats} cProfile'd "
            f"calls, interleaved with the other contender"
        )
        lines.append(f"  total wall under the profiler {total:.3f}s")
        accounted = 0.0
        for label, _ in CATEGORIES:
            accounted += shares[label]
            lines.append(f"  {label:32s} {shares[label]:8.3f}s  {100 * shares[label] / total:5.1f}%")
        if shares["probe"]:
            lines.append(
                f"    of which the probe pass        {shares['probe']:8.3f}s  "
                f"{100 * shares['probe'] / total:5.1f}%  (the longest batch run twice)"
            )
        lines.append(
            f"  {'everything else':32s} {total - accounted:8.3f}s  {100 * (total - accounted) / total:5.1f}%"
        )
        lines.append(
            f"  forward calls: {len(fw)} (batch x width: {', '.join(f'{s[0]}x{s[1]}' for s, _ in fw)})"
        )
        top = [ln for ln in top_text.splitlines() if ln.strip()][-11:]
        lines.append("  top functions by own time:")
        lines.extend("    " + ln for ln in top)
    return lines


# ---------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="2-layer checkpoint (seconds): overheads dominate")
    p.add_argument("--model-dir", type=Path, default=None, help="checkpoint to use instead of the built one")
    p.add_argument("--n", type=int, default=None, help="texts per call (default 24; 256 with --tiny)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=None, help="default 8; 32 with --tiny")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 9 with --tiny)")
    p.add_argument("--contenders", default=f"{M3},{FLAG},{PMM}")
    p.add_argument("--profile", action="store_true", help="profile one call of M3Embedder and FlagEmbedding")
    p.add_argument("--profile-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = p.parse_args(argv)
    n = args.n or (256 if args.tiny else 24)
    batch = args.batch_size or (32 if args.tiny else 8)
    rounds = args.rounds or (9 if args.tiny else 3)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("FlagEmbedding").setLevel(logging.ERROR)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = args.model_dir or ensure_checkpoint(args.tiny)
    texts, lengths = pick_texts(model_dir, n, args.max_length)
    real = sum(lengths)
    padded = padded_tokens(lengths, batch)
    C.header(
        f"bench_embed: {'tiny' if args.tiny and not args.model_dir else 'full-size'} checkpoint, CPU fp32",
        checkpoint=str(model_dir),
        workload=(
            f"{n} SciFact abstracts, token lengths {min(lengths)}..{max(lengths)} (median "
            f"{int(np.median(lengths))}, {sum(1 for x in lengths if x == args.max_length)} cut to "
            f"max_length {args.max_length}), batch_size {batch}, {rounds} interleaved rounds"
        ),
        tokens=f"{real} real tokens per call ({padded} with padding in length-sorted batches)",
        torch=f"{torch.__version__}, {torch.get_num_threads()} threads",
    )

    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    factories: dict[str, Callable[..., Callable[[list[str]], Output]]] = {
        M3: make_m3,
        FLAG: make_flag,
        PMM: make_milvus_model,
    }
    runners: dict[str, Callable[[list[str]], Output]] = {}
    for name in wanted:
        if name == PMM:
            problem = milvus_model_problem()
            if problem:
                print(f"{PMM}: skipped: {problem}")
                continue
        t0 = time.perf_counter()
        try:
            runners[name] = factories[name](model_dir, batch, args.max_length)
        except Exception as exc:
            print(f"{name}: could not load ({type(exc).__name__}: {exc})")
            continue
        runners[name](texts[:2])  # warm-up: first-call allocations, lazy imports
        print(f"loaded {name} in {time.perf_counter() - t0:.1f}s (+ warm-up on 2 texts)", flush=True)

    outputs: dict[str, Output] = {}

    def keep(name: str, r: int, elapsed: float, result: Any) -> None:
        outputs[name] = result

    contenders = [(name, (lambda f=fn: f(texts))) for name, fn in runners.items()]
    print("timing (seconds per call of all texts):", flush=True)
    cpu: dict[str, list[float]] = {}
    times = C.interleaved(contenders, rounds, on_result=keep, cpu=cpu)

    print("\n## results (medians over rounds; speed ratios paired per round, > 1 = faster)")
    ref = FLAG if FLAG in times else next(iter(times))
    print(
        f"{'contender':14s} {'s/call':>8s} {'docs/s':>8s} {'tokens/s':>9s}   {'wall speed vs ' + ref:34s} "
        f"cpu-time speed vs {ref}"
    )
    for name in times:
        med = C.median(times[name])
        rr = [1 / r for r in C.paired_ratios(times, name, ref)]
        cr = [1 / r for r in C.paired_ratios(cpu, name, ref)]
        print(
            f"{name:14s} {med:8.3f} {n / med:8.2f} {real / med:9.1f}   {C.median(rr):6.3f}x "
            f"(rounds {min(rr):.3f}..{max(rr):.3f})        {C.median(cr):6.3f}x"
        )
    config = json.loads((model_dir / "config.json").read_text())
    ours = C.flops(config, C.executed_lengths(lengths, batch, probe=False, plan=m3_batch_plan()))
    theirs = C.flops(config, C.executed_lengths(lengths, batch, probe=True))
    plain = C.flops(config, C.executed_lengths(lengths, batch, probe=False))
    print(
        f"model FLOPs executed (padding included): M3Embedder {ours / 1e9:.0f} G, FlagEmbedding "
        f"{theirs / 1e9:.0f} G with its probe pass -> {theirs / ours:.3f}x expected from the forward alone "
        f"(probe pass {theirs / plain:.3f}x, M3Embedder's tighter batches {plain / ours:.3f}x)"
    )
    if M3 in times and FLAG in times:
        speed = C.median([1 / r for r in C.paired_ratios(times, M3, FLAG)])
        verdict = "MET" if speed >= 1.15 else "NOT MET"
        print(
            f"target M3Embedder >= 1.15x FlagEmbedding direct (wall, median of paired rounds): "
            f"{speed:.3f}x -> {verdict}"
        )
    print("\n## outputs (last round), against FlagEmbedding direct; tolerance 1e-4")
    if FLAG in outputs:
        for name, out in outputs.items():
            if name != FLAG:
                print(f"  {name}: {compare(out, outputs[FLAG])}")

    if args.profile:
        print()
        print("\n".join(profile(runners, texts, args.profile_repeats, batch)), flush=True)
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

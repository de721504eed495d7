"""Shared helpers for the benchmark scripts: run headers, interleaved timing, medians, SciFact texts.

Every figure the benchmarks print is a ratio of contenders measured in the same run, interleaved
(A, B, C, B, C, A, ...) and repeated, so that load from other processes on a shared machine hits all
contenders alike. Absolute times are printed too, for orientation only.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
SCIFACT = Path(os.environ.get("MILVUS_M3_SCIFACT", ROOT.parent / "shared" / "data" / "scifact"))
PYLIB = CACHE / "pylib"
"""Optional packages installed outside the venv (``pip install --no-deps --target .cache/pylib ...``)."""


def command_line() -> str:
    """The command that is running, as one could paste it again (from the repository root)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return " ".join(["python", shlex.quote(shown), *map(shlex.quote, sys.argv[1:])])


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def header(title: str, **extra: Any) -> None:
    """Print what ran, where and under how much load, before any figure."""
    print(f"# {title}")
    print(f"command: {command_line()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  git: {git_revision()}")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"load average at start {load()}"
    )
    for key, value in extra.items():
        print(f"{key}: {value}")
    sys.stdout.flush()


def footer() -> None:
    print(f"load average at end: {load()} (the machine is shared; ratios are paired per round)")
    sys.stdout.flush()


def interleaved(
    contenders: Sequence[tuple[str, Callable[[], Any]]],
    rounds: int,
    *,
    rotate: bool = True,
    on_result: Callable[[str, int, float, Any], None] | None = None,
    quiet: bool = False,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Run every contender once per round, in an order rotated each round; return wall seconds per round.

    Rotation puts each contender first, middle and last equally often, so slow drifts in machine load
    and warm-cache effects do not favour one of them. ``cpu``, when given, receives this process's CPU
    seconds per call (all threads): less sensitive to other processes taking the cores, though spinning
    worker threads still count.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    if cpu is not None:
        for name, _ in contenders:
            cpu.setdefault(name, [])
    k = len(contenders)
    for r in range(rounds):
        order = [contenders[(r + j) % k] for j in range(k)] if rotate else list(contenders)
        for name, fn in order:
            c0 = time.process_time()
            t0 = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - t0
            used = time.process_time() - c0
            times[name].append(elapsed)
            if cpu is not None:
                cpu[name].append(used)
            if on_result is not None:
                on_result(name, r, elapsed, result)
        if not quiet:
            print(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {times[n][-1]:.3f}s" for n, _ in contenders)
                + f"  (load {load()})",
                flush=True,
            )
    return times


def paired_ratios(times: dict[str, list[float]], name: str, reference: str) -> list[float]:
    """time(name) / time(reference) per round: > 1 means ``name`` is slower."""
    return [a / b for a, b in zip(times[name], times[reference], strict=False)]


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def spread(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"median {np.median(arr):.3f} (min {arr.min():.3f}, max {arr.max():.3f}, n={arr.size})"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def scifact_corpus(root: Path = SCIFACT) -> list[tuple[str, str]]:
    """(doc id, "title text") for every SciFact document, in file order."""
    docs = read_jsonl(root / "corpus.jsonl")
    return [(str(d["_id"]), f"{d.get('title', '')} {d.get('text', '')}".strip()) for d in docs]


def scifact_queries(
    root: Path = SCIFACT, split: str = "test"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries that have judgements in ``split`` and the qrels {query id: {doc id: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qid, did, grade = parts[0], parts[1], int(parts[-1])
            qrels.setdefault(qid, {})[did] = grade
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(root / "queries.jsonl") if str(q["_id"]) in qrels}
    return queries, qrels


def mixed_length_texts(texts: Sequence[str], lengths: Sequence[int], n: int, max_length: int) -> list[int]:
    """Indices of ``n`` distinct texts whose token lengths spread evenly from short to a bit past
    ``max_length`` (so that about a fifth are cut to it): the same mix for every contender."""
    lens = np.asarray(lengths)
    order = np.argsort(lens, kind="stable")
    lo = max(int(np.percentile(lens, 1)), 16)
    targets = np.linspace(lo, max_length * 1.25, n)
    chosen: list[int] = []
    taken: set[int] = set()
    sorted_lens = lens[order]
    for target in targets:
        pos = int(np.searchsorted(sorted_lens, target))
        # nearest free text at or after the target length, else before it
        for cand in list(range(pos, len(order))) + list(range(pos - 1, -1, -1)):
            idx = int(order[cand])
            if idx not in taken:
                taken.add(idx)
                chosen.append(idx)
                break
    return chosen


def add_pylib() -> None:
    """Make packages installed under .cache/pylib importable (kept out of the shared venv)."""
    if PYLIB.is_dir() and str(PYLIB) not in sys.path:
        sys.path.append(str(PYLIB))


# ------------------------------------------------------------------ transformer cost model


def flops(config: dict[str, Any], lengths: Sequence[int]) -> float:
    """FLOPs of an encoder forward over texts of these lengths: 2 * P * s + 4 * L * h * s^2 each, P being
    the parameters of the matrix multiplications (per layer 4h^2 + 2hI, plus the sparse head)."""
    L, h, inter = (
        int(config["num_hidden_layers"]),
        int(config["hidden_size"]),
        int(config["intermediate_size"]),
    )
    params = L * (4 * h * h + 2 * h * inter) + h  # + sparse head (h -> 1)
    s = np.asarray(lengths, dtype=np.float64)
    return float((2 * params * s + 4 * L * h * s**2).sum())


def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    srt = sorted(lengths, reverse=True)
    return [srt[i : i + batch_size] for i in range(0, len(srt), batch_size)]


def executed_lengths(
    lengths: Sequence[int], batch_size: int, probe: bool, plan: Callable[..., Any] | None = None
) -> list[int]:
    """Per row, the padded width it runs at (longest-first batches of ``batch_size``, or ``plan``'s
    ``(start, stop)`` batches over the sorted lengths); plus the first batch again when ``probe``."""
    srt = sorted(lengths, reverse=True)
    if plan is not None:
        bs = [srt[a:b] for a, b in plan(np.asarray(srt, dtype=np.int64), batch_size)]
    else:
        bs = batches(lengths, batch_size)
    out: list[int] = []
    for b in bs:
        out += [b[0]] * len(b)
    if probe and bs:
        out += [bs[0][0]] * len(bs[0])
    return out

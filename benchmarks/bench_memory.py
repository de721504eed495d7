"""Peak memory of ``milvus-m3 ingest`` on many short documents: does it stay bounded (streaming)?

Runs the real CLI (``python -m milvus_m3 ingest``) into a fresh Milvus Lite file, on JSONL files of
short documents (sentences of SciFact abstracts, 8-60 words, unique ids), with the tiny BGE-M3-shaped
checkpoint from ``milvus_m3.testing`` so that the model costs little and the pipeline's own memory
shows. For each size (default 10,000 and 100,000 documents) it samples, every 0.1 s, the resident
memory of the ingest process and of the Milvus Lite server it starts, and reports their peaks, the
exact peak of the ingest process (``ru_maxrss`` from ``wait4``), and the growth of the ingest process's
RSS over the second half of the run. Bounded means: the ingest process's peak at 100k is about its
peak at 10k (the input file is streamed, batches are dropped once written). The Milvus Lite server
holds the collection itself (growing segments, indexes), so its memory grows with the data by design.

    python benchmarks/bench_memory.py                       # 10k and 100k documents
    python benchmarks/bench_memory.py --sizes 2000,20000    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

WORK = C.CACHE / "bench_memory"
TINY_DIR = C.CACHE / "bge-m3-tiny-random"


def ensure_tiny() -> Path:
    from milvus_m3.testing import build_checkpoint

    if not (TINY_DIR / "sparse_linear.pt").is_file():
        build_checkpoint(TINY_DIR)
    return TINY_DIR


def make_docs(n: int) -> Path:
    """``n`` short documents (SciFact sentences, cycled, with a counter so each text is unique)."""
    path = WORK / f"docs-{n}.jsonl"
    if path.is_file():
        return path
    sentences: list[str] = []
    for _, text in C.scifact_corpus():
        for s in re.split(r"(?<=[.!?])\s+", text):
            words = s.split()
            if 8 <= len(words) <= 60:
                sentences.append(s)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i in range(n):
            s = sentences[i % len(sentences)]
            text = s if i < len(sentences) else f"{s} (copy {i // len(sentences)})"
            fh.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    tmp.replace(path)
    return path


class Sampler(threading.Thread):
    """RSS of a process and of each of its descendants, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (t, ingest rss, descendants' rss)
        self.peak_children: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop.is_set():
            try:
                rss = self.root.memory_info().rss
                kids = 0
                for child in self.root.children(recursive=True):
                    try:
                        r = child.memory_info().rss
                        name = child.name()
                    except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                        continue
                    kids += r
                    self.peak_children[name] = max(self.peak_children.get(name, 0), r)
                self.samples.append((time.perf_counter() - t0, rss, kids))
            except self.psutil.NoSuchProcess:
                break
            self.stop.wait(self.interval)


def run_ingest(n: int, model: Path, batch_size: int, threads: int | None) -> dict[str, Any]:
    docs = make_docs(n)
    out = WORK / f"run-{n}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "milvus_m3",
        "ingest",
        str(docs),
        "--collection",
        "mem",
        "--uri",
        str(out / "mem.db"),
        "--model",
        str(model),
        "--id-field",
        "id",
        "--batch-size",
        str(batch_size),
        "--quiet",
        "--json",
    ]
    t0 = time.perf_counter()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=C.ROOT, env=env
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    stdout_chunks: list[str] = []
    stderr_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    for t in readers:
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"ingest of {n} docs failed ({proc.returncode}):\n{''.join(stderr_chunks)[-3000:]}")
    report = json.loads("".join(stdout_chunks).strip().splitlines()[-1])
    s = np.array([(t, r, k) for t, r, k in sampler.samples], dtype=np.float64)
    half = s[s[:, 0] >= s[-1, 0] / 2]
    slope = np.polyfit(half[:, 0], half[:, 1], 1)[0] if len(half) > 5 else float("nan")
    mib = 1024 * 1024
    return {
        "n": n,
        "seconds": elapsed,
        "written": report.get("written", report.get("upserted", "?")),
        "report": report,
        "ingest_peak_exact": usage.ru_maxrss * 1024 / mib,  # Linux: KiB
        "ingest_peak": s[:, 1].max() / mib,
        "ingest_median": float(np.median(s[:, 1])) / mib,
        "children_peak": s[:, 2].max() / mib,
        "total_peak": (s[:, 1] + s[:, 2]).max() / mib,
        "children": {k: v / mib for k, v in sampler.peak_children.items()},
        "growth_mib_per_10k_docs": slope * elapsed / n * 10_000 / mib if n else float("nan"),
        "samples": len(s),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--batch-size", type=int, default=64, help="ingest --batch-size (its default)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the tiny one, built once)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for the ingest process (default 1: on an oversubscribed machine torch's "
        "spinning OpenMP threads made the tiny model 15x slower in CPU time; 0 = leave unset)",
    )
    args = p.parse_args(argv)
    model = args.model or ensure_tiny()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    C.header(
        "bench_memory: peak RSS of `milvus-m3 ingest` (CLI, Milvus Lite, streaming)",
        model=f"{model} (tiny BGE-M3-shaped checkpoint: the pipeline's memory, not the model's, shows)",
        input="JSONL of short documents (SciFact sentences, 8-60 words), one per line",
        threads=f"OMP_NUM_THREADS={args.threads or 'unset'} for the ingest process",
    )
    results = []
    for n in sizes:
        print(f"ingesting {n} documents ...", flush=True)
        r = run_ingest(n, model, args.batch_size, args.threads)
        results.append(r)
        print(
            f"  done in {r['seconds']:.0f}s ({n / r['seconds']:.0f} docs/s), written {r['written']}",
            flush=True,
        )
    print("\n## peak resident memory (MiB)")
    print(
        f"{'docs':>8s} {'ingest peak':>12s} {'(wait4)':>8s} {'ingest median':>14s} {'growth/10k docs':>16s} "
        f"{'Milvus Lite etc. peak':>22s} {'all peak':>9s}"
    )
    for r in results:
        print(
            f"{r['n']:8d} {r['ingest_peak']:12.0f} {r['ingest_peak_exact']:8.0f} {r['ingest_median']:14.0f} "
            f"{r['growth_mib_per_10k_docs']:+15.1f}M {r['children_peak']:22.0f} {r['total_peak']:9.0f}"
        )
    for r in results:
        print(
            f"  {r['n']} docs: child processes' peaks: "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(r["children"].items()))
        )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        ratio = b["ingest_peak_exact"] / a["ingest_peak_exact"]
        print(
            f"\ningest process peak at {b['n']} docs / at {a['n']} docs: {ratio:.3f}x for {b['n'] / a['n']:.0f}x "
            f"the documents -> {'bounded' if ratio < 1.25 else 'GROWS with the input'}"
        )
        print(
            f"Milvus Lite server peak: {a['children_peak']:.0f} -> {b['children_peak']:.0f} MiB "
            "(it holds the collection: grows with the data by design)"
        )
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

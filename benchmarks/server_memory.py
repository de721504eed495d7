"""Memory and disk per document of a milvus-m3 collection at BGE-M3's sizes, measured on Milvus Lite's server.

    python benchmarks/server_memory.py [--steps 10000,20000,40000] [--out benchmarks/results/server_memory.txt]

What it does: one milvus-m3 collection (CollectionSpec(dense_dim=1024): 1024-d float32 dense on AUTOINDEX,
SPARSE_INVERTED_INDEX sparse, a short text and a small JSON metadata per row) in a Milvus Lite gRPC server
(``milvus_lite.server.Server`` on 127.0.0.1, the same binary the server tests run). Rows are synthetic at
BGE-M3's shapes: unit-norm random dense vectors; sparse vectors with 80-200 non-zeros (uniform) whose
token ids follow a Zipf law (s=1.1) over BGE-M3's 250,002-token vocabulary, weights in (0, 0.4].
It fills the collection in steps; after each step it restarts the server on the same data file, runs a
dense, a sparse and a hybrid search (so the collection and its indexes are loaded), and reads the server
process's resident memory (VmRSS in /proc) and the data file's size. The slope between steps is the cost
per document; the intercept (the server with an empty collection) is not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.engine.connection import RetryPolicy
from milvus_m3.search import HybridSearcher
from milvus_m3.types import M3Embeddings
from tests.fixtures_server import LiteServer

VOCAB = 250_002
DIM = 1024
BATCH = 1000


def zipf_ids(rng: np.random.Generator, n: int, s: float = 1.1) -> np.ndarray:
    """n distinct token ids in [4, VOCAB), drawn with probability ~ 1 / rank**s (rank 1 = id 4)."""
    out: set[int] = set()
    while len(out) < n:
        draw = rng.zipf(s, size=2 * n)
        draw = draw[draw < VOCAB - 4] + 3
        out.update(int(x) for x in draw[: n - len(out)])
    return np.fromiter(out, dtype=np.int64)


def batch(rng: np.random.Generator, start: int, n: int) -> tuple[list[str], list[str], M3Embeddings, int]:
    dense = rng.standard_normal((n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = []
    nnz = 0
    for _ in range(n):
        k = int(rng.integers(80, 201))
        ids = zipf_ids(rng, k)
        weights = rng.uniform(0.001, 0.4, size=k).astype(np.float32)
        sparse.append({int(i): float(w) for i, w in zip(ids, weights, strict=False)})
        nnz += k
    ids = [f"doc-{start + i:08d}" for i in range(n)]
    texts = [f"document {start + i}" for i in range(n)]
    return ids, texts, M3Embeddings(dense=dense, sparse=sparse), nnz


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(server: LiteServer, name: str, rng: np.random.Generator) -> tuple[int, int]:
    """Restart the server on its data file, load by searching, return (RSS KiB, data file bytes)."""
    server.stop()
    server.start()
    with CollectionManager(server.uri, retry=RetryPolicy(total_seconds=120), timeout=300) as m:
        q = batch(rng, 0, 1)[2]
        searcher = HybridSearcher(m, name)
        for mode in ("dense", "sparse", "hybrid"):
            searcher.search_embeddings(q, limit=10, mode=mode)  # type: ignore[arg-type]
        time.sleep(1.0)
        assert server.process is not None
        return rss_kib(server.process.pid), server.db_file.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="10000,20000,40000")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    steps = [int(x) for x in args.steps.split(",")]
    rng = np.random.default_rng(20261129)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say("# server_memory: resident memory and disk per document, Milvus Lite 2.5.1 gRPC server")
    say(f"command: python benchmarks/server_memory.py --steps {args.steps}")
    say(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    say(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    say(
        f"rows: dense {DIM}-d float32 (unit norm), sparse 80-200 nnz (Zipf s=1.1 over {VOCAB} ids), ~20 B text"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = LiteServer(Path(tmp) / "mem.db")
        server.start()
        name = "mem"
        with CollectionManager(server.uri, retry=RetryPolicy(total_seconds=120), timeout=300) as m:
            m.create_collection(name, spec=CollectionSpec(dense_dim=DIM, model_name="BAAI/bge-m3"))
        base_rss, base_disk = measure(server, name, rng)
        say(f"{'docs':>8} {'RSS MiB':>9} {'disk MiB':>9} {'nnz/doc':>8}")
        say(f"{0:>8} {base_rss / 1024:>9.1f} {base_disk / 2**20:>9.1f} {'-':>8}")
        done, nnz_total = 0, 0
        points = [(0, base_rss * 1024, base_disk)]
        for target in steps:
            with CollectionManager(server.uri, retry=RetryPolicy(total_seconds=120), timeout=300) as m:
                while done < target:
                    n = min(BATCH, target - done)
                    ids, texts, emb, nnz = batch(rng, done, n)
                    m.upsert(name, ids=ids, texts=texts, embeddings=emb, batch_size=250)
                    done += n
                    nnz_total += nnz
                assert m.count(name) == done
            rss, disk = measure(server, name, rng)
            points.append((done, rss * 1024, disk))
            say(f"{done:>8} {rss / 1024:>9.1f} {disk / 2**20:>9.1f} {nnz_total / done:>8.1f}")
        server.stop()
    docs = np.array([p[0] for p in points], dtype=float)
    for label, col in (("RSS", 1), ("disk", 2)):
        ys = np.array([p[col] for p in points], dtype=float)
        slope = np.polyfit(docs[1:], ys[1:], 1)[0] if len(docs) > 2 else (ys[-1] - ys[0]) / docs[-1]
        say(
            f"{label} per document (least-squares slope over the filled steps): {slope:,.0f} B "
            f"-> {slope * 1e6 / 2**30:,.2f} GiB per million documents"
        )
    nnz_avg = nnz_total / max(done, 1)
    raw = DIM * 4 + nnz_avg * 8
    say(
        f"raw vector bytes per document: dense {DIM * 4} + sparse {nnz_avg:.1f} nnz x 8 B = {raw:,.0f} B "
        f"-> {raw * 1e6 / 2**30:.2f} GiB per million"
    )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

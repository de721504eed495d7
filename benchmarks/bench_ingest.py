"""Ingestion speed: ``ingest()`` (what ``milvus-m3 ingest`` runs) against embedding alone and the naive loop.

Three contenders over the same SciFact abstracts (title + text, each cut to its first ``--max-tokens``
tokens), the same batch size and the same model, in one process with the model loaded once:

    embed   ``M3Embedder.encode_documents`` over the batches, nothing written: the ceiling.
    naive   encode a batch, then upsert it, in turn (what a script without a pipeline does).
    ingest  ``milvus_m3.ingest.ingest`` on a JSONL file: reading, validation, ids, embedding in a
            producer thread while the previous batch is upserted, checkpoints (fsync) after each batch,
            errors file, exactly as the CLI runs it.

Each round runs the three in a rotated order, each into a fresh Milvus Lite collection (created before
the clock starts); ratios are paired per round and the median is printed. Each contender runs in a
fresh worker thread (``ingest`` embeds in one anyway): on an oversubscribed machine torch's OpenMP team
driven from the main thread was measured 5-30x slower than the same calls from a worker thread (tiny
model, load average 12-50 on 2 cores), which would credit the pipeline with a gain that is only
threading. ``--main-thread`` runs ``embed`` and ``naive`` in the main thread instead. Target: ingest >= 0.9x embed
on the full-size architecture, where the model dominates and writes hide behind it.

    python benchmarks/bench_ingest.py                 # full size (24 layers, hidden 1024; random weights):
                                                      #   24 texts x 128 tokens, batch 8, 1 round
    python benchmarks/bench_ingest.py --tiny          # 2-layer checkpoint: seconds; writes weigh more here

The full-size checkpoint is built once into .cache/bge-m3-full-random (2.3 GB); on a 2-core CPU it
embeds roughly 35 tokens/s, so keep ``--n`` x ``--max-tokens`` small there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

FULL_DIR = C.CACHE / "bge-m3-full-random"
TINY_DIR = C.CACHE / "bge-m3-tiny-random"
EMBED, NAIVE, INGEST = "embed", "naive", "ingest"


def ensure_checkpoint(tiny: bool, model: str | None) -> Path:
    """The checkpoint to use: --model, else the cached random-weight one (built on first use)."""
    if model:
        return Path(model)
    from milvus_m3.testing import FULL_SIZE, build_checkpoint

    path = TINY_DIR if tiny else FULL_DIR
    if (path / "sparse_linear.pt").is_file() and (path / "model.safetensors").is_file():
        return path
    print(f"building the {'tiny' if tiny else 'full-size'} checkpoint in {path} ...", flush=True)
    t0 = time.perf_counter()
    staging = path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    build_checkpoint(staging, **({} if tiny else FULL_SIZE))
    staging.rename(path)
    print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a fresh thread and wait; its exception is raised here."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    th = threading.Thread(target=target, name="bench-contender")
    th.start()
    th.join()
    if failure:
        raise failure[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tiny", action="store_true", help="the 2-layer test checkpoint instead of the full size"
    )
    ap.add_argument("--model", default=None, help="a checkpoint directory (default: the cached random one)")
    ap.add_argument("--n", type=int, default=None, help="texts (default: 24 full size, 1024 tiny)")
    ap.add_argument("--max-tokens", type=int, default=128, help="each text is cut to this many tokens")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="documents per batch (default: 8 full, 64 tiny)"
    )
    ap.add_argument("--encode-batch-size", type=int, default=16, help="texts per forward pass inside a batch")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default: 1 full size, 3 tiny)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    ap.add_argument(
        "--main-thread",
        action="store_true",
        help="run embed and naive in the main thread (see the note on OpenMP above)",
    )
    args = ap.parse_args()
    n = args.n or (1024 if args.tiny else 24)
    batch = args.batch_size or (64 if args.tiny else 8)
    rounds = args.rounds or (3 if args.tiny else 1)
    warnings.filterwarnings("ignore")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from milvus_m3.collection.manager import CollectionManager, CollectionSpec
    from milvus_m3.embedder.model import M3Embedder
    from milvus_m3.ingest import ingest

    ckpt = ensure_checkpoint(args.tiny, args.model)
    C.header(
        "ingest() vs embedding alone vs the naive encode-then-upsert loop",
        checkpoint=f"{ckpt} ({json.loads((ckpt / 'config.json').read_text())['num_hidden_layers']} layers, "
        f"hidden {json.loads((ckpt / 'config.json').read_text())['hidden_size']})",
        texts=f"{n} SciFact abstracts (title + text), each cut to {args.max_tokens} tokens",
        batching=f"{batch} documents per batch, {args.encode_batch_size} per forward pass; {rounds} round(s)",
        torch=f"{torch.__version__}, {torch.get_num_threads()} intra-op threads; contenders run in "
        + ("the main thread (ingest: its producer thread)" if args.main_thread else "a worker thread each"),
    )
    t0 = time.perf_counter()
    embedder = M3Embedder(
        ckpt,
        device="cpu",
        precision="fp32",
        overflow="truncate",
        batch_size=args.encode_batch_size,
        threads=torch.get_num_threads(),  # keep the --threads setting the other contenders run with
    )
    print(f"model loaded in {time.perf_counter() - t0:.1f} s", flush=True)

    corpus = C.scifact_corpus()[:n]
    ids = [did for did, _ in corpus]
    texts = []
    for _, text in corpus:
        spans = embedder.chunk_spans(text, args.max_tokens - 2)  # room for <s> and </s>
        texts.append(text[spans[0][0] : spans[0][1]])
    tokens = sum(embedder.count_tokens(texts)) + 2 * len(texts)
    print(f"{len(texts)} texts, {tokens} tokens with <s> and </s>", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    data = work / "docs.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=False)),
        encoding="utf-8",
    )
    manager = CollectionManager(str(work / "bench.db"))
    spec = CollectionSpec(dense_dim=embedder.dense_dim, model_name=embedder.model_name)
    embedder.encode_documents(texts[:2])  # warm-up: first-call allocations
    write_s: list[float] = []

    def fresh(name: str) -> str:
        manager.create_collection(name, spec=spec, recreate=True)
        return name

    def run_embed() -> None:
        for i in range(0, n, batch):
            embedder.encode_documents(texts[i : i + batch])

    def run_naive() -> None:
        coll = "naive"
        spent = 0.0
        for i in range(0, n, batch):
            emb = embedder.encode_documents(texts[i : i + batch])
            w0 = time.perf_counter()
            rows = manager.prepare_rows(
                spec, ids=ids[i : i + batch], texts=texts[i : i + batch], embeddings=emb
            )
            manager.write_rows(coll, rows, mode="upsert")
            spent += time.perf_counter() - w0
        write_s.append(spent)

    def run_ingest() -> None:
        rep = ingest(
            [data],
            manager=manager,
            collection="ingest",
            encoder=embedder,
            batch_size=batch,
            state_path=work / "state.json",
            errors_path=work / "errors.jsonl",
            progress=False,
        )
        assert rep.written == n and rep.failed == 0, rep

    contenders: list[tuple[str, Callable[[], None]]] = [
        (EMBED, run_embed),
        (NAIVE, run_naive),
        (INGEST, run_ingest),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        order = [contenders[(r + j) % len(contenders)] for j in range(len(contenders))]
        for name, fn in order:
            if name != EMBED:
                fresh(name)
            t = time.perf_counter()
            if args.main_thread:
                fn()
            else:
                in_thread(fn)
            times[name].append(time.perf_counter() - t)
            if name != EMBED:
                assert manager.count(name) == n
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
            + f"  (load {C.load()})",
            flush=True,
        )

    def docs_per_s(name: str) -> float:
        return n / C.median(times[name])

    print()
    print(f"{'contender':<8} {'docs/s':>9} {'tokens/s':>10}   wall s per round")
    for name in (EMBED, NAIVE, INGEST):
        print(
            f"{name:<8} {docs_per_s(name):>9.2f} {tokens / C.median(times[name]):>10.1f}   "
            f"{', '.join(f'{t:.2f}' for t in times[name])}"
        )
    print(
        f"naive loop: {C.median(write_s):.2f} s of {C.median(times[NAIVE]):.2f} s spent building rows and upserting"
    )
    vs_embed = [e / i for e, i in zip(times[EMBED], times[INGEST], strict=False)]
    vs_naive = [v / i for v, i in zip(times[NAIVE], times[INGEST], strict=False)]
    print(f"ratio ingest/embedding-alone (docs/s): {C.median(vs_embed):.3f}   target >= 0.9")
    print(f"ratio ingest/naive loop      (docs/s): {C.median(vs_naive):.3f}")
    C.footer()
    manager.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

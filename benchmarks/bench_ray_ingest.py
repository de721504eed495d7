"""Ray ingestion: throughput of 1 vs 2 embedding actors, and the Ray path's overhead against ``ingest()``.

Same passages (SciFact title + text, each cut to its first ``--words`` words), same model, same batch
size, into fresh collections of a Milvus gRPC server on 127.0.0.1 (Milvus Lite's server binary, the
server test tier), one run each, in this order:

    local     ``milvus_m3.ingest.ingest`` in this process (what ``milvus-m3 ingest`` runs), model loaded
              before the clock starts, torch on one thread.
    ray-1     ``ray_ingest`` with one actor (one CPU, one thread): the job's wall time, which includes
              the probe task and the actor's model load.
    ray-2     the same with two actors (one CPU, one thread each).
    ray-fixed ``ray_ingest`` of one batch with one actor: the fixed cost (probe, actor start, model
              load) that ray-1 and ray-2 pay once per job.

Printed: docs/s of each, the 2-actor / 1-actor throughput ratio (wall, and with the fixed cost taken
out), and ray-1 / local (the overhead of the Ray path with one actor). The default is the full-size
architecture (24 layers, hidden 1024, random weights: the real model's cost).

    python benchmarks/bench_ray_ingest.py              # full size: 64 passages of 24 words, batch 8
    python benchmarks/bench_ray_ingest.py --tiny       # 2-layer checkpoint: fixed costs dominate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from bench_ingest import ensure_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the 2-layer checkpoint instead of the full size")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=64, help="passages")
    ap.add_argument("--words", type=int, default=24, help="words per passage")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import ray
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(C.ROOT))
    from milvus_m3.collection.manager import CollectionManager, CollectionSpec
    from milvus_m3.embedder.model import M3Embedder
    from milvus_m3.ingest import ingest
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory, RayOptions, ray_ingest
    from tests.fixtures_server import LiteServer

    model = ensure_checkpoint(args.tiny, args.model)
    C.header(
        "ray_ingest: 1 vs 2 actors, and against ingest()",
        model=str(model),
        passages=args.n,
        words=args.words,
        batch_size=args.batch_size,
        threads="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1, torch.set_num_threads(1) in the driver and each actor",
        machine=f"{os.cpu_count()} cores shared with other jobs (load average before: {C.load()})",
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    src = tmp / "passages.jsonl"
    with open(src, "w", encoding="utf-8") as fh:
        for doc_id, text in C.scifact_corpus()[: args.n]:
            fh.write(json.dumps({"id": doc_id, "text": " ".join(text.split()[: args.words])}) + "\n")
    one = tmp / "one.jsonl"
    one.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[: args.batch_size]))

    server = LiteServer(tmp / "server.db")
    server.start()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    env["PYTHONPATH"] = os.pathsep.join([str(C.ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    embedder = M3Embedder(model, device="cpu", precision="fp32", batch_size=args.batch_size)
    factory = M3EmbedderFactory(model=str(model), device="cpu", precision="fp32", batch_size=args.batch_size)
    times: dict[str, float] = {}
    try:
        with CollectionManager(server.uri) as manager:

            def fresh(name: str) -> str:
                spec = CollectionSpec(dense_dim=embedder.dense_dim, model_name=str(model))
                manager.create_collection(name, spec=spec, recreate=True)
                return name

            name = fresh("local")
            t0 = time.perf_counter()
            rep = ingest(
                [src], manager=manager, collection=name, encoder=embedder, batch_size=args.batch_size
            )
            times["local"] = time.perf_counter() - t0
            assert rep.written == args.n and manager.count(name) == args.n, rep
            for label, actors, path, want in (
                ("ray-1", 1, src, args.n),
                ("ray-2", 2, src, args.n),
                ("ray-fixed", 1, one, args.batch_size),
            ):
                name = fresh(label.replace("-", "_"))
                t0 = time.perf_counter()
                rep = ray_ingest(
                    [path],
                    manager=manager,
                    collection=name,
                    encoder=factory,
                    ray_options=RayOptions(actors=actors, cpus_per_actor=1.0, cpus_per_reader=0.0),
                    batch_size=args.batch_size,
                )
                times[label] = time.perf_counter() - t0
                assert rep.written == want and manager.count(name) == want, rep
    finally:
        ray.shutdown()
        server.stop()

    n = args.n
    fixed = times["ray-fixed"]
    for label in ("local", "ray-1", "ray-2", "ray-fixed"):
        docs = args.batch_size if label == "ray-fixed" else n
        print(f"{label:>9}: {times[label]:7.1f} s  {docs / times[label]:6.2f} docs/s")
    print(f"ray-2 / ray-1 throughput (wall):              {times['ray-1'] / times['ray-2']:.2f}x")
    steady1, steady2 = times["ray-1"] - fixed, times["ray-2"] - fixed
    if steady1 > 0 and steady2 > 0:
        print(f"ray-2 / ray-1 throughput (fixed cost out):    {steady1 / steady2:.2f}x")
        print(f"per-actor throughput (ray-1, fixed cost out): {(n - args.batch_size) / steady1:.2f} docs/s")
    print(f"ray-1 / local wall time (Ray path overhead):  {times['ray-1'] / times['local']:.2f}x")
    print(f"fixed cost of a Ray job (probe, actor start, model load): {fixed:.1f} s")
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

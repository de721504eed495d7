"""Peak memory of ``milvus-m3 ingest`` on one very long line (issue 16, item 15).

A JSONL file holds two short documents and one whose text is ``--mb`` MB of words on one line (the
issue's case: 32 MB, 79 KB gzipped, peaked at 5 GB because it was tokenised before the 65,535-byte
check). The real CLI ingests it into a fresh Milvus Lite file with the tiny BGE-M3-shaped checkpoint;
the peak resident memory of the ingest process (``ru_maxrss`` of the child) is reported, with the
report line (the long document must be one bad row decided from its size).

    python benchmarks/bench_long_line.py --mb 32 --model .cache/tiny-bge-m3-v1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=32.0)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        words = "lorem ipsum dolor sit amet " * int(args.mb * 2**20 / 27)
        with open(d / "a.jsonl", "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"id": "a", "text": "a short document"}) + "\n")
            fh.write(json.dumps({"id": "long", "text": words}) + "\n")
            fh.write(json.dumps({"id": "b", "text": "another short one"}) + "\n")
        size = (d / "a.jsonl").stat().st_size
        del words
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        cmd = [
            sys.executable,
            "-m",
            "milvus_m3",
            "ingest",
            "a.jsonl",
            "--collection",
            "docs",
            "--uri",
            "x.db",
        ]
        cmd += ["--model", str(Path(args.model).resolve()), "--json", "-q"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-500:]
    print(f"input: {size / 2**20:.1f} MB JSONL, one line of {args.mb} MB text plus two short documents")
    print(
        f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS')}"
    )
    print(f"exit {proc.returncode}, {elapsed:.1f} s, peak RSS of the ingest process {peak_mb:.0f} MB")
    if isinstance(report, dict):
        why = f": {report['errors'][0]['error'][:120]}" if report["errors"] else ""
        print(f"written {report['written']}, failed {report['failed']}{why}")
    else:
        print(report)


if __name__ == "__main__":
    main()

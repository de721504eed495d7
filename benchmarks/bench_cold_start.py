"""Cold start: a fresh `milvus-m3 search` process on the tiny checkpoint vs a fresh
`python -c "import torch, transformers, pymilvus"` (what any BGE-M3-on-Milvus script pays first).

Target: the search costs at most 1.5x the bare imports (median of per-round ratios, one run). For
orientation it also times loading the embedder in a fresh process with each backend (the default one,
which imports neither FlagEmbedding nor transformers' model classes, and backend="flagembedding") and
`python -c "import FlagEmbedding"`.

    python benchmarks/bench_cold_start.py [--rounds 5] [--threads 1]

Every process is started the same way (this venv's python, the same environment, the page cache warm
after a first untimed round), so the ratios compare what each one imports and does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import CACHE, footer, header, interleaved, median, paired_ratios, spread

TARGET = 1.5


def tiny_checkpoint() -> Path:
    from tests.fixtures_model import _cached_build

    return _cached_build(CACHE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS for every process (default 1)"
    )
    args = parser.parse_args()

    model = tiny_checkpoint()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )
    header(
        "cold start: milvus-m3 search vs import torch, transformers, pymilvus",
        model=f"{model} (tiny: 2 layers, hidden 32, real XLM-R tokenizer)",
        threads=f"OMP_NUM_THREADS={args.threads} in every process (torch threads follow it: M3Embedder threads=None)",
        rounds=args.rounds,
    )
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        docs = work / "docs.jsonl"
        docs.write_text(
            '{"id": "1", "text": "Milvus stores dense and sparse vectors."}\n'
            '{"id": "2", "text": "BGE-M3 gives both from one pass."}\n',
            encoding="utf-8",
        )
        cli = [py, "-m", "milvus_m3"]
        common = ["--collection", "docs", "--uri", str(work / "m.db")]
        for step in (
            ["create", *common, "--model", str(model)],
            ["ingest", str(docs), *common, "--model", str(model)],
        ):
            subprocess.run([*cli, *step], env=env, check=True, capture_output=True, cwd=work)

        def run(command: list[str]) -> None:
            out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
            if out.returncode:
                raise SystemExit(f"{command} failed ({out.returncode}): {out.stderr[-2000:]}")

        load = "from milvus_m3.embedder import M3Embedder; M3Embedder({!r}, device='cpu', backend={!r})"
        contenders = [
            ("imports", lambda: run([py, "-c", "import torch, transformers, pymilvus"])),
            ("search", lambda: run([*cli, "search", "dense and sparse", *common, "--model", str(model)])),
            ("load_default", lambda: run([py, "-c", load.format(str(model), "transformers")])),
            ("load_flag", lambda: run([py, "-c", load.format(str(model), "flagembedding")])),
            ("import_flag", lambda: run([py, "-c", "import FlagEmbedding"])),
        ]
        print("warm-up round (untimed: page cache)", flush=True)
        for _, fn in contenders:
            fn()
        times = interleaved(contenders, args.rounds)

    print("\nseconds per process (median, min-max):")
    for name, values in times.items():
        print(f"  {name:13s} {median(values):6.2f} s  {spread(values)}")
    ratios = paired_ratios(times, "search", "imports")
    ratio = median(ratios)
    print(
        f"\ncold `milvus-m3 search` / cold `import torch, transformers, pymilvus`: {ratio:.2f}x "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'}"
    )
    flag = median(paired_ratios(times, "load_flag", "load_default"))
    print(f"embedder load, backend='flagembedding' / default: {flag:.2f}x")
    footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

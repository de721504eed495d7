#!/usr/bin/env bash
# GPU embedding benchmark: full-size BGE-M3 architecture (random weights) in fp16 and bf16,
# tokens/s of M3Embedder, of M3Embedder with a token budget (4x the batch size, batches bounded by
# --max-batch-tokens padded tokens, default 131072) and of FlagEmbedding called directly, and the share
# of the GPU's matrix throughput reached. Bounded to under 10 minutes (the python part is killed at 9.5).
#
#   benchmarks/gpu_embed.sh --prepare     # on the CPU machine: copy the tokenizer and SciFact into
#                                         # .cache/gpu/ (25 MB, gitignored) so they can travel
#   benchmarks/gpu_embed.sh [ARGS...]     # on the GPU machine; ARGS go to benchmarks/gpu_embed.py
#
# Needs a Python with a CUDA build of torch, FlagEmbedding, transformers and numpy ($PYTHON, else
# .venv/bin/python, else python3); the repository is put on PYTHONPATH. Writes the figures to
# $OUT/gpu_embed.txt when $OUT is set (the device runner's output folder), else to
# benchmarks/results/gpu_embed.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .cache/gpu/scifact
    install -m 0644 ../shared/fixtures/xlmr-tokenizer.json .cache/gpu/xlmr-tokenizer.json
    install -m 0644 ../shared/data/scifact/corpus.jsonl .cache/gpu/scifact/corpus.jsonl
    du -sh .cache/gpu
    exit 0
fi

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Inputs carried in .cache/gpu when ../shared is not there.
if [[ ! -f ../shared/fixtures/xlmr-tokenizer.json && -f .cache/gpu/xlmr-tokenizer.json ]]; then
    export MILVUS_M3_TOKENIZER_FILE="$ROOT/.cache/gpu/xlmr-tokenizer.json"
fi
if [[ ! -f ../shared/data/scifact/corpus.jsonl && -f .cache/gpu/scifact/corpus.jsonl ]]; then
    export MILVUS_M3_SCIFACT="$ROOT/.cache/gpu/scifact"
fi
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"

"$PY" - <<'PYCHECK'
import importlib.util, sys
missing = [m for m in ("torch", "FlagEmbedding", "transformers", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (install milvus-m3 with a CUDA build of torch)")
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PYCHECK
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader || true

timeout --signal=TERM --kill-after=15 570 "$PY" benchmarks/gpu_embed.py "$@" 2>"$RESULTS/gpu_embed.stderr" \
    | tee "$RESULTS/gpu_embed.txt"

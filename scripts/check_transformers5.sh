#!/usr/bin/env bash
# Proof that milvus-m3 installs and embeds correctly with transformers 5.x and huggingface-hub >= 1
# (issue 14, item 2). The dev venv (requirements-lock.txt: transformers 4.57 + FlagEmbedding 1.4.2,
# which does not import with transformers 5) builds a tiny BGE-M3-shaped checkpoint and saves
# FlagEmbedding's outputs on it; a second venv gets torch 2.13.0 (CPU, installed first and pinned),
# then the package itself from this checkout with transformers 5 and huggingface-hub 2 (no
# FlagEmbedding), and M3Embedder's outputs there must equal the saved ones within 1e-5
# (scripts/transformers5_parity.py). Run by tests/integration/test_transformers5.py (marked slow).
#
#   DEV_PYTHON   the dev venv's python (default .venv/bin/python)
#   TF5_VENV     where the second venv lives (default .cache/venv-tf5; reused while the pins and
#                pyproject.toml are unchanged, the package itself is reinstalled every run)
#   TF5_WORK     scratch directory (default: a new temp dir, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEV_PY=${DEV_PYTHON:-.venv/bin/python}
VENV=$(realpath -m "${TF5_VENV:-.cache/venv-tf5}")
# Versions pip resolves with the package's other dependencies here (the newest at the time of writing).
TORCH_PIN="torch==2.13.0"
TF5_PINS=("transformers==5.24.0" "huggingface-hub==2.4.0" "tokenizers==0.23.3")

if [ -n "${TF5_WORK:-}" ]; then
  WORK=$TF5_WORK
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/milvus-m3-tf5.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi

echo "== 1/3 reference: FlagEmbedding in the dev venv ($DEV_PY)"
"$DEV_PY" -c "import transformers, FlagEmbedding; print('dev venv: transformers', transformers.__version__)"
PYTHONPATH="$REPO" "$DEV_PY" -m milvus_m3.testing "$WORK/checkpoint" >/dev/null
PYTHONPATH="$REPO" "$DEV_PY" scripts/transformers5_parity.py reference "$WORK/checkpoint" "$WORK/reference.npz"

echo "== 2/3 second venv with transformers 5 ($VENV)"
printf '%s\n' "$TORCH_PIN" "${TF5_PINS[@]}" > "$WORK/constraints.txt"
want=$( (printf '%s\n' "$TORCH_PIN" "${TF5_PINS[@]}"; cat pyproject.toml) | sha256sum | cut -c1-16)
stamp=$VENV/.tf5-installed
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  # torch first, pinned, from the configured indexes: an open-ended torch would pull a CUDA build.
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN"
fi
"$VENV/bin/python" - <<'PY'
import torch
v = torch.__version__
if not (v == "2.13.0" or v.endswith("+cpu")):
    raise SystemExit(f"the second venv has torch {v}: not the pinned 2.13.0 CPU build; remove it and rerun")
print("second venv: torch", v)
PY
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  # The package's own dependencies, resolved by pip with transformers 5 and hub 2 (the constraints
  # keep torch where it is).
  "$VENV/bin/python" -m pip install -q -c "$WORK/constraints.txt" "${TF5_PINS[@]}" "$REPO"
  echo "$want" > "$stamp"
fi
# This checkout's code, as a user would install it (not the editable tree), every run.
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall -c "$WORK/constraints.txt" "$REPO"
if "$VENV/bin/python" -c "import FlagEmbedding" 2>/dev/null; then
  echo "FlagEmbedding is importable in the transformers-5 venv: it must not be a dependency" >&2
  exit 1
fi

echo "== 3/3 M3Embedder under transformers 5 vs the reference"
# Outside the repo and without PYTHONPATH: the installed package is what runs.
(cd "$WORK" && env -u PYTHONPATH "$VENV/bin/python" -c \
  "import milvus_m3, sys; assert 'site-packages' in milvus_m3.__file__, milvus_m3.__file__" \
  && env -u PYTHONPATH "$VENV/bin/python" "$REPO/scripts/transformers5_parity.py" check \
    "$WORK/checkpoint" "$WORK/reference.npz" "$WORK/check")

#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, integration (Milvus Lite + a tiny BGE-M3-shaped
# checkpoint built offline) and server tiers. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose (an empty run must not pass)" >&2
  exit 1
fi
exit "$rc"

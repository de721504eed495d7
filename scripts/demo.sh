#!/usr/bin/env bash
# Set up (if needed), ingest examples/sample.jsonl into the embedded Milvus Lite file ./milvus_m3.db
# and print hybrid (dense + sparse, RRF) results.
#
# The model comes from MILVUS_M3_MODEL: a local BGE-M3 directory, or the hub id BAAI/bge-m3
# (downloaded once, about 2.2 GB). Without MILVUS_M3_MODEL and offline (HF_HUB_OFFLINE=1, or the hub
# unreachable and BAAI/bge-m3 not in the local cache), the demo builds a tiny BGE-M3-shaped checkpoint
# with RANDOM weights (python -m milvus_m3.testing) and says so: it shows the pipeline working, and
# its results rank at random.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MILVUS_URI=${MILVUS_URI:-./milvus_m3.db}
PY=.venv/bin/python
M3=.venv/bin/milvus-m3
TINY=.cache/demo-tiny-bge-m3

hub_usable() {
  [ "${HF_HUB_OFFLINE:-0}" != 1 ] || return 1
  "$PY" - <<'EOF' 2>/dev/null
import socket, sys
try:
    socket.create_connection(("huggingface.co", 443), timeout=3).close()
except OSError:
    sys.exit(1)
EOF
}

in_hub_cache() {
  "$PY" -c 'from huggingface_hub import snapshot_download as s; s("BAAI/bge-m3", local_files_only=True)' \
    >/dev/null 2>&1
}

random_weights=0
if [ -z "${MILVUS_M3_MODEL:-}" ]; then
  if in_hub_cache || hub_usable; then
    export MILVUS_M3_MODEL=BAAI/bge-m3
  else
    random_weights=1
    if [ ! -f "$TINY/milvus_m3_testing.json" ]; then
      echo "demo: no MILVUS_M3_MODEL and no model hub: building a tiny checkpoint in $TINY" >&2
      "$PY" -m milvus_m3.testing "$TINY" >/dev/null
    fi
    export MILVUS_M3_MODEL=$TINY
  fi
fi

if [ -f "$MILVUS_M3_MODEL/milvus_m3_testing.json" ]; then
  random_weights=1  # a checkpoint from python -m milvus_m3.testing, given or built above
fi

banner() {
  if [ "$random_weights" = 1 ]; then
    cat >&2 <<EOF
##########################################################################################
##  RANDOM WEIGHTS: $MILVUS_M3_MODEL is a tiny BGE-M3-shaped checkpoint
##  with RANDOM weights (python -m milvus_m3.testing), used because no model was given
##  (MILVUS_M3_MODEL) and the model hub is out of reach, or because you gave it.
##  The pipeline is real (Milvus Lite, dense + sparse vectors, RRF): THE RANKINGS ARE RANDOM.
##  For real results: MILVUS_M3_MODEL=/path/to/bge-m3 bash scripts/demo.sh
##########################################################################################
EOF
  fi
}

banner
$M3 ingest examples/sample.jsonl --collection demo --title-field title --metadata-fields lang,topic
for q in "how do plants turn light into energy?" "highest mountain" "vector database for similarity search"; do
  echo "== $q"
  $M3 search "$q" --collection demo --limit 3
done
banner

#!/usr/bin/env bash
# Set up (if needed), ingest examples/sample.jsonl into the embedded Milvus Lite file ./milvus_m3.db
# and print hybrid (dense + sparse, RRF) results. The model comes from MILVUS_M3_MODEL: a local
# BGE-M3 directory when offline, or the hub id BAAI/bge-m3 (downloaded once, about 2.2 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MILVUS_URI=${MILVUS_URI:-./milvus_m3.db}
export MILVUS_M3_MODEL=${MILVUS_M3_MODEL:-BAAI/bge-m3}
M3=.venv/bin/milvus-m3
$M3 ingest examples/sample.jsonl --collection demo --title-field title --metadata-fields lang,topic
for q in "how do plants turn light into energy?" "highest mountain" "vector database for similarity search"; do
  echo "== $q"
  $M3 search "$q" --collection demo --limit 3
done

"""Streaming batch ingestion: readers, batching, ids, upserts, checkpoints, progress.

``ingest(files, manager=..., collection=..., encoder=...)`` fills a collection from files that may hold
millions of rows, with memory bounded by the batch size. Where each part lives (each module's
docstring has the details):

readers
    JSONL, CSV, TSV, Parquet and BEIR inputs, files or stdin, gzipped or not, streamed record by record.
ids
    Ids from ``id_field``, chosen per file (``id`` / ``_id``), or content hashes (``hash_ids``).
prepare
    Record -> text (and title) -> chunks -> embeddings -> Milvus rows; bad rows set aside one by one.
checkpoint
    The checkpoint (atomic JSON, one per batch, after its upsert) and the errors file (one JSON line
    ``{"file", "line", "id", "field", "error"}`` per bad row); ``resume=True`` after ``kill -9`` at
    any moment finishes with exactly the input's documents stored.
options
    ``IngestOptions``: every option, its default and its checks, once.
pipeline
    ``ingest()``: a producer thread prepares batch ``n + 1`` while the calling thread upserts and
    checkpoints batch ``n``; ``on_error="fail"`` stops with ``IngestAborted`` before writing the batch
    that holds the first bad row.
"""

from __future__ import annotations

from ..errors import IngestAborted
from .checkpoint import default_state_path
from .ids import content_id
from .options import IngestOptions
from .pipeline import ingest
from .readers import FORMATS, detect_format, read_records
from .records import IngestReport, Record, RowError

__all__ = [
    "FORMATS",
    "IngestAborted",
    "IngestOptions",
    "IngestReport",
    "Record",
    "RowError",
    "content_id",
    "default_state_path",
    "detect_format",
    "ingest",
    "read_records",
]

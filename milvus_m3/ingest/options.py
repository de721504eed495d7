"""IngestOptions: every option of an ingestion run, its default and its checks, written once.

``ingest(files, ..., options=IngestOptions(...))`` or ``ingest(files, ..., <option>=...)`` (the keywords
are these fields); the CLI passes them as keywords. The options that decide which rows a record becomes
(``RESUME_FIELDS``, plus the collection) are stored in the checkpoint and must match on resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .._checks import check_int
from ..errors import ConfigError
from .readers import FORMATS

__all__ = ["ENGINES", "ON_ERROR", "RESUME_FIELDS", "IngestOptions", "RayOptions", "build_options"]

ON_ERROR = ("skip", "fail")
ENGINES = ("local", "ray")
"""Where ``milvus-m3 ingest`` runs: this process (``ingest``), or a Ray cluster (``ray_ingest``)."""
RESUME_FIELDS = (
    "format",
    "id_field",
    "hash_ids",
    "text_field",
    "title_field",
    "metadata_fields",
    "chunk_tokens",
    "chunk_overlap",
    "truncate",
    "tenant_field",
)
"""Options a resumed run must share with the run that wrote the checkpoint (``batch_size`` and
``on_error`` may change between the two)."""


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """How records become rows (see ``milvus_m3.ingest`` for formats, ids, chunking and bad rows).

    format: one of ``FORMATS``; "auto" detects it per input (name, then first bytes).
    id_field: the id column; None picks ``id`` or ``_id`` per input, else content hashes.
    hash_ids: always use content hashes (not with ``id_field``).
    text_field / title_field: the text, and an optional title embedded as ``f"{title} {text}"``.
    metadata_fields: fields kept in the metadata JSON.
    batch_size: records per batch (the unit of reading, embedding, writing and checkpointing).
    on_error: "skip" writes bad rows to the errors file and goes on; "fail" raises ``IngestAborted``
        before writing the batch that holds the first bad row.
    chunk_tokens / chunk_overlap: cut documents into windows of at most ``chunk_tokens`` tokens
        overlapping by ``chunk_overlap`` (a chunked collection only).
    truncate: embed documents beyond the encoder's max length cut, instead of reporting them as bad.
    tenant_field: the record field holding each record's tenant, stored in the collection's partition-key
        field (``CollectionSpec.partition_key``; None: the field of that name). Content-hash ids then
        hash the tenant with the text, so the same text of two tenants is two rows.
    """

    format: str = "auto"
    id_field: str | None = None
    hash_ids: bool = False
    text_field: str = "text"
    title_field: str | None = None
    metadata_fields: Sequence[str] = ()
    batch_size: int = 64
    on_error: str = "skip"
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    truncate: bool = False
    tenant_field: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        check_int("batch_size", self.batch_size, 1)
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be 'skip' or 'fail', got {self.on_error!r}")
        if self.hash_ids and self.id_field is not None:
            raise ConfigError("give id_field or hash_ids, not both")
        for name in ("text_field", "id_field", "title_field", "tenant_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty field name, got {value!r}")
        if isinstance(self.metadata_fields, str):
            raise ConfigError("metadata_fields must be a list of field names, not one string")
        object.__setattr__(self, "metadata_fields", tuple(self.metadata_fields))
        self._check_chunking()

    def _check_chunking(self) -> None:
        tokens, overlap = self.chunk_tokens, self.chunk_overlap
        if tokens is None:
            if overlap:
                raise ConfigError("chunk_overlap needs chunk_tokens")
            return
        check_int("chunk_tokens", tokens, 1)
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tokens:
            raise ConfigError(f"chunk_overlap must be an int in [0, chunk_tokens={tokens}), got {overlap!r}")

    def resume_options(self, collection: str) -> dict[str, Any]:
        """What the checkpoint stores and a resume compares: the collection and ``RESUME_FIELDS`` of
        ``asdict``, as JSON gives them back (the metadata fields as a list)."""
        data = {k: v for k, v in asdict(self).items() if k in RESUME_FIELDS}
        data["metadata_fields"] = list(self.metadata_fields)
        return {"collection": collection, **data}


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Where and how wide a Ray ingestion runs.

    address: the Ray cluster (``"auto"``: the one this node belongs to; ``ray://host:10001``: a remote
        one); None: the one already initialised in this process, else ``$RAY_ADDRESS``, else a local one.
    actors: embedding actors (one model each). gpus_per_actor / cpus_per_actor: what Ray reserves for
        each (0.5 GPU puts two actors on one GPU). cpus_per_reader: what each read task reserves.
    write_batch_size: rows per upsert request (CollectionManager's default: 256).
    retries: times a batch is retried after its actor died (Ray restarts the actor each time).
    skip_existing: pass over documents already stored unchanged (a server and unchunked collection).
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    cpus_per_reader: float = 0.25
    write_batch_size: int = 256
    retries: int = 3
    skip_existing: bool = False

    def __post_init__(self) -> None:
        for name in ("actors", "write_batch_size"):
            check_int(name, getattr(self, name), 1)
        for name in ("gpus_per_actor", "cpus_per_actor", "cpus_per_reader"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.cpus_per_actor == 0 and self.gpus_per_actor == 0:
            raise ConfigError("an actor needs cpus_per_actor or gpus_per_actor above 0")
        check_int("retries", self.retries, 0)


def build_options(options: IngestOptions | None, overrides: Mapping[str, Any]) -> IngestOptions:
    """``options`` (default: all defaults) with the keyword ``overrides`` applied; an unknown keyword is
    a ConfigError that lists the valid ones."""
    valid = [f.name for f in fields(IngestOptions)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"ingest got unknown option(s) {', '.join(unknown)}; the options are: {', '.join(valid)}"
        )
    if options is None:
        return IngestOptions(**overrides)
    return dataclasses.replace(options, **overrides) if overrides else options

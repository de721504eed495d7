"""Typed, immutable values that flow between the parts: embeddings in, hits out.

This module imports numpy only: no pymilvus, no torch, no FlagEmbedding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import InputError

__all__ = [
    "CacheKeyed",
    "ChunkingEncoder",
    "ColbertEncoder",
    "Encoder",
    "Fingerprinted",
    "Hit",
    "LengthLimited",
    "M3Embeddings",
    "SparseVector",
]

SparseVector = dict[int, float]
"""A Milvus-ready sparse vector: int token id -> float weight > 0."""


@dataclass(frozen=True)
class M3Embeddings:
    """What one encoder pass gives for ``n`` texts.

    dense:   float32 array (n, dim), L2-normalised rows.
    sparse:  n dicts of int token id -> float weight (> 0, special tokens dropped).
    colbert: n float32 arrays (tokens, dim), or None when not asked for.
    truncated: indices of the texts that were cut to the max length (only with overflow="warn"
        or "truncate"; with overflow="error" a long text raises instead).
    token_counts: tokens per text as encoded (after any truncation).
    """

    dense: npt.NDArray[np.float32]
    sparse: list[SparseVector]
    colbert: list[npt.NDArray[np.float32]] | None = None
    truncated: tuple[int, ...] = ()
    token_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.sparse)
        if self.dense.ndim != 2 or self.dense.shape[0] != n:
            raise InputError(
                f"M3Embeddings: dense has shape {self.dense.shape} but there are {n} sparse vectors; "
                "give one dense row and one sparse dict per text",
                field="dense",
            )
        if self.colbert is not None and len(self.colbert) != n:
            raise InputError(
                f"M3Embeddings: {len(self.colbert)} colbert arrays for {n} texts; give one per text",
                field="colbert",
            )
        if self.token_counts and len(self.token_counts) != n:
            raise InputError(
                f"M3Embeddings: {len(self.token_counts)} token counts for {n} texts",
                field="token_counts",
            )

    def __len__(self) -> int:
        return len(self.sparse)

    @property
    def dim(self) -> int:
        return int(self.dense.shape[1])

    def select(self, indices: Sequence[int]) -> M3Embeddings:
        """A new M3Embeddings holding only ``indices`` (in that order)."""
        idx = list(indices)
        pos = {old: new for new, old in enumerate(idx)}
        return M3Embeddings(
            dense=self.dense[idx] if idx else self.dense[:0],
            sparse=[self.sparse[i] for i in idx],
            colbert=None if self.colbert is None else [self.colbert[i] for i in idx],
            truncated=tuple(pos[i] for i in self.truncated if i in pos),
            token_counts=tuple(self.token_counts[i] for i in idx) if self.token_counts else (),
        )

    @staticmethod
    def concat(parts: Sequence[M3Embeddings]) -> M3Embeddings:
        """Join several results in order."""
        if not parts:
            raise InputError("M3Embeddings.concat needs at least one part")
        offsets = np.cumsum([0] + [len(p) for p in parts])
        with_colbert = all(p.colbert is not None for p in parts)
        return M3Embeddings(
            dense=np.concatenate([p.dense for p in parts], axis=0),
            sparse=[s for p in parts for s in p.sparse],
            colbert=[c for p in parts for c in (p.colbert or [])] if with_colbert else None,
            truncated=tuple(
                int(off) + i for off, p in zip(offsets, parts, strict=False) for i in p.truncated
            ),
            token_counts=tuple(c for p in parts for c in p.token_counts)
            if all(p.token_counts for p in parts)
            else (),
        )


@dataclass(frozen=True)
class Hit:
    """One search result. ``score`` is the fused score for hybrid modes, the raw one otherwise."""

    id: str | int
    score: float
    text: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Other output fields the caller asked for (declared scalar fields, parent ids, ...)."""


@runtime_checkable
class Encoder(Protocol):
    """What the searcher and the pipelines need from a model. ``M3Embedder`` is one; tests use fakes."""

    @property
    def model_name(self) -> str: ...

    @property
    def dense_dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings: ...

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings: ...


# Optional abilities, declared: a part that needs one asks ``isinstance(encoder, Ability)`` (each is
# runtime-checkable on the names it declares) instead of probing with getattr or inspect.signature.


@runtime_checkable
class LengthLimited(Protocol):
    """An encoder that reads at most ``document_max_length`` tokens of a document."""

    @property
    def document_max_length(self) -> int: ...


@runtime_checkable
class ChunkingEncoder(LengthLimited, Protocol):
    """An encoder that can cut a long text into token spans (ingest's ``chunk_tokens``)."""

    def chunk_spans(self, text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of consecutive chunks of at most ``max_tokens`` tokens."""
        ...


@runtime_checkable
class ColbertEncoder(Encoder, Protocol):
    """An encoder that gives ColBERT token vectors when asked (``m3-all``): ``encode_*(texts, colbert=True)``
    returns ``M3Embeddings.colbert``. ``colbert_dim`` is the declaration."""

    @property
    def colbert_dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str], *, colbert: bool = False) -> M3Embeddings: ...

    def encode_queries(self, texts: Sequence[str], *, colbert: bool = False) -> M3Embeddings: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """An encoder that knows what its model is, whatever its path (``checkpoint.model_fingerprint``):
    collections record it and refuse another model with the same folder name and dims."""

    @property
    def model_fingerprint(self) -> str: ...


@runtime_checkable
class CacheKeyed(Protocol):
    """An encoder whose outputs are fully determined by ``config_key`` (model, lengths, options), so an
    encoding cache may reuse them. Without it a cache keys on ``model_name`` alone."""

    @property
    def config_key(self) -> str: ...

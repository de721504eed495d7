"""The encoding cache: ``CachedEncoder`` keeps an encoder's outputs as ``.npz`` files and reuses them."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..types import CacheKeyed, Encoder, M3Embeddings, SparseVector

__all__ = ["CachedEncoder"]

logger = logging.getLogger("milvus_m3.evaluate")


class CachedEncoder:
    """Wraps an ``Encoder``; encodings are stored in ``cache_dir`` as ``.npz`` files and reused.

    Texts are encoded and cached in chunks of ``chunk_size``, so an interrupted run resumes. The key of
    a chunk is a hash of the encoder's ``config_key`` (or model name), the kind (documents or queries)
    and the texts. ColBERT vectors are not cached (they are recomputed at query time).
    """

    def __init__(self, encoder: Encoder, cache_dir: str | os.PathLike[str], *, chunk_size: int = 512) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, cache_dir={str(self.cache_dir)!r})"

    @property
    def model_name(self) -> str:
        return self.encoder.model_name

    @property
    def dense_dim(self) -> int:
        return self.encoder.dense_dim

    @property
    def config_key(self) -> str:
        if isinstance(self.encoder, CacheKeyed):
            return str(self.encoder.config_key)
        return str(self.encoder.model_name)

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "documents", self.encoder.encode_documents)

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "queries", self.encoder.encode_queries)

    def _encode(
        self, texts: Sequence[str], kind: str, fn: Callable[[Sequence[str]], M3Embeddings]
    ) -> M3Embeddings:
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not one string; wrap it: [text]", field="text")
        items = list(texts)
        if not items:
            return fn(items)
        parts = []
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_name.rsplit("/", 1)[-1])[:60]
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start : start + self.chunk_size]
            digest = hashlib.sha256(f"{self.config_key}\x00{kind}\x00".encode())
            for t in chunk:
                digest.update(t.encode("utf-8", errors="surrogatepass"))
                digest.update(b"\x00")
            path = self.cache_dir / f"{slug}-{kind}-{digest.hexdigest()[:24]}.npz"
            if path.is_file():
                parts.append(_load_embeddings(path))
                self.hits += 1
                continue
            emb = fn(chunk)
            self.misses += 1
            _save_embeddings(path, emb)
            parts.append(emb)
            logger.info(
                "encoded %s %d-%d of %d with %s", kind, start, start + len(chunk), len(items), self.model_name
            )
        return parts[0] if len(parts) == 1 else M3Embeddings.concat(parts)


def _save_embeddings(path: Path, emb: M3Embeddings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in emb.sparse], dtype=np.int64)
    indices = np.fromiter((k for s in emb.sparse for k in s), dtype=np.int64, count=int(lengths.sum()))
    values = np.fromiter(
        (v for s in emb.sparse for v in s.values()), dtype=np.float32, count=int(lengths.sum())
    )
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        dense=np.asarray(emb.dense, dtype=np.float32),
        sparse_lengths=lengths,
        sparse_indices=indices,
        sparse_values=values,
        truncated=np.asarray(emb.truncated, dtype=np.int64),
        token_counts=np.asarray(emb.token_counts, dtype=np.int64),
    )
    os.replace(tmp, path)


def _load_embeddings(path: Path) -> M3Embeddings:
    with np.load(path) as data:
        lengths = data["sparse_lengths"]
        indices, values = data["sparse_indices"], data["sparse_values"]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        sparse: list[SparseVector] = [
            dict(zip(indices[a:b].tolist(), values[a:b].tolist(), strict=False))
            for a, b in itertools.pairwise(offsets)
        ]
        return M3Embeddings(
            dense=np.array(data["dense"], dtype=np.float32),
            sparse=sparse,
            truncated=tuple(int(i) for i in data["truncated"]),
            token_counts=tuple(int(i) for i in data["token_counts"]),
        )

"""A deterministic stand-in encoder for tests that need vectors but not a model.

Words are hashed to token ids; the sparse weight of a word grows with its count; the dense vector is a
normalised sum of fixed random vectors per word. Texts that share words are close in both spaces, so
rankings are meaningful and stable across runs and platforms.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from milvus_m3.errors import InputError
from milvus_m3.types import M3Embeddings

_WORD = re.compile(r"\w+", re.UNICODE)


def token_id(word: str) -> int:
    """Stable id in [4, 250_000) for a lower-cased word (0-3 are special ids in XLM-R)."""
    digest = hashlib.blake2b(word.lower().encode("utf-8"), digest_size=8).digest()
    return 4 + int.from_bytes(digest, "little") % 249_996


class FakeEncoder:
    def __init__(self, dim: int = 16, model_name: str = "fake/m3", seed: int = 0) -> None:
        self._dim = dim
        self._name = model_name
        self._seed = seed
        self.calls: list[tuple[str, int]] = []

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dense_dim(self) -> int:
        return self._dim

    def _word_vector(self, tid: int) -> np.ndarray:
        rng = np.random.default_rng(tid * 1_000_003 + self._seed)
        return rng.standard_normal(self._dim).astype(np.float32)

    def _encode(self, texts: Sequence[str], kind: str) -> M3Embeddings:
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not one string; wrap it: [text]", field="text")
        self.calls.append((kind, len(texts)))
        dense = np.zeros((len(texts), self._dim), dtype=np.float32)
        sparse: list[dict[int, float]] = []
        counts: list[int] = []
        for row, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"row {row}: text must be a non-empty string", field="text", row=row)
            words = [w.lower() for w in _WORD.findall(text)]
            counts.append(len(words) + 2)
            tf = Counter(token_id(w) for w in words)
            vec = {tid: float(np.float32(0.1 + np.log1p(c))) for tid, c in tf.items()}
            sparse.append(vec)
            for tid, c in tf.items():
                dense[row] += c * self._word_vector(tid)
            norm = float(np.linalg.norm(dense[row]))
            if norm == 0.0:
                dense[row, 0] = 1.0
            else:
                dense[row] /= norm
        return M3Embeddings(dense=dense, sparse=sparse, token_counts=tuple(counts))

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "documents")

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "queries")

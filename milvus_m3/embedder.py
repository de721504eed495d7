"""BGE-M3 through FlagEmbedding: text in, ``M3Embeddings`` (dense + sparse + optional ColBERT) out.

The checkpoint is loaded by FlagEmbedding's own code (``BGEM3FlagModel``), so what runs is the model
FlagEmbedding would run. Encoding does not go through ``BGEM3FlagModel.encode``: it tokenizes once
without truncation (a long text is never cut silently), sorts by length, pads per batch and runs the
loaded inference module under ``torch.inference_mode`` on a model moved to its device once; sparse
weights are reduced with numpy. The outputs equal FlagEmbedding's (the tests check it).

This is the only module that touches FlagEmbedding, torch and transformers, and it imports them inside
functions: ``import milvus_m3.embedder`` stays light. All FlagEmbedding contact is in ``_FlagM3``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError, MissingDependencyError, ModelLoadError, TextTooLongError
from .types import M3Embeddings, SparseVector

__all__ = ["DEFAULT_MODEL", "OVERFLOW_MODES", "PRECISIONS", "M3Embedder"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "BAAI/bge-m3"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
OVERFLOW_MODES = ("warn", "error", "truncate")
MODEL_ENV = "MILVUS_M3_MODEL"

_MIN_MAX_LENGTH = 3  # <s>, one content token, </s>
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")
_HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "sentencepiece.bpe.model",
    "colbert_linear.pt",
    "sparse_linear.pt",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_FloatArray = npt.NDArray[np.float32]
_IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------------------------------
# The embedder


class M3Embedder:
    """BGE-M3 dense + learned-sparse (+ optional ColBERT) embeddings, ready for Milvus.

    ``model_name_or_path`` is a local checkpoint directory or a Hugging Face hub id (resolved with
    ``huggingface_hub.snapshot_download``; ``local_files_only`` defaults to ``$HF_HUB_OFFLINE``).
    ``device`` None picks "cuda:0" when CUDA is available, else "cpu" (one device, never all GPUs).
    ``precision`` "auto" is fp16 on CUDA and fp32 elsewhere. ``overflow`` says what happens to a text
    longer than the max length: "warn" cuts it (as Hugging Face truncation does) and warns once per
    call, "truncate" cuts it quietly, "error" raises ``TextTooLongError``; cut rows are always listed
    in ``M3Embeddings.truncated``.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int = 16,
        query_max_length: int = 512,
        document_max_length: int = 8192,
        overflow: str = "warn",
        colbert: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        show_progress: bool = False,
    ) -> None:
        if not isinstance(model_name_or_path, (str, os.PathLike)) or not str(model_name_or_path).strip():
            raise ConfigError(
                f"model_name_or_path must be a checkpoint directory or a hub id such as {DEFAULT_MODEL!r}, "
                f"got {model_name_or_path!r}"
            )
        if device is not None and (not isinstance(device, str) or not device.strip()):
            raise ConfigError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        _check_positive_int("batch_size", batch_size)
        _check_max_length("query_max_length", query_max_length)
        _check_max_length("document_max_length", document_max_length)
        if overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}; got {overflow!r}")
        _check_bool("colbert", colbert)
        _check_bool("show_progress", show_progress)
        if local_files_only is not None:
            _check_bool("local_files_only", local_files_only)
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ConfigError(f"cache_dir must be a directory path or None, got {cache_dir!r}")

        self._model_name = os.fspath(model_name_or_path)
        # The fast tokenizer changes its truncation state on every call and one model runs one batch
        # at a time: calls from several threads take turns.
        self._lock = threading.RLock()
        self._batch_size = batch_size
        self._overflow = overflow
        self._colbert = colbert
        self._show_progress = show_progress

        resolved_device = _resolve_device(device)
        resolved_precision = _resolve_precision(precision, resolved_device)
        model_dir = _resolve_model_dir(self._model_name, cache_dir, local_files_only)
        colbert_dim = _check_model_dir(model_dir)
        self._backend = _FlagM3(
            model_dir, device=resolved_device, precision=resolved_precision, colbert_dim=colbert_dim
        )
        self._model_dir = model_dir
        self._device = resolved_device
        self._precision = resolved_precision

        limit = self._backend.max_length
        for option, value in (
            ("query_max_length", query_max_length),
            ("document_max_length", document_max_length),
        ):
            if value > limit:
                raise ConfigError(
                    f"{option}={value} is more than the model in {model_dir} can take ({limit} tokens); "
                    f"pass {option}={limit} or less"
                )
        self._query_max_length = query_max_length
        self._document_max_length = document_max_length
        logger.info(
            "loaded %s from %s on %s (%s): dense dim %d, colbert dim %d, max %d tokens",
            self._model_name,
            model_dir,
            resolved_device,
            resolved_precision,
            self.dense_dim,
            self.colbert_dim,
            limit,
        )

    # -- what the model is ------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The name or path this embedder was built from, as given."""
        return self._model_name

    @property
    def model_dir(self) -> Path:
        """The local checkpoint directory actually loaded."""
        return self._model_dir

    @property
    def dense_dim(self) -> int:
        return self._backend.dense_dim

    @property
    def colbert_dim(self) -> int:
        return self._backend.colbert_dim

    @property
    def vocab_size(self) -> int:
        """Token ids (sparse keys) are in ``range(vocab_size)``."""
        return self._backend.vocab_size

    @property
    def max_length(self) -> int:
        """The most tokens (with ``<s>`` and ``</s>``) the model can take in one text."""
        return self._backend.max_length

    @property
    def device(self) -> str:
        return self._device

    @property
    def precision(self) -> str:
        """ "fp32", "fp16" or "bf16" ("auto" resolved)."""
        return self._precision

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def query_max_length(self) -> int:
        return self._query_max_length

    @property
    def document_max_length(self) -> int:
        return self._document_max_length

    @property
    def overflow(self) -> str:
        return self._overflow

    def __repr__(self) -> str:
        return (
            f"M3Embedder({self._model_name!r}, device={self._device!r}, precision={self._precision!r}, "
            f"dense_dim={self.dense_dim}, max_length={self.max_length})"
        )

    # -- tokens -----------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Content tokens per text, without ``<s>`` and ``</s>`` (the model sees two more).

        Empty strings are allowed here (0 tokens).
        """
        rows = _check_texts(texts, allow_empty=True)
        if not rows:
            return []
        with self._lock:
            return [len(ids) for ids in self._backend.token_ids(rows, special_tokens=False)]

    def chunk_spans(self, text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of windows over ``text`` of at most ``max_tokens`` content
        tokens, each starting ``overlap`` tokens before the previous one ends.

        Spans follow token boundaries of the whole text, in order, and together cover every token.
        A span is shortened when ``text[start:end]`` tokenized on its own would exceed ``max_tokens``
        (a window starting inside a word can tokenize differently); the next one then starts at least
        one token later. Whitespace-only spans are left out: empty or blank text gives ``[]``.
        """
        if not isinstance(text, str):
            raise InputError(f"chunk_spans: text must be a str, got {type(text).__name__}", field="text")
        _check_positive_int("max_tokens", max_tokens)
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
            raise ConfigError(f"overlap must be an int in [0, max_tokens={max_tokens}), got {overlap!r}")
        with self._lock:
            return self._chunk_spans(text, max_tokens, overlap)

    def _chunk_spans(self, text: str, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
        offsets = self._backend.offsets(text)
        n = len(offsets)
        spans: list[tuple[int, int]] = []
        start = 0
        while start < n:
            end = min(start + max_tokens, n)
            while (
                end - start > 1
                and self._backend.count(text[offsets[start][0] : offsets[end - 1][1]]) > max_tokens
            ):
                end -= 1
            span = (offsets[start][0], offsets[end - 1][1])
            if text[span[0] : span[1]].strip():  # a lone "▁" token can cover only whitespace
                spans.append(span)
            if end >= n:
                break
            start = max(end - overlap, start + 1)
        return spans

    # -- encoding ---------------------------------------------------------------------------------

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        colbert: bool | None = None,
    ) -> M3Embeddings:
        """Embed documents (max length ``document_max_length`` unless ``max_length`` is given)."""
        with self._lock:
            return self._encode(texts, batch_size, max_length, colbert, self._document_max_length, "document")

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        colbert: bool | None = None,
    ) -> M3Embeddings:
        """Embed queries (max length ``query_max_length``). BGE-M3 uses no query instruction."""
        with self._lock:
            return self._encode(texts, batch_size, max_length, colbert, self._query_max_length, "query")

    def _encode(
        self,
        texts: Sequence[str],
        batch_size: int | None,
        max_length: int | None,
        colbert: bool | None,
        default_max_length: int,
        kind: str,
    ) -> M3Embeddings:
        if batch_size is None:
            batch_size = self._batch_size
        _check_positive_int("batch_size", batch_size)
        if max_length is None:
            max_length = default_max_length
        _check_max_length("max_length", max_length)
        if max_length > self.max_length:
            raise ConfigError(
                f"max_length={max_length} is more than the model can take ({self.max_length} tokens); "
                f"pass max_length={self.max_length} or less"
            )
        if colbert is None:
            colbert = self._colbert
        _check_bool("colbert", colbert)
        rows = _check_texts(texts, allow_empty=False)
        n = len(rows)
        if n == 0:
            return M3Embeddings(
                dense=np.zeros((0, self.dense_dim), dtype=np.float32),
                sparse=[],
                colbert=[] if colbert else None,
            )

        ids = self._backend.token_ids(rows, special_tokens=True)
        truncated = [i for i, seq in enumerate(ids) if len(seq) > max_length]
        if truncated:
            self._overflow_cut(ids, truncated, max_length, n, kind)

        dense, sparse, colbert_vecs = self._backend.encode(
            ids, batch_size=batch_size, colbert=colbert, show_progress=self._show_progress
        )
        return M3Embeddings(
            dense=dense,
            sparse=sparse,
            colbert=colbert_vecs,
            truncated=tuple(truncated),
            token_counts=tuple(len(seq) for seq in ids),
        )

    def _overflow_cut(
        self, ids: list[list[int]], truncated: list[int], max_length: int, n: int, kind: str
    ) -> None:
        option = f"{kind}_max_length"
        if self._overflow == "error":
            i = truncated[0]
            raise TextTooLongError(
                f"{kind} text at row {i} has {len(ids[i])} tokens (with <s> and </s>), more than the limit "
                f"of {max_length} ({len(truncated)} of {n} texts are too long); raise {option} "
                f"(at most {self.max_length}), split long documents with the ingest job's --chunk-tokens, "
                "or pass overflow='warn' or 'truncate' to cut them",
                field="text",
                row=i,
            )
        for i in truncated:
            seq = ids[i]
            ids[i] = seq[: max_length - 1] + seq[-1:]  # first max_length-2 content tokens + <s> ... </s>
        shown = ", ".join(map(str, truncated[:10])) + (", ..." if len(truncated) > 10 else "")
        message = (
            f"{len(truncated)} of {n} {kind} texts were longer than {max_length} tokens and were cut to "
            f"their first {max_length} (rows {shown}); raise {option} or chunk long documents "
            "(ingest --chunk-tokens) to keep all of their text"
        )
        if self._overflow == "warn":
            warnings.warn(message, UserWarning, stacklevel=4)
            logger.warning(message)
        else:
            logger.info(message)


# ---------------------------------------------------------------------------------------------------
# The adapter: all contact with FlagEmbedding and torch


class _FlagM3:
    """BGE-M3 loaded by ``FlagEmbedding.BGEM3FlagModel``, run by our own batched loop."""

    def __init__(self, model_dir: Path, *, device: str, precision: str, colbert_dim: int) -> None:
        import torch

        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise MissingDependencyError(
                f"FlagEmbedding is needed to load BGE-M3 ({exc}); pip install 'FlagEmbedding>=1.3,<1.5'"
            ) from exc

        try:
            flag = BGEM3FlagModel(
                str(model_dir),
                normalize_embeddings=True,
                use_fp16=precision == "fp16",
                use_bf16=precision == "bf16",
                devices=device,
                pooling_method="cls",
                colbert_dim=colbert_dim,
                trust_remote_code=False,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"FlagEmbedding could not load the checkpoint in {model_dir} ({type(exc).__name__}: {exc}); "
                "check that it is a complete BGE-M3 checkpoint"
            ) from exc

        self._torch: Any = torch
        # Keep the wrapper alive: its __del__ moves the model back to the CPU.
        self._flag: Any = flag
        module: Any = flag.model  # EncoderOnlyEmbedderM3ModelForInference
        module.to(device)
        module.eval()
        self._module = module
        self._tokenizer: Any = flag.tokenizer
        self.device = device

        if not getattr(self._tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"the tokenizer in {model_dir} did not load as a fast tokenizer; add tokenizer.json"
            )
        config = module.config
        self.dense_dim = int(config.hidden_size)
        self.colbert_dim = int(module.colbert_linear.out_features)
        self.vocab_size = int(config.vocab_size)
        positions = int(config.max_position_embeddings)
        if getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):
            positions -= int(config.pad_token_id) + 1  # RoBERTa positions start after the pad index
        tok_limit = int(getattr(self._tokenizer, "model_max_length", positions) or positions)
        self.max_length = min(positions, tok_limit) if tok_limit < 1_000_000 else positions

        tok = self._tokenizer
        self.pad_id = int(tok.pad_token_id)
        special = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
        self.special_ids: _IntArray = np.array(sorted(i for i in special if i is not None), dtype=np.int64)

    # -- tokenizer --------------------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        try:
            enc = self._tokenizer(
                texts,
                add_special_tokens=special_tokens,
                truncation=False,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        except (TypeError, UnicodeEncodeError):
            _raise_if_not_utf8(texts)
            raise
        ids: list[list[int]] = enc["input_ids"]
        return ids

    def offsets(self, text: str) -> list[tuple[int, int]]:
        try:
            enc = self._tokenizer(
                text,
                add_special_tokens=False,
                truncation=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        except (TypeError, UnicodeEncodeError):
            _raise_if_not_utf8([text], single=True)
            raise
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        return len(self.token_ids([text], special_tokens=False)[0])

    # -- model ------------------------------------------------------------------------------------

    def encode(
        self, ids: list[list[int]], *, batch_size: int, colbert: bool, show_progress: bool
    ) -> tuple[_FloatArray, list[SparseVector], list[_FloatArray] | None]:
        torch = self._torch
        n = len(ids)
        lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        dense = np.empty((n, self.dense_dim), dtype=np.float32)
        sparse: list[SparseVector] = [{} for _ in range(n)]
        colbert_vecs: list[_FloatArray] | None = (
            [np.empty((0, self.colbert_dim), np.float32)] * n if colbert else None
        )

        batches = _plan_batches(lengths[order], batch_size)
        progress: Any = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=n, desc="Encoding", unit="text")
        try:
            with torch.inference_mode():
                for start, stop in batches:
                    idx = order[start:stop]
                    lens = lengths[idx]
                    width = int(lens[0])
                    batch_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
                    for row, i in enumerate(idx.tolist()):
                        batch_ids[row, : lens[row]] = ids[i]
                    mask = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
                    out = self._module(
                        {
                            "input_ids": torch.from_numpy(batch_ids).to(self.device),
                            "attention_mask": torch.from_numpy(mask).to(self.device),
                        },
                        return_dense=True,
                        return_sparse=True,
                        return_colbert_vecs=colbert,
                    )
                    dense[idx] = out["dense_vecs"].float().cpu().numpy()
                    weights = out["sparse_vecs"].squeeze(-1).float().cpu().numpy()
                    for i, vec in zip(idx.tolist(), self._sparse_rows(batch_ids, weights, mask)):
                        sparse[i] = vec
                    if colbert_vecs is not None:
                        vecs = out["colbert_vecs"].float().cpu().numpy()
                        for row, i in enumerate(idx.tolist()):
                            # FlagEmbedding drops [CLS] and padding: tokens - 1 rows.
                            colbert_vecs[i] = np.ascontiguousarray(vecs[row, : lens[row] - 1])
                    if progress is not None:
                        progress.update(len(idx))
        finally:
            if progress is not None:
                progress.close()

        # The module normalises in the model's dtype; make rows unit length in float32.
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        np.divide(dense, np.maximum(norms, np.float32(1e-12)), out=dense)
        return dense, sparse, colbert_vecs

    def _sparse_rows(
        self, ids: _IntArray, weights: npt.NDArray[np.float32], mask: _IntArray
    ) -> list[SparseVector]:
        """Max weight per (row, token id), specials and weights <= 0 dropped; no per-token Python."""
        rows_n = ids.shape[0]
        keep = (weights > 0) & (mask > 0) & ~np.isin(ids, self.special_ids)
        rows, cols = np.nonzero(keep)
        if rows.size == 0:
            return [{} for _ in range(rows_n)]
        key = rows.astype(np.int64) * self.vocab_size + ids[rows, cols]
        w = weights[rows, cols]
        order = np.argsort(key, kind="stable")
        key = key[order]
        w = w[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        best = np.maximum.reduceat(w, starts)
        ukey = key[starts]
        urow = ukey // self.vocab_size
        token_ids = (ukey - urow * self.vocab_size).tolist()
        values = best.tolist()
        bounds = np.searchsorted(urow, np.arange(rows_n + 1)).tolist()
        return [
            dict(zip(token_ids[bounds[r] : bounds[r + 1]], values[bounds[r] : bounds[r + 1]]))
            for r in range(rows_n)
        ]


_PAD_TOLERANCE = 0.05
_PAD_MIN_TOKENS = 512


def _plan_batches(sorted_lengths: _IntArray, batch_size: int) -> list[tuple[int, int]]:
    """Split texts sorted longest first into ``(start, stop)`` batches of at most ``batch_size``.

    A batch also ends early when the next text would make padding more than 5% of its tokens in a
    batch of at least ``_PAD_MIN_TOKENS`` padded tokens: long texts of mixed lengths then run in
    smaller, tighter batches (padding is wasted compute, and a batch without padding needs no
    attention mask), while short texts such as queries keep full batches.
    """
    lengths = sorted_lengths.tolist()
    batches: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, length in enumerate(lengths):
        count = i - start
        if count and (
            count >= batch_size
            or (
                lengths[start] * (count + 1) >= _PAD_MIN_TOKENS
                and lengths[start] * (count + 1) > (1 + _PAD_TOLERANCE) * (tokens + length)
            )
        ):
            batches.append((start, i))
            start, tokens = i, 0
        tokens += length
    if lengths:
        batches.append((start, len(lengths)))
    return batches


# ---------------------------------------------------------------------------------------------------
# Options


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _check_max_length(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_MAX_LENGTH:
        raise ConfigError(
            f"{name} must be an int of at least {_MIN_MAX_LENGTH} tokens (<s>, one token, </s>), got {value!r}"
        )


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _check_texts(texts: Sequence[str], *, allow_empty: bool) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise InputError(
            "texts is a single string; pass a list of texts, e.g. encode_documents([text])", field="text"
        )
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise InputError(
            f"texts must be a sequence of str (a list or tuple), got {type(texts).__name__}", field="text"
        )
    rows = list(texts)
    for i, text in enumerate(rows):
        if not isinstance(text, str):
            what = "None" if text is None else f"a {type(text).__name__}"
            raise InputError(
                f"text at row {i} is {what}, not a str; give every row a non-empty str", field="text", row=i
            )
        if not allow_empty and (not text or text.isspace()):
            raise InputError(
                f"text at row {i} is empty or whitespace-only; drop the row or give it some text",
                field="text",
                row=i,
            )
    return rows


def _raise_if_not_utf8(texts: Sequence[str], *, single: bool = False) -> None:
    """The tokenizer refuses str it cannot encode as UTF-8 (lone surrogates): name the row."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            where = "text" if single else f"text at row {i}"
            raise InputError(
                f"{where} is not valid UTF-8: it holds a lone surrogate ({text[err.start]!r} at character "
                f"{err.start}); fix the input encoding (decode bytes with errors='replace')",
                field="text",
                row=None if single else i,
            ) from err


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device.strip())
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} asked for, but CUDA is not available to torch {torch.__version__}; "
                "use device='cpu' (or None to pick), or install a CUDA build of torch"
            )
        index = 0 if parsed.index is None else parsed.index
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"device {device!r} does not exist: there are {count} CUDA devices (0..{count - 1})"
            )
        return f"cuda:{index}"
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} asked for, but MPS is not available; use device='cpu'")
        return "mps"
    return str(parsed)


def _resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision in ("fp16", "bf16") and device == "cpu":
        raise ConfigError(
            f"precision={precision!r} is not supported on CPU (slow and lossy there); "
            "use precision='fp32' (or 'auto') on CPU, or a CUDA device for half precision"
        )
    return precision


# ---------------------------------------------------------------------------------------------------
# Finding and checking the checkpoint


def _resolve_model_dir(
    name: str, cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None
) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"model path {name!r} is a file; pass the checkpoint directory that holds it")
    if not _HUB_ID.match(name) or name.startswith(("/", ".", "~")):
        raise ModelLoadError(
            f"model directory {name!r} does not exist; pass an existing BGE-M3 checkpoint directory "
            f"or a hub id such as {DEFAULT_MODEL!r}"
        )
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(
            repo_id=name,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=local_files_only,
            allow_patterns=_HUB_PATTERNS,
        )
        resolved = Path(snapshot)
        if not any((resolved / f).exists() for f in _WEIGHT_FILES):
            # Checkpoints without safetensors weights ship pytorch_model.bin.
            resolved = Path(
                snapshot_download(
                    repo_id=name,
                    cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
                    local_files_only=local_files_only,
                    allow_patterns=[*_HUB_PATTERNS, "pytorch_model*.bin"],
                )
            )
    except Exception as exc:
        how = "from the local cache only (offline)" if local_files_only else "from the Hugging Face hub"
        raise ModelLoadError(
            f"could not get model {name!r} {how} ({type(exc).__name__}: {exc}); download {name} on a "
            f"connected machine (huggingface-cli download {name} --local-dir DIR) and pass its directory "
            f"as model_name_or_path, or set ${MODEL_ENV} to it"
        ) from exc
    return resolved


def _check_model_dir(path: Path) -> int:
    """Refuse a checkpoint with missing or truncated files; return the ColBERT head's output dim."""
    where = f"in {path}"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"config.json is missing {where}; a BGE-M3 checkpoint needs its model config")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        hidden = int(config["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"config.json {where} is unreadable or has no hidden_size ({exc})") from exc

    weights = [f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise ModelLoadError(f"model weights are missing {where}: expected one of {', '.join(_WEIGHT_FILES)}")
    if weights[0] == "model.safetensors":
        _check_safetensors(path / "model.safetensors")
    elif weights[0].endswith(".index.json"):
        _check_shards(path / weights[0])

    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"tokenizer files are missing {where}: expected tokenizer.json (or sentencepiece.bpe.model)"
        )
    sparse_out = _check_head(path / "sparse_linear.pt", hidden, "sparse")
    if sparse_out != 1:
        raise ModelLoadError(f"sparse_linear.pt {where} has {sparse_out} outputs; BGE-M3's sparse head has 1")
    return _check_head(path / "colbert_linear.pt", hidden, "ColBERT")


def _check_head(file: Path, hidden: int, what: str) -> int:
    if not file.is_file():
        raise ModelLoadError(
            f"{file.name} is missing in {file.parent}; without it FlagEmbedding would silently use a RANDOM "
            f"{what} head. Use the complete BGE-M3 checkpoint (it ships colbert_linear.pt and sparse_linear.pt)"
        )
    import torch

    try:
        # weights_only: tensors only, no pickled code runs.
        state = torch.load(file, map_location="cpu", weights_only=True)
        weight, bias = state["weight"], state["bias"]
        out_dim, in_dim = (int(d) for d in weight.shape)
        ok = bias.shape == (out_dim,)
    except Exception as exc:
        raise ModelLoadError(
            f"{file.name} in {file.parent} is corrupt or not a plain tensor state dict "
            f"({type(exc).__name__}: {exc}); re-download the checkpoint"
        ) from exc
    if not ok or in_dim != hidden:
        raise ModelLoadError(
            f"{file.name} in {file.parent} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}, "
            f"which do not fit hidden size {hidden}; the head belongs to another model"
        )
    return out_dim


def _check_safetensors(file: Path) -> None:
    """Cheap integrity check: the header parses and the data it describes fits the file exactly."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header length {header_len} does not fit a file of {size} bytes")
            header = json.loads(fh.read(header_len))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
        if 8 + header_len + end != size:
            raise ValueError(f"tensors need {8 + header_len + end} bytes, the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(
            f"{file.name} in {file.parent} is corrupt or truncated ({exc}); re-download the checkpoint"
        ) from exc


def _check_shards(index: Path) -> None:
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"{index.name} in {index.parent} is unreadable ({exc})") from exc
    for shard in shards:
        file = index.parent / shard
        if not file.is_file():
            raise ModelLoadError(f"weight shard {shard} named by {index.name} is missing in {index.parent}")
        if shard.endswith(".safetensors"):
            _check_safetensors(file)

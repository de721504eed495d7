"""M3Embedder: text in, ``M3Embeddings`` (dense + sparse + optional ColBERT) out, over a model backend.

``M3Embedder`` checks options and texts, finds texts longer than the max length (cut and listed in
``M3Embeddings.truncated``, or refused, as ``overflow`` says), cuts long texts into token spans
(``chunk_spans``) and takes a lock around every call. The model itself is an ``EmbeddingBackend``
(``_backend``) got from the table in ``backends`` (or ``multi_device`` for ``devices=[...]``): by
default BGE-M3 through plain torch without importing FlagEmbedding (``transformers_backend``), or as
FlagEmbedding loads it (``backend="flagembedding"``, ``flagembedding_backend``), both run by the
backend-neutral loop in ``loop``; the outputs of both equal FlagEmbedding's own (the tests check it).
The checkpoint is found and checked by ``checkpoint``.

``M3Embedder`` satisfies the ``Encoder``, ``ChunkingEncoder`` and ``ColbertEncoder`` protocols of
``types``. This module imports neither torch nor FlagEmbedding nor transformers: the backend is
loaded inside the constructor, so ``import milvus_m3.embedder`` stays light.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._checks import check_bool, check_int, check_texts
from ..errors import ConfigError, InputError, TextTooLongError
from ..types import M3Embeddings
from .backend import BackendOptions, EmbeddingBackend, default_threads
from .backends import BACKENDS, load_in_process
from .checkpoint import DEFAULT_MODEL, model_fingerprint

# ---------------------------------------- embedder_checks
# Argument and text checks of M3Embedder (ConfigError / InputError naming the option or row).

_MIN_MAX_LENGTH = 3  # <s>, one content token, </s>


def _check_max_length(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_MAX_LENGTH:
        raise ConfigError(
            f"{name} must be an int of at least {_MIN_MAX_LENGTH} tokens (<s>, one token, </s>), got {value!r}"
        )


def _check_devices(devices: Sequence[str] | None, device: str | None) -> tuple[str, ...] | None:
    if devices is None:
        return None
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise ConfigError(
            f"devices must be a non-empty list of devices such as ['cuda:0', 'cuda:1'], got {devices!r}"
        )
    if device is not None:
        raise ConfigError("pass device= or devices=, not both")
    for d in devices:
        if not isinstance(d, str) or not d.strip():
            raise ConfigError(f"devices must hold device names such as 'cuda:0', got {d!r}")
    return tuple(d.strip() for d in devices)


def _check_texts(texts: Sequence[str], *, allow_empty: bool) -> list[str]:
    # UTF-8 is checked by the backend when its tokenizer refuses a text (no extra pass over every text).
    return check_texts(
        texts,
        field="text",
        one_string_hint="e.g. encode_documents([text])",
        allow_empty=allow_empty,
        check_utf8=False,
        expected="a sequence of str (a list or tuple)",
        row_label="text at row {i}",
    )


__all__ = ["BACKENDS", "DEFAULT_MODEL", "OVERFLOW_MODES", "PRECISIONS", "M3Embedder"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
OVERFLOW_MODES = ("warn", "error", "truncate")


# ---------------------------------------------------------------------------------------------------
# The embedder


class M3Embedder:
    """BGE-M3 dense + learned-sparse (+ optional ColBERT) embeddings, ready for Milvus.

    ``model_name_or_path`` is a local checkpoint directory or a Hugging Face hub id (resolved with
    ``huggingface_hub.snapshot_download``; ``local_files_only`` defaults to ``$HF_HUB_OFFLINE``).
    ``device`` None picks "cuda:0" when CUDA is available, else "cpu" (one device, never all GPUs).
    ``precision`` "auto" is fp16 on CUDA and fp32 elsewhere; "int8" (CPU) quantises the linear layers
    dynamically, per-channel weight scales (4-6x faster than fp32 on one thread, full-size architecture;
    SciFact nDCG@10 within 0.005 of fp32 on the stand-in encoders: benchmarks/bench_int8*.py). ``threads`` sets
    torch's CPU threads for the whole process (None: ``$OMP_NUM_THREADS`` when set, else the CPUs this
    process may use). ``max_batch_tokens`` bounds a batch's padded tokens (rows x longest row) as well
    as its count; a batch that runs out of memory is split and retried, logged at WARNING.
    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) runs one worker process per device and splits each
    call's texts between them, outputs in input order; call ``close()`` (or use ``with``) to stop
    them. ``backend`` is "transformers" (default) or "flagembedding". ``overflow`` says what happens to a text
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
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        devices: Sequence[str] | None = None,
        backend: str = "transformers",
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
        check_int("batch_size", batch_size, 1)
        _check_max_length("query_max_length", query_max_length)
        _check_max_length("document_max_length", document_max_length)
        if overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}; got {overflow!r}")
        check_bool("colbert", colbert)
        check_bool("show_progress", show_progress)
        if local_files_only is not None:
            check_bool("local_files_only", local_files_only)
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ConfigError(f"cache_dir must be a directory path or None, got {cache_dir!r}")
        if threads is not None:
            check_int("threads", threads, 1)
        if max_batch_tokens is not None:
            check_int("max_batch_tokens", max_batch_tokens, 1)
        device_list = _check_devices(devices, device)
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")

        self._model_name = os.fspath(model_name_or_path)
        # The fast tokenizer changes its truncation state on every call and one model runs one batch
        # at a time: calls from several threads take turns.
        self._lock = threading.RLock()
        self._batch_size = batch_size
        self._overflow = overflow
        self._colbert = colbert
        self._show_progress = show_progress
        self._fingerprint: str | None = None

        self._backend: EmbeddingBackend = _load_backend(
            BackendOptions(
                model_name_or_path=self._model_name,
                device=device,
                precision=precision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                backend=backend,
                threads=threads,
                max_batch_tokens=max_batch_tokens,
                devices=device_list,
            )
        )
        self._devices = device_list
        self._threads = threads if threads is not None else default_threads()
        model_dir = self._backend.model_dir

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
            "loaded %s from %s on %s (%s, %d CPU threads): dense dim %d, colbert dim %d, max %d tokens",
            self._model_name,
            model_dir,
            self.device,
            self.precision,
            threads if threads is not None else default_threads(),
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
        return self._backend.model_dir

    @property
    def model_fingerprint(self) -> str:
        """What the loaded checkpoint is, whatever its path (``checkpoint.model_fingerprint``); declares
        ``types.Fingerprinted``, so collections record and check it."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir)
        return self._fingerprint

    @property
    def config_key(self) -> str:
        """Everything that changes the vectors (the checkpoint, max lengths, precision); declares
        ``types.CacheKeyed``, so an encoding cache never reuses vectors of other settings."""
        return (
            f"m3|{self.model_fingerprint}|q={self._query_max_length}|d={self._document_max_length}"
            f"|{self.precision}"
        )

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
        return self._backend.device

    @property
    def precision(self) -> str:
        """ "fp32", "fp16" or "bf16" ("auto" resolved)."""
        return self._backend.precision

    @property
    def threads(self) -> int:
        """torch's CPU threads this embedder asked for (per process; per worker with ``devices``)."""
        return self._threads

    @property
    def devices(self) -> tuple[str, ...] | None:
        """The worker devices (``devices=``), or None when the model runs in this process."""
        return self._devices

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def close(self) -> None:
        """Stop the worker processes of ``devices=`` (nothing to do otherwise); safe to call twice."""
        self._backend.close()

    def __enter__(self) -> M3Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            f"M3Embedder({self._model_name!r}, device={self.device!r}, precision={self.precision!r}, "
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
        check_int("max_tokens", max_tokens, 1)
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
        check_int("batch_size", batch_size, 1)
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
        check_bool("colbert", colbert)
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
            # One report: the warning reaches every caller (the CLI shows it as one line); a log record
            # as well would print it twice where logging is configured.
            warnings.warn(message, UserWarning, stacklevel=4)
        else:
            logger.info(message)


# ---------------------------------------------------------------------------------------------------
# Options


def _load_backend(options: BackendOptions) -> EmbeddingBackend:
    """Worker processes when ``devices`` is given (``multi_device``), else the named backend here."""
    if options.devices is not None:
        from .multi_device import load_multi_device_backend

        return load_multi_device_backend(options)
    return load_in_process(options)

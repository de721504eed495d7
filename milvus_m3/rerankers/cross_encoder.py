"""CrossEncoderReranker: (query, passage) pairs in, one relevance score per pair out.

A cross-encoder reads the query and a passage together (``<s> query </s></s> passage </s>``) and gives
one logit: slower than comparing vectors, and a better order for the few candidates a first stage
found. ``HybridSearcher(reranker=CrossEncoderReranker(...), rerank_depth=50)`` uses it as a second
stage (``search/rerank_stage.py``).

The scores equal FlagEmbedding's ``FlagReranker(model).compute_score(pairs)`` (raw, and with
``normalize=True`` the sigmoid of them; the tests check it on a tiny checkpoint), including how a long
pair is cut: the query to ``query_max_length`` tokens (3/4 of ``max_length`` unless given), the
passage to what is left of ``max_length``. Unlike FlagReranker, a cut is never silent: pairs longer
than ``max_length`` are counted and warned about (``overflow="warn"``), refused with
``TextTooLongError`` (``"error"``) or cut quietly (``"truncate"``). Pairs are sorted by length and
padded per batch (``_batching.plan_batches``); a batch that runs out of GPU memory is split; identical
pairs are scored once.

This module imports no torch: the model (``_cross_encoder``) loads inside the constructor.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_bool, check_int, check_texts
from ..embedder.batching import plan_batches, run_with_backoff
from ..errors import ConfigError, InputError, TextTooLongError

__all__ = ["DEFAULT_RERANKER", "OVERFLOW_MODES", "PRECISIONS", "CrossEncoderReranker"]

logger = logging.getLogger("milvus_m3.reranker")

DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
OVERFLOW_MODES = ("warn", "error", "truncate")
PAIR_SPECIAL_TOKENS = 4  # <s> query </s></s> passage </s>
_MIN_MAX_LENGTH = 8


class CrossEncoderReranker:
    """A BAAI-style cross-encoder (an XLM-R sequence classifier with one label) as a reranker.

    ``model`` is a checkpoint directory or a hub id (``local_files_only`` defaults to
    ``$HF_HUB_OFFLINE``). ``device`` None picks "cuda:0" when CUDA is available, else "cpu";
    ``precision`` "auto" is fp16 on CUDA and fp32 elsewhere ("int8": dynamic quantisation on CPU).
    ``max_length`` is the most tokens of one pair (FlagReranker's default, 512); ``query_max_length``
    the most of its query (None: ``max_length * 3 // 4``, as FlagReranker). ``normalize`` maps scores
    through a sigmoid into (0, 1). ``batch_size`` / ``max_batch_tokens`` bound a batch's pairs and
    padded tokens. ``overflow`` says what happens to a pair longer than the limits (see the module).
    ``threads`` sets torch's CPU threads for the process (None: ``$OMP_NUM_THREADS``, else all CPUs).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_RERANKER,
        *,
        device: str | None = None,
        precision: str = "auto",
        max_length: int = 512,
        query_max_length: int | None = None,
        normalize: bool = False,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        overflow: str = "warn",
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        threads: int | None = None,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
            raise ConfigError(
                f"model must be a checkpoint directory or a hub id such as {DEFAULT_RERANKER!r}, got {model!r}"
            )
        if device is not None and (not isinstance(device, str) or not device.strip()):
            raise ConfigError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        _check_max_length(max_length)
        qmax = max_length * 3 // 4 if query_max_length is None else query_max_length
        check_int("query_max_length", qmax, 1)
        if qmax > max_length - PAIR_SPECIAL_TOKENS - 1:
            raise ConfigError(
                f"query_max_length={qmax} leaves no room for the passage in max_length={max_length} "
                f"(a pair takes {PAIR_SPECIAL_TOKENS} special tokens); pass at most "
                f"{max_length - PAIR_SPECIAL_TOKENS - 1}"
            )
        check_bool("normalize", normalize)
        check_int("batch_size", batch_size, 1)
        if max_batch_tokens is not None:
            check_int("max_batch_tokens", max_batch_tokens, 1)
        if overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}; got {overflow!r}")
        if local_files_only is not None and not isinstance(local_files_only, bool):
            raise ConfigError(f"local_files_only must be True, False or None, got {local_files_only!r}")
        if threads is not None:
            check_int("threads", threads, 1)

        from .model import CrossEncoderModel

        self._model_name = os.fspath(model)
        self._model = CrossEncoderModel(
            self._model_name,
            device=device,
            precision=precision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            local_files_only=local_files_only,
            threads=threads,
        )
        if max_length > self._model.max_length:
            raise ConfigError(
                f"max_length={max_length} is more than the model in {self._model.model_dir} can take "
                f"({self._model.max_length} tokens); pass max_length={self._model.max_length} or less"
            )
        self._max_length = max_length
        self._query_max_length = qmax
        self._normalize = normalize
        self._batch_size = batch_size
        self._max_batch_tokens = max_batch_tokens
        self._overflow = overflow
        self._lock = threading.RLock()  # one model, one batch at a time
        logger.info(
            "loaded reranker %s from %s on %s (%s, %s encoder), max %d tokens per pair",
            self._model_name,
            self._model.model_dir,
            self.device,
            self.precision,
            self._model.kind,
            max_length,
        )

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def model_dir(self) -> Path:
        return self._model.model_dir

    @property
    def device(self) -> str:
        return self._model.device

    @property
    def precision(self) -> str:
        return self._model.precision

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def normalize(self) -> bool:
        return self._normalize

    def __repr__(self) -> str:
        return (
            f"CrossEncoderReranker(model={self._model_name!r}, device={self.device!r}, "
            f"precision={self.precision!r}, max_length={self._max_length}, normalize={self._normalize})"
        )

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text for ``query`` (in the order of ``texts``); higher is more relevant."""
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r}", field="query")
        rows = check_texts(texts, field="texts", allow_empty=True, row_label="passage at row {i}")
        return self.score_pairs([(query, t) for t in rows])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per ``(query, passage)`` pair, as ``FlagReranker.compute_score(pairs)``."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise InputError("pairs must be a list of (query, passage) tuples", field="pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"pair at row {i} is not a (query, passage) tuple", field="pairs", row=i)
        if not pairs:
            return []
        queries = check_texts(
            [p[0] for p in pairs], field="pairs", allow_empty=True, row_label="query of pair {i}"
        )
        passages = check_texts(
            [p[1] for p in pairs], field="pairs", allow_empty=True, row_label="passage of pair {i}"
        )
        with self._lock:
            rows = self._pair_ids(queries, passages)
            scores = self._run(rows)
        if self._normalize:
            return [float(1.0 / (1.0 + np.exp(-s))) for s in scores]
        return scores

    # ----------------------------------------------------------------- internals

    def _pair_ids(self, queries: list[str], passages: list[str]) -> list[list[int]]:
        """The pairs' token ids, cut as FlagReranker cuts them, after applying ``overflow``."""
        unique_queries = sorted(set(queries))
        q_ids = dict(zip(unique_queries, self._model.token_ids(unique_queries), strict=True))
        p_ids = self._model.token_ids(passages)
        m = self._model
        qmax, limit = self._query_max_length, self._max_length
        rows: list[list[int]] = []
        cut: list[int] = []
        for i, (query, passage) in enumerate(zip(queries, p_ids, strict=True)):
            q = q_ids[query]
            length = len(q) + len(passage) + PAIR_SPECIAL_TOKENS
            if len(q) > qmax or length > limit:
                cut.append(i)
                if self._overflow == "error":
                    raise TextTooLongError(
                        f"pair at row {i} has {length} tokens (query {len(q)}, passage {len(passage)}, with "
                        f"special tokens), more than max_length={limit} or a query over query_max_length={qmax}; "
                        "raise max_length (the model takes at most "
                        f"{m.max_length}), pass shorter passages (ingest --chunk-tokens), or pass "
                        "overflow='warn' or 'truncate' to cut them",
                        field="texts",
                        row=i,
                    )
                q = q[:qmax]
                passage = passage[: max(0, limit - PAIR_SPECIAL_TOKENS - len(q))]
            rows.append([m.cls_id, *q, m.eos_id, m.eos_id, *passage, m.eos_id])
        if cut:
            message = (
                f"{len(cut)} of {len(rows)} (query, passage) pairs are longer than max_length={limit} "
                f"(rows {cut[:10]}{' ...' if len(cut) > 10 else ''}); they were cut to fit, as FlagReranker "
                "cuts them (raise max_length, or pass overflow='error' to refuse them)"
            )
            if self._overflow == "warn":
                warnings.warn(message, UserWarning, stacklevel=4)
                logger.warning(message)
            else:
                logger.info(message)
        return rows

    def _run(self, all_rows: list[list[int]]) -> list[float]:
        # Identical pairs are scored once: they get exactly one score (a batch's other rows can move
        # a row's logit by an ulp), so equal texts tie exactly and are ordered by id.
        first: dict[tuple[int, ...], int] = {}
        where = [first.setdefault(tuple(r), len(first)) for r in all_rows]
        rows = [list(key) for key in first]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        scores = np.zeros(len(rows), dtype=np.float64)

        def run(start: int, stop: int) -> None:
            idx = order[start:stop]
            scores[idx] = self._model.logits([rows[i] for i in idx.tolist()])

        from ..embedder.torch_common import is_oom

        run_with_backoff(
            plan_batches(sorted_lengths, self._batch_size, self._max_batch_tokens),
            sorted_lengths.tolist(),
            run,
            is_oom,
            device=self.device,
            on_oom=self._model.after_oom,
        )
        out: list[float] = scores[where].tolist()
        return out


def _check_max_length(value: Any) -> None:
    """A pair's token limit: at least ``_MIN_MAX_LENGTH`` (four special tokens and some of each text)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_MAX_LENGTH:
        raise ConfigError(f"max_length must be an int of at least {_MIN_MAX_LENGTH}, got {value!r}")

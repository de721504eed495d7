"""The backend-neutral encode loop: numpy in, numpy out, around one forward seam.

Everything a BGE-M3 backend does that needs no deep-learning framework lives here: the tokenizer
(``TokenizerInfo``: a Rust ``tokenizers.Tokenizer`` set to never truncate or pad, its special ids and
the model's max length), sorting texts by length, planning batches (``batching.plan_batches``: a text
count, a padded-token budget, a padding tolerance), padding each batch to numpy ``int64`` arrays,
splitting a batch that runs out of memory (``batching.run_with_backoff``), progress, and turning the
forward pass's arrays into ``BackendOutput``: dense rows made unit length in float32, sparse dicts
(the max weight per token id, special tokens and weights <= 0 dropped, as FlagEmbedding's
``_process_token_weights``), ColBERT rows ([CLS] and padding dropped, each row unit length).

A backend is ``EncodeLoop`` plus its ``forward`` (the seam: ``EncodeLoop.forward`` says its contract), its
``is_out_of_memory`` and its loader: ``transformers_backend`` and ``flagembedding_backend`` wrap torch
models (``torch_common`` holds what they share); an ONNX Runtime session satisfies the same contract.

Imports neither torch nor transformers (``tests/unit/test_layout.py`` checks it); tqdm only when a
progress bar is asked for.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import check_texts, utf8_error
from ..errors import ConfigError, InputError
from ..types import SparseVector
from .backend import BackendOutput
from .batching import plan_batches, run_with_backoff

logger = logging.getLogger("milvus_m3.embedder")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

NORM_FLOOR = np.float32(1e-12)
"""Rows are divided by max(norm, this), as ``torch.nn.functional.normalize`` does: a zero row stays zero."""


class ForwardOutput(NamedTuple):
    """What one forward pass gives for a padded batch of ``rows`` texts x ``tokens`` tokens.

    Any float dtype (float16 and float32 are cast to float32 here); numpy arrays, or anything
    ``np.asarray`` reads (ONNX Runtime's outputs are numpy arrays already).
    """

    dense: npt.NDArray[Any]
    """(rows, dense_dim): the [CLS] row of the last hidden state, normalised or not (made unit here)."""
    sparse: npt.NDArray[Any]
    """(rows, tokens) or (rows, tokens, 1): relu(sparse head) of each token's hidden state."""
    colbert: npt.NDArray[Any] | None
    """None unless asked for: the ColBERT head of each token's hidden state, (rows, tokens - 1,
    colbert_dim) over the tokens after [CLS] (FlagEmbedding's layout) or (rows, tokens, colbert_dim)
    over every token; padding rows any value (dropped here). Made unit length here unless the backend
    declares ``EncodeLoop.colbert_is_unit``."""


class TokenizerInfo:
    """A Rust tokenizer set to never truncate or pad, with the special ids and the max length."""

    def __init__(self, tokenizer: Any, model_dir: Path, config: dict[str, Any]) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        names = special_token_names(model_dir)
        ids = {role: tokenizer.token_to_id(token) for role, token in names.items()}
        if ids["pad"] is None:
            raise ConfigError(f"the tokenizer in {model_dir} has no pad token {names['pad']!r}")
        self.pad_id = int(ids["pad"])
        self.special_ids: IntArray = np.array(
            sorted({int(i) for i in ids.values() if i is not None}), dtype=np.int64
        )
        positions = int(config["max_position_embeddings"])
        if config.get("model_type", "") in ("xlm-roberta", "roberta"):
            positions -= int(config.get("pad_token_id", 1)) + 1  # RoBERTa positions start after the pad
        limit = _tokenizer_max_length(model_dir)
        self.max_length = min(positions, limit) if limit is not None and limit < 1_000_000 else positions

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        try:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=special_tokens)
        except (TypeError, UnicodeEncodeError):
            check_texts(texts, allow_empty=True, row_label="text at row {i}")  # names the bad row
            raise
        return [e.ids for e in encodings]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        try:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
        except (TypeError, UnicodeEncodeError):
            _raise_if_not_utf8(text)
            raise
        return [(int(s), int(e)) for s, e in encoding.offsets]


def special_token_names(model_dir: Path) -> dict[str, str]:
    """The cls / eos / pad / unk tokens from special_tokens_map.json (XLM-R's when not there)."""
    names = {"cls": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = model_dir / file
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for role in names:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names[role] = value
        break
    return names


def _tokenizer_max_length(model_dir: Path) -> int | None:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    return int(value) if isinstance(value, (int, float)) else None


def _raise_if_not_utf8(text: str) -> None:
    """The tokenizer refuses a str it cannot encode as UTF-8 (a lone surrogate): say so."""
    err = utf8_error(text)
    if err is not None:
        raise InputError(
            f"text is not valid UTF-8: it holds a lone surrogate ({text[err.start]!r} at character "
            f"{err.start}); fix the input encoding (decode bytes with errors='replace')",
            field="text",
        ) from err


class EncodeLoop:
    """An ``EmbeddingBackend`` around a forward seam; a backend subclasses it and gives ``forward``.

    ``forward`` is looked up on the instance at each batch, so a test may wrap it (an injected OOM).
    """

    colbert_is_unit: bool = False
    """True when ``forward`` gives ColBERT rows already unit length (the torch backends normalise them
    on the device in the model's dtype, as FlagEmbedding does): the loop then only drops [CLS] and
    padding. Normalising (rows x tokens x dim) again on the CPU costs ~10 ms per 32 x 512-token batch
    at dim 1024, a few percent of a GPU forward pass."""

    def __init__(
        self,
        tok: TokenizerInfo,
        *,
        model_dir: Path,
        device: str,
        precision: str,
        dense_dim: int,
        colbert_dim: int,
        vocab_size: int,
        max_batch_tokens: int | None,
    ) -> None:
        self._tok = tok
        self.model_dir = model_dir
        self.device = device
        self.precision = precision
        self.dense_dim = dense_dim
        self.colbert_dim = colbert_dim
        self.vocab_size = vocab_size
        self.max_length = tok.max_length
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = tok.pad_id
        self.special_ids = tok.special_ids

    # -- the backend's part -----------------------------------------------------------------------

    def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
        """The seam: one padded batch through the model.

        ``input_ids`` and ``attention_mask`` are C-contiguous ``int64`` arrays of shape (rows, tokens),
        longest text first, padded on the right with the tokenizer's pad id (mask 0); ``colbert`` says
        whether ``ForwardOutput.colbert`` is wanted. These are the inputs and outputs of an ONNX export
        of BGE-M3 (``input_ids``, ``attention_mask`` -> ``dense_vecs``, ``sparse_vecs``,
        ``colbert_vecs``). Called again on a batch (or its halves) after an out-of-memory error.
        """
        raise NotImplementedError

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by ``forward``) is the runtime's out-of-memory error: the batch is split."""
        return False

    def after_out_of_memory(self) -> None:
        """Runs after each out-of-memory error, before the halves run (e.g. release cached memory)."""

    def close(self) -> None:
        """Nothing to release beyond memory."""

    # -- tokenizer --------------------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        return self._tok.token_ids(texts, special_tokens=special_tokens)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tok.offsets(text)

    def count(self, text: str) -> int:
        return len(self._tok.token_ids([text], special_tokens=False)[0])

    # -- the loop ---------------------------------------------------------------------------------

    def encode(
        self, ids: list[list[int]], *, batch_size: int, colbert: bool, show_progress: bool
    ) -> BackendOutput:
        n = len(ids)
        lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        dense = np.empty((n, self.dense_dim), dtype=np.float32)
        sparse: list[SparseVector] = [{} for _ in range(n)]
        colbert_vecs: list[FloatArray] | None = (
            [np.empty((0, self.colbert_dim), np.float32)] * n if colbert else None
        )
        progress: Any = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=n, desc="Encoding", unit="text")

        def run(start: int, stop: int) -> None:
            idx = order[start:stop]
            self._run_batch(ids, idx, lengths[idx], dense, sparse, colbert_vecs)
            if progress is not None:
                progress.update(len(idx))

        try:
            run_with_backoff(
                plan_batches(sorted_lengths, batch_size, self.max_batch_tokens),
                sorted_lengths.tolist(),
                run,
                self.is_out_of_memory,
                device=self.device,
                on_oom=self.after_out_of_memory,
            )
        finally:
            if progress is not None:
                progress.close()

        # The model may normalise in its own dtype (or not at all): make rows unit length in float32.
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        np.divide(dense, np.maximum(norms, NORM_FLOOR), out=dense)
        return dense, sparse, colbert_vecs

    def _run_batch(
        self,
        ids: list[list[int]],
        idx: IntArray,
        lens: IntArray,
        dense: FloatArray,
        sparse: list[SparseVector],
        colbert_vecs: list[FloatArray] | None,
    ) -> None:
        rows, width = len(idx), int(lens[0])
        batch_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        for row, i in enumerate(idx.tolist()):
            batch_ids[row, : lens[row]] = ids[i]
        mask = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
        out_dense, out_weights, out_colbert = self.forward(batch_ids, mask, colbert=colbert_vecs is not None)
        # Everything is computed before anything is written: a batch that fails can run again.
        dense_rows = np.asarray(out_dense, dtype=np.float32)
        weights = np.asarray(out_weights, dtype=np.float32).reshape(rows, width)
        vecs = (
            colbert_rows(out_colbert, lens, normalise=not self.colbert_is_unit)
            if colbert_vecs is not None
            else None
        )
        dense[idx] = dense_rows
        for i, vec in zip(idx.tolist(), self._sparse_rows(batch_ids, weights, mask), strict=True):
            sparse[i] = vec
        if colbert_vecs is not None and vecs is not None:
            for i, rows_of_text in zip(idx.tolist(), vecs, strict=True):
                colbert_vecs[i] = rows_of_text

    def _sparse_rows(self, ids: IntArray, weights: FloatArray, mask: IntArray) -> list[SparseVector]:
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
            dict(zip(token_ids[bounds[r] : bounds[r + 1]], values[bounds[r] : bounds[r + 1]], strict=True))
            for r in range(rows_n)
        ]


def colbert_rows(vecs: npt.NDArray[Any] | None, lens: IntArray, *, normalise: bool) -> list[FloatArray]:
    """Each text's ColBERT rows in float32: the tokens after [CLS] up to its length (FlagEmbedding drops
    [CLS] and padding: tokens - 1 rows), each made unit length when ``normalise``."""
    if vecs is None:
        raise ValueError("forward gave no ColBERT vectors though they were asked for (colbert=True)")
    out = np.asarray(vecs, dtype=np.float32)
    if out.shape[1] == int(lens[0]):  # the head over every token: drop [CLS]
        out = out[:, 1:]
    if normalise:
        norms = np.sqrt(np.einsum("btd,btd->bt", out, out))[:, :, None]  # no (b, t, d) temporary
        out = out / np.maximum(norms, NORM_FLOOR)
    return [np.ascontiguousarray(out[row, : n - 1]) for row, n in enumerate(lens.tolist())]

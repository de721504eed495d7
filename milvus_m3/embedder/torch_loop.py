"""What both torch backends share: the tokenizer, the batched encode loop, sparse rows, devices, threads.

``TorchBackend`` tokenizes with a Rust ``tokenizers.Tokenizer`` (never truncating: a long text is
never cut silently), sorts texts by length, pads per batch (``_batching.plan_batches``: a text count,
a padded-token budget and a padding tolerance), runs ``forward`` under ``torch.inference_mode`` on a
model moved to its device once, splits a batch that runs out of memory (``_batching.run_with_backoff``)
and reduces sparse weights with numpy. Subclasses load the model and give ``forward``:
``_hf_backend`` (transformers, the default) and ``_flag_backend`` (FlagEmbedding).

Private. torch is imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._checks import check_texts, utf8_error
from ..errors import ConfigError, InputError
from ..types import SparseVector
from .backend import default_threads
from .batching import plan_batches, run_with_backoff

logger = logging.getLogger("milvus_m3.embedder")

_FloatArray = npt.NDArray[np.float32]
_IntArray = npt.NDArray[np.int64]

Forward = tuple[Any, Any, Any]
"""What ``TorchBackend.forward`` gives: dense (rows, dim), token weights (rows, tokens), ColBERT or None."""


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
        self.special_ids: _IntArray = np.array(
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


class TorchBackend:
    """The loop shared by the torch backends; a subclass sets the model up and gives ``forward``."""

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
        import torch

        self._torch: Any = torch
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

    # -- tokenizer --------------------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        return self._tok.token_ids(texts, special_tokens=special_tokens)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tok.offsets(text)

    def count(self, text: str) -> int:
        return len(self._tok.token_ids([text], special_tokens=False)[0])

    # -- model ------------------------------------------------------------------------------------

    def forward(self, input_ids: Any, attention_mask: Any, *, colbert: bool) -> Forward:
        """One padded batch through the model: dense rows, token weights, ColBERT rows (or None)."""
        raise NotImplementedError

    def encode(
        self, ids: list[list[int]], *, batch_size: int, colbert: bool, show_progress: bool
    ) -> tuple[_FloatArray, list[SparseVector], list[_FloatArray] | None]:
        n = len(ids)
        lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        dense = np.empty((n, self.dense_dim), dtype=np.float32)
        sparse: list[SparseVector] = [{} for _ in range(n)]
        colbert_vecs: list[_FloatArray] | None = (
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
            with self._torch.inference_mode():
                run_with_backoff(
                    plan_batches(sorted_lengths, batch_size, self.max_batch_tokens),
                    sorted_lengths.tolist(),
                    run,
                    is_oom,
                    device=self.device,
                    on_oom=self._after_oom,
                )
        finally:
            if progress is not None:
                progress.close()

        # The model normalises in its own dtype; make rows unit length in float32.
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        np.divide(dense, np.maximum(norms, np.float32(1e-12)), out=dense)
        return dense, sparse, colbert_vecs

    def _run_batch(
        self,
        ids: list[list[int]],
        idx: _IntArray,
        lens: _IntArray,
        dense: _FloatArray,
        sparse: list[SparseVector],
        colbert_vecs: list[_FloatArray] | None,
    ) -> None:
        torch = self._torch
        width = int(lens[0])
        batch_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        for row, i in enumerate(idx.tolist()):
            batch_ids[row, : lens[row]] = ids[i]
        mask = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
        out_dense, out_weights, out_colbert = self.forward(
            torch.from_numpy(batch_ids).to(self.device),
            torch.from_numpy(mask).to(self.device),
            colbert=colbert_vecs is not None,
        )
        # Everything is computed before anything is written: a batch that fails can run again.
        dense_rows = out_dense.float().cpu().numpy()
        weights = out_weights.float().cpu().numpy()
        vecs = out_colbert.float().cpu().numpy() if colbert_vecs is not None else None
        dense[idx] = dense_rows
        for i, vec in zip(idx.tolist(), self._sparse_rows(batch_ids, weights, mask), strict=True):
            sparse[i] = vec
        if colbert_vecs is not None and vecs is not None:
            for row, i in enumerate(idx.tolist()):
                # FlagEmbedding drops [CLS] and padding: tokens - 1 rows.
                colbert_vecs[i] = np.ascontiguousarray(vecs[row, : lens[row] - 1])

    def close(self) -> None:
        """Nothing to release beyond memory."""

    def _after_oom(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

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
            dict(zip(token_ids[bounds[r] : bounds[r + 1]], values[bounds[r] : bounds[r + 1]], strict=True))
            for r in range(rows_n)
        ]


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS and CPU allocators)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _raise_if_not_utf8(text: str) -> None:
    """The tokenizer refuses a str it cannot encode as UTF-8 (a lone surrogate): say so."""
    err = utf8_error(text)
    if err is not None:
        raise InputError(
            f"text is not valid UTF-8: it holds a lone surrogate ({text[err.start]!r} at character "
            f"{err.start}); fix the input encoding (decode bytes with errors='replace')",
            field="text",
        ) from err


# ---------------------------------------------------------------------------------------------------
# Device, precision and threads


def resolve_device(device: str | None) -> str:
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


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision in ("fp16", "bf16") and device == "cpu":
        raise ConfigError(
            f"precision={precision!r} is not supported on CPU (slow and lossy there); "
            "use precision='fp32' (or 'auto') or 'int8' on CPU, or a CUDA device for half precision"
        )
    if precision == "int8" and device != "cpu":
        raise ConfigError(
            f"precision='int8' runs on CPU only (torch dynamic quantisation), not on {device}; "
            "use device='cpu', or precision='fp16' / 'bf16' on a GPU"
        )
    return precision


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads (per process) to ``threads`` or the default; returns it."""
    import torch

    wanted = default_threads() if threads is None else threads
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

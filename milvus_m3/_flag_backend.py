"""The FlagEmbedding / torch backend of ``M3Embedder``: BGE-M3 loaded by FlagEmbedding, run by our loop.

The checkpoint is loaded by FlagEmbedding's own code (``BGEM3FlagModel``), so what runs is the model
FlagEmbedding would run. Encoding does not go through ``BGEM3FlagModel.encode``: it tokenizes once
without truncation (a long text is never cut silently), sorts by length, pads per batch and runs the
loaded inference module under ``torch.inference_mode`` on a model moved to its device once; sparse
weights are reduced with numpy. The outputs equal FlagEmbedding's (the tests check it).

Private. All FlagEmbedding contact is in ``FlagBackend``; torch and FlagEmbedding are imported inside
functions, so importing this module stays light too. ``load_flag_backend`` is what the factory in
``_backend`` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._backend import BackendOptions
from ._text import check_texts, utf8_error
from .checkpoint import check_model_dir, resolve_model_dir
from .errors import ConfigError, InputError, MissingDependencyError, ModelLoadError
from .types import SparseVector

_FloatArray = npt.NDArray[np.float32]
_IntArray = npt.NDArray[np.int64]


def load_flag_backend(options: BackendOptions) -> FlagBackend:
    """Resolve the device, the precision and the checkpoint directory (in that order), check the
    checkpoint's files, then load it with FlagEmbedding."""
    device = _resolve_device(options.device)
    precision = _resolve_precision(options.precision, device)
    model_dir = resolve_model_dir(options.model_name_or_path, options.cache_dir, options.local_files_only)
    colbert_dim = check_model_dir(model_dir)
    return FlagBackend(model_dir, device=device, precision=precision, colbert_dim=colbert_dim)


class FlagBackend:
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
        self.model_dir = model_dir
        self.device = device
        self.precision = precision

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
            check_texts(texts, allow_empty=True, row_label="text at row {i}")  # names the bad row
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
            _raise_if_not_utf8(text)
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
                    for i, vec in zip(
                        idx.tolist(), self._sparse_rows(batch_ids, weights, mask), strict=False
                    ):
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
            dict(zip(token_ids[bounds[r] : bounds[r + 1]], values[bounds[r] : bounds[r + 1]], strict=False))
            for r in range(rows_n)
        ]


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
# Batching


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
# Device and precision


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

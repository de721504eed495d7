"""The model behind ``CrossEncoderReranker``: an XLM-R sequence classifier (``BAAI/bge-reranker-v2-m3``).

For the XLM-R architecture ``embedder.xlmr`` describes (bge-reranker-v2-m3's), the encoder is built in plain
torch from ``model.safetensors`` and the classification head is transformers'
``XLMRobertaClassificationHead`` in inference: the ``<s>`` row, ``dense``, ``tanh``, ``out_proj``.
Anything else (another architecture, ``pytorch_model.bin`` weights) loads with transformers'
``AutoModelForSequenceClassification`` (which reads ``.bin`` files with ``weights_only``). The
checkpoint is found and checked by ``checkpoint`` first; the tokenizer is the checkpoint's
``tokenizer.json`` read by the Rust ``tokenizers`` package (``embedder.transformers_backend.load_tokenizer``).

Private; imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..embedder.checkpoint import check_reranker_dir, resolve_model_dir
from ..embedder.loop import TokenizerInfo, special_token_names
from ..embedder.torch_common import quantize_int8, resolve_device, resolve_precision, set_threads, torch_dtype
from ..embedder.transformers_backend import load_tokenizer
from ..embedder.xlmr import XLMREncoder, fill_encoder, read_state, supported
from ..errors import ModelLoadError

_IntArray = npt.NDArray[np.int64]
_IGNORED = ("roberta.pooler.", "roberta.embeddings.position_ids")


class ClassificationHead(nn.Module):
    """transformers' ``XLMRobertaClassificationHead`` without dropout (inference)."""

    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out_proj(torch.tanh(self.dense(hidden_states[:, 0])))
        return out


class CrossEncoderModel:
    """A loaded cross-encoder: its tokenizer, special ids, limits and a ``logits`` forward pass."""

    def __init__(
        self,
        model: str,
        *,
        device: str | None,
        precision: str,
        cache_dir: str | None,
        local_files_only: bool | None,
        threads: int | None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model_dir = resolve_model_dir(model, cache_dir, local_files_only)
        config = check_reranker_dir(self.model_dir)
        set_threads(threads)
        self.tok = TokenizerInfo(load_tokenizer(self.model_dir), self.model_dir, config)
        names = special_token_names(self.model_dir)
        cls_id = self.tok.tokenizer.token_to_id(names["cls"])
        eos_id = self.tok.tokenizer.token_to_id(names["eos"])
        if cls_id is None or eos_id is None:
            raise ModelLoadError(
                f"the tokenizer in {self.model_dir} lacks {names['cls']!r} or {names['eos']!r}"
            )
        self.cls_id, self.eos_id, self.pad_id = int(cls_id), int(eos_id), self.tok.pad_id
        self.max_length = self.tok.max_length
        dtype = torch_dtype(self.precision)
        module = _load_torch(self.model_dir, config, dtype)
        self.kind = "torch" if module is not None else "transformers"
        if module is None:
            module = _load_auto(self.model_dir, dtype)
        if self.precision == "int8":
            module = quantize_int8(module)
        self._module: Any = module.to(self.device).eval()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tok.token_ids(texts, special_tokens=False)

    def logits(self, rows: list[list[int]]) -> list[float]:
        """One padded batch of pair token ids (longest first) -> one raw score per row."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        mask = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
        input_ids = torch.from_numpy(ids).to(self.device)
        attention = torch.from_numpy(mask).to(self.device)
        with torch.inference_mode():
            if self.kind == "torch":
                out = self._module["head"](self._module["encoder"](input_ids, attention))
            else:
                out = self._module(input_ids=input_ids, attention_mask=attention, return_dict=True).logits
        scores: list[float] = out.view(-1).float().cpu().numpy().tolist()
        return scores

    def after_oom(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _load_torch(model_dir: Path, config: dict[str, Any], dtype: Any) -> Any | None:
    """Encoder + head in plain torch, or None for a checkpoint ``_xlmr`` does not describe."""
    if not supported(config) or config.get("problem_type") not in (
        None,
        "regression",
        "single_label_classification",
    ):
        return None
    state = read_state(model_dir)
    if state is None:
        return None
    encoder_state = {
        k.removeprefix("roberta."): v
        for k, v in state.items()
        if k.startswith("roberta.") and not k.startswith(_IGNORED)
    }
    head_state = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
    encoder = XLMREncoder(config)
    fill_encoder(encoder, encoder_state, model_dir)
    hidden = int(config["hidden_size"])
    head = ClassificationHead(hidden, 1)
    try:
        head.load_state_dict(head_state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"the classifier head in {model_dir} does not fit a one-label XLM-R classifier of hidden size "
            f"{hidden} ({exc}); re-download the checkpoint"
        ) from exc
    return nn.ModuleDict({"encoder": encoder, "head": head}).to(dtype)


def _load_auto(model_dir: Path, dtype: Any) -> Any:
    try:
        import transformers

        auto: Any = transformers.AutoModelForSequenceClassification  # untyped for mypy
        return auto.from_pretrained(str(model_dir), dtype=dtype, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not load the classifier in {model_dir} ({type(exc).__name__}: {exc}); "
            "check that it is a complete cross-encoder checkpoint"
        ) from exc

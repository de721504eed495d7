"""The default backend of ``M3Embedder``: BGE-M3 loaded without FlagEmbedding (and, for BGE-M3's own
architecture, without transformers' model classes).

What FlagEmbedding's ``BGEM3FlagModel`` does inside, with nothing else imported (``import FlagEmbedding``
alone costs seconds: its package pulls in its fine-tuning and evaluation code): the encoder is BGE-M3's
XLM-RoBERTa, built by ``_xlmr`` in plain torch from ``model.safetensors`` (transformers' ``AutoModel``
for any other architecture or weight layout), the two heads are ``torch.nn.Linear`` layers filled from
``colbert_linear.pt`` and ``sparse_linear.pt`` with ``torch.load(weights_only=True)``
(``checkpoint.check_model_dir`` refuses a checkpoint without them), and the tokenizer is the checkpoint's
``tokenizer.json`` read by the Rust ``tokenizers`` package directly (transformers' tokenizer classes are
used only for a checkpoint that ships ``sentencepiece.bpe.model`` alone). The forward pass is
FlagEmbedding's: dense = the normalised [CLS] row, sparse = relu(sparse head) per token, ColBERT = the
normalised ColBERT head over the tokens after [CLS], padding zeroed. The outputs equal
``BGEM3FlagModel.encode`` (the tests check it).

``precision="int8"`` quantises the encoder's and the heads' ``Linear`` layers dynamically on CPU (torch's
``quantize_dynamic``): int8 weights with one scale per output channel, activations quantised per batch.
Per-channel scales, not torch's per-tensor default: on SciFact with the stand-in encoders per-tensor
moved dense nDCG@10 by -0.018, per-channel by +0.004 (benchmarks/results/int8_scifact.txt).

Private; torch, transformers and tokenizers are imported inside functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .backend import BackendOptions
from .checkpoint import check_model_dir, resolve_model_dir
from .torch_loop import (
    Forward,
    TokenizerInfo,
    TorchBackend,
    resolve_device,
    resolve_precision,
    set_threads,
    torch_dtype,
)

_MISTRAL_REGEX_NOTE = "with an incorrect regex pattern"


def load_hf_backend(options: BackendOptions) -> HFBackend:
    """Resolve the device, the precision and the checkpoint directory (in that order), check the
    checkpoint's files, then load it."""
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    model_dir = resolve_model_dir(options.model_name_or_path, options.cache_dir, options.local_files_only)
    check_model_dir(model_dir)
    set_threads(options.threads)
    return HFBackend(model_dir, device=device, precision=precision, max_batch_tokens=options.max_batch_tokens)


class HFBackend(TorchBackend):
    """BGE-M3 as ``AutoModel`` + two ``Linear`` heads, run by ``TorchBackend``'s loop."""

    def __init__(self, model_dir: Path, *, device: str, precision: str, max_batch_tokens: int | None) -> None:
        import torch

        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        tok = TokenizerInfo(load_tokenizer(model_dir), model_dir, config)
        from .xlmr import load_encoder

        dtype = torch_dtype(precision)
        encoder = load_encoder(model_dir, config, dtype)
        self.encoder_kind = "torch" if encoder is not None else "transformers"
        if encoder is None:
            encoder = _auto_model(model_dir, dtype)
        hidden = int(config["hidden_size"])
        colbert_linear = _head(model_dir / "colbert_linear.pt", dtype)
        sparse_linear = _head(model_dir / "sparse_linear.pt", dtype)
        modules = torch.nn.ModuleDict(
            {"encoder": encoder, "colbert_linear": colbert_linear, "sparse_linear": sparse_linear}
        ).eval()
        if precision == "int8":
            modules = quantize_int8(modules)
        modules.to(device)
        self._modules: Any = modules
        super().__init__(
            tok,
            model_dir=model_dir,
            device=device,
            precision=precision,
            dense_dim=hidden,
            colbert_dim=int(colbert_linear.out_features),
            vocab_size=int(config["vocab_size"]),
            max_batch_tokens=max_batch_tokens,
        )

    def forward(self, input_ids: Any, attention_mask: Any, *, colbert: bool) -> Forward:
        torch = self._torch
        m = self._modules
        if self.encoder_kind == "torch":
            hidden = m["encoder"](input_ids, attention_mask)
        else:
            out = m["encoder"](input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            hidden = out.last_hidden_state
        dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
        weights = torch.relu(m["sparse_linear"](hidden)).squeeze(-1)
        vecs = None
        if colbert:
            vecs = m["colbert_linear"](hidden[:, 1:]) * attention_mask[:, 1:][:, :, None].to(hidden.dtype)
            vecs = torch.nn.functional.normalize(vecs, dim=-1)
        return dense, weights, vecs


def _auto_model(model_dir: Path, dtype: Any) -> Any:
    """An encoder ``_xlmr`` does not describe, loaded by transformers."""
    try:
        import transformers

        auto: Any = transformers.AutoModel  # untyped for mypy
        return auto.from_pretrained(str(model_dir), dtype=dtype, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not load the model in {model_dir} ({type(exc).__name__}: {exc}); "
            "check that it is a complete BGE-M3 checkpoint"
        ) from exc


def _head(file: Path, dtype: Any) -> Any:
    """A ``Linear`` layer filled from a plain tensor state dict (already checked by check_model_dir)."""
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
    out_dim, in_dim = (int(d) for d in state["weight"].shape)
    head = torch.nn.Linear(in_dim, out_dim, dtype=dtype)
    head.load_state_dict(state)
    return head


def load_tokenizer(model_dir: Path) -> Any:
    """The checkpoint's Rust tokenizer: tokenizer.json directly, else converted by transformers."""
    if (model_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:
            raise ModelLoadError(
                f"tokenizer.json in {model_dir} could not be read ({type(exc).__name__}: {exc}); "
                "re-download the checkpoint"
            ) from exc
    import transformers

    auto: Any = transformers.AutoTokenizer  # untyped for mypy
    with quiet_mistral_regex_note():
        # trust_remote_code=False: transformers refuses custom code instead of asking on stdin.
        hf = auto.from_pretrained(str(model_dir), use_fast=True, trust_remote_code=False)
    if not getattr(hf, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer in {model_dir} did not load as a fast tokenizer; add tokenizer.json"
        )
    return hf.backend_tokenizer


class _DropMistralRegexNote(logging.Filter):
    """transformers 4.57.3+ warns that a tokenizer saved by 4.57.3+ has Mistral's 'incorrect regex
    pattern' whenever the checkpoint's config says transformers_version > 4.57.2, whatever the model:
    wrong for an XLM-R tokenizer, whose pre-tokenizer is Metaspace. Only that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _MISTRAL_REGEX_NOTE not in record.getMessage()


@contextlib.contextmanager
def quiet_mistral_regex_note() -> Iterator[None]:
    """While loading an XLM-R tokenizer through transformers, drop its known-wrong Mistral regex note."""
    log = logging.getLogger("transformers.tokenization_utils_base")
    note = _DropMistralRegexNote()
    log.addFilter(note)
    try:
        yield
    finally:
        log.removeFilter(note)


def is_ffn_output(name: str) -> bool:
    """Whether the ``Linear`` named ``name`` is a transformer layer's FFN output (``layer.N.output.dense``,
    not ``attention.output.dense``): the layer whose inputs (GELU outputs) carry the outliers that
    per-tensor activation scales handle worst."""
    return name.endswith("output.dense") and not name.endswith("attention.output.dense")


def quantize_int8(module: Any, *, ffn_output_fp32: bool = False) -> Any:
    """``module`` with its ``Linear`` layers dynamically quantised to int8 (CPU): int8 weights with one
    scale per output channel, activations quantised per batch. ``ffn_output_fp32`` keeps each layer's FFN
    output projection in fp32 (``is_ffn_output``). Measured in benchmarks/bench_int8_scifact.py."""
    import torch

    with warnings.catch_warnings():
        # torch 2.10+ deprecates torch.ao.quantization (moving to torchao) and quantised tensors; the
        # kernels are there and measured (benchmarks/bench_int8.py). Only those notes are silenced.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*pt2e quantization.*")
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_channel.*")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        spec = {
            name: qconfig
            for name, layer in module.named_modules()
            if isinstance(layer, torch.nn.Linear) and not (ffn_output_fp32 and is_ffn_output(name))
        }
        quantize: Any = torch.ao.quantization.quantize_dynamic  # untyped for mypy
        return quantize(module, spec, dtype=torch.qint8)

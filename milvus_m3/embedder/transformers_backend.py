"""The default backend of ``M3Embedder``: BGE-M3 loaded without FlagEmbedding (and, for BGE-M3's own
architecture, without transformers' model classes).

What FlagEmbedding's ``BGEM3FlagModel`` does inside, with nothing else imported (``import FlagEmbedding``
alone costs seconds: its package pulls in its fine-tuning and evaluation code): the encoder is BGE-M3's
XLM-RoBERTa, built by ``xlmr`` in plain torch from ``model.safetensors`` (transformers' ``AutoModel``
for any other architecture or weight layout), the two heads are ``torch.nn.Linear`` layers filled from
``colbert_linear.pt`` and ``sparse_linear.pt`` with ``torch.load(weights_only=True)``
(``checkpoint.check_model_dir`` refuses a checkpoint without them), and the tokenizer is the checkpoint's
``tokenizer.json`` read by the Rust ``tokenizers`` package directly (transformers' tokenizer classes are
used only for a checkpoint that ships ``sentencepiece.bpe.model`` alone). ``HFBackend.forward`` (the
seam of ``loop.EncodeLoop``: numpy ids in, numpy arrays out) is FlagEmbedding's forward pass: dense =
the normalised [CLS] row, sparse = relu(sparse head) per token, ColBERT = the normalised ColBERT head
over the tokens after [CLS], padding zeroed, all in the model's dtype under ``torch.inference_mode``.
The outputs equal ``BGEM3FlagModel.encode`` (the tests check it). ``precision="int8"`` quantises the
encoder's and the heads' ``Linear`` layers (``torch_common.quantize_int8``).

torch, transformers and tokenizers are imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .backend import BackendOptions
from .checkpoint import check_model_dir, resolve_model_dir
from .loop import EncodeLoop, ForwardOutput, IntArray, TokenizerInfo
from .torch_common import (
    is_oom,
    quantize_int8,
    release_cached_memory,
    resolve_device,
    resolve_precision,
    set_threads,
    to_device,
    to_numpy,
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


class HFBackend(EncodeLoop):
    """BGE-M3 as the plain-torch encoder (or ``AutoModel``) + two ``Linear`` heads, run by ``EncodeLoop``."""

    colbert_is_unit = True  # normalised on the device in forward, as FlagEmbedding does

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

    def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
        import torch

        m = self._modules
        with torch.inference_mode():
            ids = to_device(input_ids, self.device)
            mask = to_device(attention_mask, self.device)
            if self.encoder_kind == "torch":
                hidden = m["encoder"](ids, mask)
            else:
                hidden = m["encoder"](input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
            dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
            weights = torch.relu(m["sparse_linear"](hidden)).squeeze(-1)
            vecs = None
            if colbert:
                vecs = m["colbert_linear"](hidden[:, 1:]) * mask[:, 1:][:, :, None].to(hidden.dtype)
                vecs = torch.nn.functional.normalize(vecs, dim=-1)
            return ForwardOutput(to_numpy(dense), to_numpy(weights), None if vecs is None else to_numpy(vecs))

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return is_oom(exc)

    def after_out_of_memory(self) -> None:
        release_cached_memory(self.device)


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

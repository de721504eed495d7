"""The FlagEmbedding backend of ``M3Embedder`` (``backend="flagembedding"``): BGE-M3 as FlagEmbedding loads it.

The checkpoint is loaded by FlagEmbedding's own code (``BGEM3FlagModel``), so what runs is the model
FlagEmbedding would run; ``FlagBackend.forward`` (the seam of ``loop.EncodeLoop``: numpy ids in, numpy
arrays out) calls the loaded inference module under ``torch.inference_mode``, and the loop tokenizes once
without truncation, sorts by length, pads per batch and reduces the outputs. The default backend
(``transformers_backend``) loads the same model without importing FlagEmbedding (seconds faster to
start); this one stays as a choice and as a second path the tests compare.

All FlagEmbedding contact is in ``FlagBackend``; torch and FlagEmbedding are imported inside
functions, so importing this module stays light. ``load_flag_backend`` is its entry in ``backends``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError, ModelLoadError
from .backend import BackendOptions
from .checkpoint import check_model_dir, resolve_model_dir
from .loop import EncodeLoop, ForwardOutput, IntArray, TokenizerInfo
from .torch_common import (
    is_oom,
    release_cached_memory,
    resolve_device,
    resolve_precision,
    set_threads,
    to_device,
    to_numpy,
)
from .transformers_backend import quiet_mistral_regex_note


def load_flag_backend(options: BackendOptions) -> FlagBackend:
    """Resolve the device, the precision and the checkpoint directory (in that order), check the
    checkpoint's files, then load it with FlagEmbedding."""
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    if precision == "int8":
        raise ConfigError("precision='int8' needs backend='transformers' (the default)")
    model_dir = resolve_model_dir(options.model_name_or_path, options.cache_dir, options.local_files_only)
    colbert_dim = check_model_dir(model_dir)
    set_threads(options.threads)
    return FlagBackend(
        model_dir,
        device=device,
        precision=precision,
        colbert_dim=colbert_dim,
        max_batch_tokens=options.max_batch_tokens,
    )


class FlagBackend(EncodeLoop):
    """BGE-M3 loaded by ``FlagEmbedding.BGEM3FlagModel``, run by ``EncodeLoop``."""

    colbert_is_unit = True  # normalised on the device in forward, as FlagEmbedding does

    def __init__(
        self, model_dir: Path, *, device: str, precision: str, colbert_dim: int, max_batch_tokens: int | None
    ) -> None:
        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as exc:
            raise MissingDependencyError(
                f"FlagEmbedding is needed for backend='flagembedding' ({exc}); "
                "pip install 'milvus-m3[flagembedding]' (FlagEmbedding 1.4 needs transformers<5), "
                "or use the default backend='transformers'"
            ) from exc

        try:
            with quiet_mistral_regex_note():
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

        # Keep the wrapper alive: its __del__ moves the model back to the CPU.
        self._flag: Any = flag
        module: Any = flag.model  # EncoderOnlyEmbedderM3ModelForInference
        module.to(device)
        module.eval()
        self._module = module
        tokenizer: Any = flag.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"the tokenizer in {model_dir} did not load as a fast tokenizer; add tokenizer.json"
            )
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        super().__init__(
            TokenizerInfo(tokenizer.backend_tokenizer, model_dir, config),
            model_dir=model_dir,
            device=device,
            precision=precision,
            dense_dim=int(module.config.hidden_size),
            colbert_dim=int(module.colbert_linear.out_features),
            vocab_size=int(module.config.vocab_size),
            max_batch_tokens=max_batch_tokens,
        )

    def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
        import torch

        with torch.inference_mode():
            out = self._module(
                {
                    "input_ids": to_device(input_ids, self.device),
                    "attention_mask": to_device(attention_mask, self.device),
                },
                return_dense=True,
                return_sparse=True,
                return_colbert_vecs=colbert,
            )
            vecs = out.get("colbert_vecs") if colbert else None
            return ForwardOutput(
                to_numpy(out["dense_vecs"]),
                to_numpy(out["sparse_vecs"].squeeze(-1)),
                None if vecs is None else to_numpy(vecs),
            )

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return is_oom(exc)

    def after_out_of_memory(self) -> None:
        release_cached_memory(self.device)

"""Build BGE-M3-shaped checkpoints with random weights, for tests and benchmarks without a model hub.

``build_checkpoint(path)`` writes what ``BAAI/bge-m3`` ships: an ``XLMRobertaModel`` (safetensors), the
``colbert_linear.pt`` and ``sparse_linear.pt`` heads (plain tensor state dicts, loadable with
``torch.load(weights_only=True)``) and an XLM-R fast tokenizer with the real 250,002-piece vocabulary.
The default is a tiny model (2 layers, hidden 32) that loads in about a second; ``full_size=True`` on the
command line (or the BGE-M3 numbers as arguments) gives the real architecture, whose random weights cost
exactly what the real model costs to run.

The tiny model uses a large init std (0.6): at BERT's 0.02 every [CLS] vector is the same to cosine
0.99999, so dense rankings would be noise. The sparse head's bias is set so that about half of the
tokens of a few sample sentences get a positive weight.

    python -m milvus_m3.testing OUT_DIR [--full-size] [--seed N] [--reranker]

``build_reranker_checkpoint(path)`` writes what ``BAAI/bge-reranker-v2-m3`` ships: an
``XLMRobertaForSequenceClassification`` with one label (safetensors) and the same tokenizer; tiny by
default, the real architecture (XLM-R large, ``FULL_SIZE``) on request.

This module imports torch and transformers only inside ``build_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "FULL_SIZE",
    "TOKENIZER_ENV",
    "build_checkpoint",
    "build_reranker_checkpoint",
    "find_tokenizer_file",
    "main",
]

TOKENIZER_ENV = "MILVUS_M3_TOKENIZER_FILE"
"""Environment variable naming the XLM-R ``tokenizer.json`` used when ``tokenizer_file`` is not given."""

_TOKENIZER_RELPATH = Path("shared") / "fixtures" / "xlmr-tokenizer.json"

FULL_SIZE: dict[str, Any] = {
    "num_layers": 24,
    "hidden_size": 1024,
    "num_heads": 16,
    "intermediate_size": 4096,
    "initializer_range": 0.02,
}
"""The BGE-M3 (XLM-RoBERTa large) architecture, as keyword arguments for ``build_checkpoint``."""

# BGE-M3's config values that do not depend on size.
_VOCAB_SIZE = 250002
_PAD_ID = 1
_BOS_ID = 0
_EOS_ID = 2
_MAX_TOKENS = 8192

_SAMPLE_TEXTS = (
    "Dense retrieval maps queries and documents into one vector space.",
    "Learned sparse weights keep the exactness of lexical matching.",
    "Milvus stores dense and sparse vectors side by side.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "Le modèle encode des textes dans plus de cent langues.",
    "検索システムは文書をベクトルに変換します。",
)


def find_tokenizer_file(start: Sequence[Path] | None = None) -> Path:
    """Where the XLM-R ``tokenizer.json`` is: ``$MILVUS_M3_TOKENIZER_FILE``, else
    ``shared/fixtures/xlmr-tokenizer.json`` in this file's or the working directory's ancestors."""
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"${TOKENIZER_ENV} is {env!r}, which is not a file; point it at an XLM-R tokenizer.json"
            )
        return path
    roots = list(start) if start is not None else [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for root in roots:
        for folder in (root, *root.parents):
            candidate = folder / _TOKENIZER_RELPATH
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"no XLM-R tokenizer file found ({_TOKENIZER_RELPATH} above {', '.join(map(str, roots))}); "
        f"pass tokenizer_file= or set ${TOKENIZER_ENV} to a tokenizer.json with the XLM-R vocabulary"
    )


def build_checkpoint(
    path: str | os.PathLike[str],
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    num_heads: int = 2,
    intermediate_size: int = 64,
    initializer_range: float = 0.6,
    seed: int = 0,
    colbert_dim: int | None = None,
    max_position_embeddings: int = 8194,
    dtype: Any = "float32",
    write_heads: bool = True,
    tokenizer_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a BGE-M3-shaped checkpoint with random weights into ``path`` (created if needed).

    ``dtype`` is a torch dtype or its name ("float32", "float16", "bfloat16"). ``write_heads=False``
    leaves out ``colbert_linear.pt`` and ``sparse_linear.pt`` (to test that loading refuses it).
    Returns the directory.
    """
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    if max_position_embeddings < 4:
        raise ConfigError(f"max_position_embeddings {max_position_embeddings} is too small; use at least 4")
    if colbert_dim is not None and colbert_dim < 1:
        raise ConfigError(f"colbert_dim {colbert_dim} must be positive, or None for hidden_size")
    tok_path = Path(tokenizer_file) if tokenizer_file is not None else find_tokenizer_file()
    if not tok_path.is_file():
        raise ConfigError(f"tokenizer_file {str(tok_path)!r} is not a file")

    import torch
    import transformers

    hf: Any = transformers  # untyped for mypy

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ConfigError(
            f"dtype {dtype!r} is not a floating torch dtype; use 'float32', 'float16' or 'bfloat16'"
        )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    max_tokens = min(_MAX_TOKENS, max_position_embeddings - _PAD_ID - 1)

    tokenizer = hf.XLMRobertaTokenizerFast(
        tokenizer_file=str(tok_path),
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_tokens,
    )
    if len(tokenizer) != _VOCAB_SIZE or tokenizer.pad_token_id != _PAD_ID:
        raise ConfigError(
            f"{tok_path} has {len(tokenizer)} tokens and pad id {tokenizer.pad_token_id}; "
            f"a BGE-M3 checkpoint needs the XLM-R vocabulary ({_VOCAB_SIZE} tokens, pad id {_PAD_ID})"
        )

    config = hf.XLMRobertaConfig(
        vocab_size=_VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        initializer_range=initializer_range,
        layer_norm_eps=1e-5,
        pad_token_id=_PAD_ID,
        bos_token_id=_BOS_ID,
        eos_token_id=_EOS_ID,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        position_embedding_type="absolute",
        architectures=["XLMRobertaModel"],
    )
    torch.manual_seed(seed)
    model = hf.XLMRobertaModel(config).eval()
    colbert = torch.nn.Linear(hidden_size, colbert_dim or hidden_size)
    sparse = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        sparse.weight.normal_(0.0, hidden_size**-0.5)
        # Centre the sparse head on sample text so that about half of the tokens get a weight > 0.
        enc = tokenizer(list(_SAMPLE_TEXTS), padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        raw = (hidden @ sparse.weight[0])[enc["attention_mask"].bool()]
        sparse.bias.fill_(-float(raw.median()))

    model.to(torch_dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if write_heads:
        for name, head in (("colbert_linear.pt", colbert), ("sparse_linear.pt", sparse)):
            state = {k: v.detach().to(torch_dtype).clone().contiguous() for k, v in head.state_dict().items()}
            torch.save(state, out / name)
    (out / "milvus_m3_testing.json").write_text(
        json.dumps(
            {
                "note": "random weights from milvus_m3.testing.build_checkpoint; not a trained model",
                "seed": seed,
                "initializer_range": initializer_range,
                "colbert_dim": colbert_dim or hidden_size,
            },
            indent=2,
        )
        + "\n"
    )
    return out


def build_reranker_checkpoint(
    path: str | os.PathLike[str],
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    num_heads: int = 2,
    intermediate_size: int = 64,
    initializer_range: float = 0.6,
    seed: int = 0,
    max_position_embeddings: int = 8194,
    tokenizer_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a bge-reranker-v2-m3-shaped checkpoint (an XLM-R sequence classifier with one label,
    random weights, fp32 safetensors, the XLM-R tokenizer) into ``path``. Returns the directory.

    The classifier head is drawn at std ``hidden_size ** -0.5`` so that its tanh layer does not
    saturate: the tiny model's scores then spread over a range instead of a few values."""
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    tok_path = Path(tokenizer_file) if tokenizer_file is not None else find_tokenizer_file()
    if not tok_path.is_file():
        raise ConfigError(f"tokenizer_file {str(tok_path)!r} is not a file")

    import torch
    import transformers

    hf: Any = transformers  # untyped for mypy
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    max_tokens = min(_MAX_TOKENS, max_position_embeddings - _PAD_ID - 1)
    tokenizer = hf.XLMRobertaTokenizerFast(
        tokenizer_file=str(tok_path),
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_tokens,
    )
    config = hf.XLMRobertaConfig(
        vocab_size=_VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        initializer_range=initializer_range,
        layer_norm_eps=1e-5,
        pad_token_id=_PAD_ID,
        bos_token_id=_BOS_ID,
        eos_token_id=_EOS_ID,
        hidden_act="gelu",
        position_embedding_type="absolute",
        num_labels=1,
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(seed)
    model = hf.XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        for layer in (model.classifier.dense, model.classifier.out_proj):
            layer.weight.normal_(0.0, hidden_size**-0.5)
            layer.bias.normal_(0.0, 0.1)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "milvus_m3_testing.json").write_text(
        json.dumps(
            {
                "note": "random weights from milvus_m3.testing.build_reranker_checkpoint; not a trained model",
                "seed": seed,
                "initializer_range": initializer_range,
            },
            indent=2,
        )
        + "\n"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m milvus_m3.testing",
        description="Write a BGE-M3-shaped checkpoint with random weights (tiny by default).",
    )
    parser.add_argument("out_dir", help="directory to write the checkpoint into")
    parser.add_argument(
        "--full-size", action="store_true", help="the real BGE-M3 architecture (24 layers, hidden 1024)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reranker", action="store_true", help="a cross-encoder (bge-reranker-v2-m3's shape) instead"
    )
    parser.add_argument(
        "--tokenizer-file", default=None, help=f"XLM-R tokenizer.json (default: ${TOKENIZER_ENV})"
    )
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = dict(FULL_SIZE) if args.full_size else {}
    try:
        build = build_reranker_checkpoint if args.reranker else build_checkpoint
        out = build(args.out_dir, seed=args.seed, tokenizer_file=args.tokenizer_file, **kwargs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The XLM-RoBERTa encoder of BGE-M3 in plain torch, loaded from the checkpoint's weights.

The same layers, names and arithmetic as transformers' ``XLMRobertaModel`` in inference (embeddings
with RoBERTa's position ids, post-LayerNorm blocks of scaled-dot-product attention and an exact-GELU
feed-forward), so the checkpoint's state dict loads into it key for key. Why not transformers' own
class: importing ``transformers.models.xlm_roberta`` costs 1.5-3 s before any work (its generation code
pulls in torch._dynamo and scikit-learn), which is most of a cold ``milvus-m3 search``; this module
needs torch and safetensors only. The tests check its hidden states against ``XLMRobertaModel`` and
the embedder's outputs against FlagEmbedding's.

``load_encoder`` gives None for a checkpoint this module does not describe (another architecture,
activation or position scheme, weights in an unknown layout); the backend then loads it with
transformers' ``AutoModel``.

Imports torch (``transformers_backend`` imports this module inside its loader); safetensors is imported
inside ``read_state``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from ..errors import ModelLoadError
from .checkpoint import shard_files

_IGNORED_KEYS = ("pooler.", "embeddings.position_ids")  # the pooler is not used by BGE-M3


def supported(config: dict[str, Any]) -> bool:
    """True when ``config`` is an encoder this module computes exactly as transformers does."""
    return (
        config.get("model_type") == "xlm-roberta"
        and config.get("hidden_act", "gelu") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
        and int(config["hidden_size"]) % int(config["num_attention_heads"]) == 0
    )


def load_encoder(model_dir: Path, config: dict[str, Any], dtype: Any) -> Any | None:
    """The encoder of ``model_dir`` with its weights in ``dtype`` on the CPU, or None (see above)."""
    if not supported(config):
        return None
    state = read_state(model_dir)
    if state is None:
        return None
    prefix = "roberta." if any(k.startswith("roberta.") for k in state) else ""
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_KEYS)}
    encoder = XLMREncoder(config)  # parameters allocated, not initialised: the checkpoint fills them
    fill_encoder(encoder, state, model_dir)
    return encoder.to(dtype).eval()


def fill_encoder(encoder: XLMREncoder, state: dict[str, Any], model_dir: Path) -> None:
    """Load ``state`` into ``encoder``; weights that do not fit its config.json (a missing or extra
    tensor, or a shape another ``hidden_size`` gives) are a ModelLoadError naming the folder."""
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # size mismatches
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise ModelLoadError(
            f"the weights in {model_dir} do not fit its config.json ({first[:300]}); the config and the "
            "weights come from different models: re-download the checkpoint"
        ) from None
    if missing or unexpected:
        raise ModelLoadError(
            f"the weights in {model_dir} do not fit its config.json (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}); re-download the checkpoint"
        )


def read_state(model_dir: Path) -> dict[str, Any] | None:
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = shard_files(index)
    else:
        return None  # pytorch_model.bin checkpoints go through transformers
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    try:
        for file in files:
            state.update(load_file(str(file), device="cpu"))
    except Exception as exc:
        raise ModelLoadError(
            f"the weights in {model_dir} could not be read ({type(exc).__name__}: {exc}); "
            "re-download the checkpoint"
        ) from exc
    return state


class _EmptyLinear(nn.Linear):
    def reset_parameters(self) -> None:
        """Nothing: the weights come from the checkpoint (random init of 0.5 B parameters costs seconds)."""


class _EmptyEmbedding(nn.Embedding):
    def reset_parameters(self) -> None:
        """Nothing: the weights come from the checkpoint."""


def _linear(inputs: int, outputs: int) -> nn.Linear:
    """An ``nn.Linear`` (the exact class, as quantisation and state dicts expect) left uninitialised."""
    layer: nn.Linear = _EmptyLinear(inputs, outputs)
    layer.__class__ = nn.Linear
    return layer


def _embedding(rows: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    table: nn.Embedding = _EmptyEmbedding(rows, dim, padding_idx=padding_idx)
    table.__class__ = nn.Embedding
    return table


class Embeddings(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(c["hidden_size"])
        self.padding_idx = int(c.get("pad_token_id", 1))
        self.word_embeddings = _embedding(int(c["vocab_size"]), hidden, self.padding_idx)
        self.position_embeddings = _embedding(int(c["max_position_embeddings"]), hidden, self.padding_idx)
        self.token_type_embeddings = _embedding(int(c.get("type_vocab_size", 1)), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=float(c.get("layer_norm_eps", 1e-5)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # RoBERTa's position ids: count the non-pad tokens, starting after the pad index.
        not_pad = input_ids.ne(self.padding_idx).int()
        positions = (torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad).long() + self.padding_idx
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        out: torch.Tensor = self.LayerNorm(x + self.position_embeddings(positions))
        return out


class SelfAttention(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(c["hidden_size"])
        self.heads = int(c["num_attention_heads"])
        self.query = _linear(hidden, hidden)
        self.key = _linear(hidden, hidden)
        self.value = _linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = (
            proj(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        out = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        merged: torch.Tensor = out.transpose(1, 2).reshape(b, t, h)
        return merged


class DenseNorm(nn.Module):  # transformers' *SelfOutput / *Output: dense, residual, LayerNorm
    def __init__(self, c: dict[str, Any], inputs: int) -> None:
        super().__init__()
        hidden = int(c["hidden_size"])
        self.dense = _linear(inputs, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=float(c.get("layer_norm_eps", 1e-5)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.LayerNorm(self.dense(x) + residual)
        return out


class Attention(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseNorm(c, int(c["hidden_size"]))


class Intermediate(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.dense = _linear(int(c["hidden_size"]), int(c["intermediate_size"]))


class Layer(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseNorm(c, int(c["intermediate_size"]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        out: torch.Tensor = self.output(functional.gelu(self.intermediate.dense(x)), x)
        return out


class Stack(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(int(c["num_hidden_layers"])))


class XLMREncoder(nn.Module):
    """``forward(input_ids, attention_mask)`` -> the last hidden state (batch, tokens, hidden)."""

    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Stack(c)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.embeddings(input_ids)
        # Keys that are padding get no attention; a batch without padding needs no mask.
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

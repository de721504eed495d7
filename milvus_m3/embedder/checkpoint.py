"""Finding and checking a BGE-M3 checkpoint: a local directory or a hub id in, a checked directory out.

``resolve_model_dir`` turns ``model_name_or_path`` into a local directory (``huggingface_hub``'s
``snapshot_download`` for a hub id; ``local_files_only`` defaults to ``$HF_HUB_OFFLINE``).
``check_model_dir`` refuses a checkpoint with missing or truncated files before FlagEmbedding sees it:
without ``sparse_linear.pt`` or ``colbert_linear.pt`` FlagEmbedding would silently run RANDOM heads.
Every ModelLoadError names the file and the directory.

huggingface_hub and torch (``torch.load(weights_only=True)`` for the two heads) are imported inside
the functions that need them: importing this module stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_DENSE_DIMS",
    "MODEL_ENV",
    "check_config",
    "check_model_dir",
    "check_reranker_dir",
    "dense_dim_from_config",
    "fingerprint_of",
    "model_fingerprint",
    "refuse_remote_code",
    "resolve_model_dir",
    "shard_files",
]

DEFAULT_MODEL = "BAAI/bge-m3"
MODEL_ENV = "MILVUS_M3_MODEL"
KNOWN_DENSE_DIMS = {"BAAI/bge-m3": 1024}
"""Dense dims of hub models, so a collection can be created with neither the model nor the network."""

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")
_HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "sentencepiece.bpe.model",
    "colbert_linear.pt",
    "sparse_linear.pt",
]
_REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")
"""The files whose ``auto_map`` would make transformers import Python code shipped in the checkpoint."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_model_dir(
    name: str, cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None
) -> Path:
    """The local directory for ``name``: itself when it is a directory, else a hub snapshot."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"model path {name!r} is a file; pass the checkpoint directory that holds it")
    if not _HUB_ID.match(name) or name.startswith(("/", ".", "~")):
        raise ModelLoadError(
            f"model directory {name!r} does not exist; pass an existing BGE-M3 checkpoint directory "
            f"or a hub id such as {DEFAULT_MODEL!r}"
        )
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(
            repo_id=name,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=local_files_only,
            allow_patterns=_HUB_PATTERNS,
        )
        resolved = Path(snapshot)
        if not any((resolved / f).exists() for f in _WEIGHT_FILES):
            # Checkpoints without safetensors weights ship pytorch_model.bin.
            resolved = Path(
                snapshot_download(
                    repo_id=name,
                    cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
                    local_files_only=local_files_only,
                    allow_patterns=[*_HUB_PATTERNS, "pytorch_model*.bin"],
                )
            )
    except Exception as exc:
        how = "from the local cache only (offline)" if local_files_only else "from the Hugging Face hub"
        raise ModelLoadError(
            f"could not get model {name!r} {how} ({type(exc).__name__}: {exc}); download {name} on a "
            f"connected machine (huggingface-cli download {name} --local-dir DIR) and pass its directory "
            f"as model_name_or_path, or set ${MODEL_ENV} to it"
        ) from exc
    return resolved


def check_model_dir(path: Path) -> int:
    """Refuse a checkpoint with missing or truncated files; return the ColBERT head's output dim."""
    where = f"in {path}"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"config.json is missing {where}; a BGE-M3 checkpoint needs its model config")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json {where} is unreadable ({exc})") from exc
    hidden = int(check_config(config, where)["hidden_size"])
    refuse_remote_code(path)

    weights = [f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise ModelLoadError(f"model weights are missing {where}: expected one of {', '.join(_WEIGHT_FILES)}")
    if weights[0] == "model.safetensors":
        _check_safetensors(path / "model.safetensors")
    elif weights[0].endswith(".index.json"):
        _check_shards(path / weights[0])

    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"tokenizer files are missing {where}: expected tokenizer.json (or sentencepiece.bpe.model)"
        )
    sparse_out = _check_head(path / "sparse_linear.pt", hidden, "sparse")
    if sparse_out != 1:
        raise ModelLoadError(f"sparse_linear.pt {where} has {sparse_out} outputs; BGE-M3's sparse head has 1")
    return _check_head(path / "colbert_linear.pt", hidden, "ColBERT")


def check_reranker_dir(path: Path) -> dict[str, Any]:
    """Refuse a cross-encoder checkpoint (an ``XLMRobertaForSequenceClassification`` such as
    ``BAAI/bge-reranker-v2-m3``) with missing or truncated files, or one that is not a one-label
    sequence classifier; return its config."""
    where = f"in {path}"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"config.json is missing {where}; a cross-encoder checkpoint needs its model config"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json {where} is unreadable ({exc})") from exc
    check_config(config, where)
    refuse_remote_code(path)
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ModelLoadError(
            f"config.json {where} names architectures {architectures}, not a sequence classifier; "
            "a cross-encoder reranker is an *ForSequenceClassification checkpoint (e.g. BAAI/bge-reranker-v2-m3)"
        )
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 1))
    if labels != 1:
        raise ModelLoadError(
            f"the classifier {where} has {labels} labels; a reranker gives one score (1 label)"
        )
    weights = [f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise ModelLoadError(f"model weights are missing {where}: expected one of {', '.join(_WEIGHT_FILES)}")
    if weights[0] == "model.safetensors":
        _check_safetensors(path / "model.safetensors")
    elif weights[0].endswith(".index.json"):
        _check_shards(path / weights[0])
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"tokenizer files are missing {where}: expected tokenizer.json (or sentencepiece.bpe.model)"
        )
    return dict(config)


def refuse_remote_code(path: Path) -> None:
    """Refuse a checkpoint whose ``config.json`` or ``tokenizer_config.json`` has an ``auto_map``: that key
    makes transformers import Python code from the folder (and ask on stdin whether to run it). milvus-m3
    never runs checkpoint code, so such a folder is refused before any loader sees it."""
    for name in _REMOTE_CODE_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{name} in {path} is unreadable ({exc}); re-download the checkpoint"
            ) from exc
        if isinstance(data, dict) and "auto_map" in data:
            raise ModelLoadError(
                f"{name} in {path} has an 'auto_map': the checkpoint asks to run its own Python code, which "
                "milvus-m3 never does; use a checkpoint without custom code (remove 'auto_map' only if the "
                "model is a plain XLM-RoBERTa)"
            )


def _check_head(file: Path, hidden: int, what: str) -> int:
    if not file.is_file():
        raise ModelLoadError(
            f"{file.name} is missing in {file.parent}; without it FlagEmbedding would silently use a RANDOM "
            f"{what} head. Use the complete BGE-M3 checkpoint (it ships colbert_linear.pt and sparse_linear.pt)"
        )
    import torch

    try:
        # weights_only: tensors only, no pickled code runs.
        state = torch.load(file, map_location="cpu", weights_only=True)
        weight, bias = state["weight"], state["bias"]
        out_dim, in_dim = (int(d) for d in weight.shape)
        ok = bias.shape == (out_dim,)
    except Exception as exc:
        raise ModelLoadError(
            f"{file.name} in {file.parent} is corrupt or not a plain tensor state dict "
            f"({type(exc).__name__}: {exc}); re-download the checkpoint"
        ) from exc
    if not ok or in_dim != hidden:
        raise ModelLoadError(
            f"{file.name} in {file.parent} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}, "
            f"which do not fit hidden size {hidden}; the head belongs to another model"
        )
    return out_dim


def _check_safetensors(file: Path) -> None:
    """Cheap integrity check: the header parses and the data it describes fits the file exactly."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header length {header_len} does not fit a file of {size} bytes")
            header = json.loads(fh.read(header_len))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
        if 8 + header_len + end != size:
            raise ValueError(f"tensors need {8 + header_len + end} bytes, the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(
            f"{file.name} in {file.parent} is corrupt or truncated ({exc}); re-download the checkpoint"
        ) from exc


def shard_files(index: Path) -> list[Path]:
    """The weight shards a ``*.index.json`` names, each a plain file name inside its folder: a name with
    a path in it (``../x``, ``/etc/x``, ``sub/x``) is refused, so no checkpoint reads weights from
    outside its own folder. The one place shard names are read (checks, loading, fingerprints)."""
    try:
        names = sorted({str(v) for v in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"{index.name} in {index.parent} is unreadable ({exc})") from exc
    for name in names:
        if not name or name != Path(name).name or name in (".", ".."):
            raise ModelLoadError(
                f"{index.name} in {index.parent} names the weight shard {name!r}, which is not a file name "
                "inside the checkpoint folder; a shard must sit beside its index (re-download the checkpoint)"
            )
    return [index.parent / name for name in names]


_CONFIG_BOUNDS = {
    "hidden_size": (1, 65_536),
    "num_attention_heads": (1, 1_024),
    "num_hidden_layers": (1, 1_024),
    "intermediate_size": (1, 1_048_576),
    "max_position_embeddings": (3, 1_048_576),
    "vocab_size": (1, 16_777_216),
}
"""What a sane XLM-RoBERTa config.json holds: a value outside these bounds is a tampered or broken file
(0 heads divide by zero, 10**12 positions exhaust memory), refused before any tensor is allocated."""


def check_config(config: Any, where: str) -> dict[str, Any]:
    """``config`` (config.json, parsed) when its sizes are ints within ``_CONFIG_BOUNDS`` and the hidden
    size splits evenly across the attention heads; a ModelLoadError naming the key otherwise."""
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json {where} is not a JSON object; re-download the checkpoint")
    for key, (low, high) in _CONFIG_BOUNDS.items():
        if key not in config:
            if key == "hidden_size":
                raise ModelLoadError(f"config.json {where} has no hidden_size; re-download the checkpoint")
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelLoadError(
                f"config.json {where} has {key}={value!r}; an XLM-RoBERTa checkpoint has an int in "
                f"[{low}, {high}] there: the file is damaged or not this kind of model (re-download it)"
            )
    heads = config.get("num_attention_heads")
    if heads is not None and config["hidden_size"] % heads:
        raise ModelLoadError(
            f"config.json {where} has hidden_size={config['hidden_size']}, which {heads} attention heads "
            "do not divide; the file is damaged (re-download the checkpoint)"
        )
    return config


def _check_shards(index: Path) -> None:
    for file in shard_files(index):
        shard = file.name
        if not file.is_file():
            raise ModelLoadError(f"weight shard {shard} named by {index.name} is missing in {index.parent}")
        if shard.endswith(".safetensors"):
            _check_safetensors(file)


def dense_dim_from_config(model: str) -> int | None:
    """The dense dim of ``model`` without loading it: a local directory's config.json, the Hugging Face
    cache's copy, or the known hub models; None when none of them tells."""
    path = Path(model).expanduser()
    config: Path | None = path / "config.json" if path.is_dir() else None
    if config is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            if isinstance(cached, str):
                config = Path(cached)
        except Exception:
            config = None
    if config is not None and config.is_file():
        try:
            return int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{config} has no readable hidden_size ({exc}); pass --dense-dim") from exc
    return KNOWN_DENSE_DIMS.get(model)


FINGERPRINT_SAMPLE = 1 << 20
"""Bytes read from each end of every weight file for the fingerprint (the whole of smaller files)."""


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """What a checkpoint directory is, whatever its path: a hash of its config.json (parsed, so
    formatting does not count), both heads (``sparse_linear.pt``, ``colbert_linear.pt``) and, for each
    weight file, its size and its first and last ``FINGERPRINT_SAMPLE`` bytes (a fine-tune changes the
    first embeddings and the last layer). The same checkpoint under any path or hub id gives the same
    value; reading it costs a few MiB whatever the model's size."""
    folder = Path(path)
    h = hashlib.sha256(b"milvus-m3 model fingerprint v1\n")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json in {folder} is missing or unreadable ({exc})") from exc
    config.pop("_name_or_path", None)  # where it was saved from, not what it is
    h.update(json.dumps(config, sort_keys=True).encode("utf-8"))
    files = [folder / name for name in ("sparse_linear.pt", "colbert_linear.pt", *_WEIGHT_FILES)]
    for index in (folder / name for name in _WEIGHT_FILES if name.endswith(".index.json")):
        if index.is_file():  # a sharded checkpoint: its shards are what it is, not only their names
            files.extend(f for f in shard_files(index) if f.is_file())
    for file in files:
        if not file.is_file():
            continue
        name = file.name
        size = file.stat().st_size
        h.update(f"\n{name}:{size}\n".encode())
        with file.open("rb") as fh:
            if name.endswith(".pt") or size <= 2 * FINGERPRINT_SAMPLE:
                h.update(fh.read())
            else:
                h.update(fh.read(FINGERPRINT_SAMPLE))
                fh.seek(size - FINGERPRINT_SAMPLE)
                h.update(fh.read(FINGERPRINT_SAMPLE))
    return h.hexdigest()[:32]


def fingerprint_of(model: str) -> str | None:
    """``model_fingerprint`` of a local checkpoint directory, or of a hub id already in the local cache,
    without loading the model; None when neither is at hand."""
    path = Path(model).expanduser()
    if not path.is_dir():
        try:
            path = resolve_model_dir(model, None, True)
        except ModelLoadError:
            return None
    if not (path / "config.json").is_file():
        return None
    return model_fingerprint(path)

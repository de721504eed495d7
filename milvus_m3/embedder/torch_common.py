"""What the torch models share (the two torch backends and the cross-encoder of ``rerankers``).

Resolving the device, the precision and the CPU threads; the torch dtype of a precision; int8 dynamic
quantisation; torch's out-of-memory errors and the CUDA cache; numpy arrays to tensors on a device and
back (the encode loop, ``loop``, speaks numpy).

``precision="int8"`` quantises the ``Linear`` layers dynamically on CPU (torch's ``quantize_dynamic``):
int8 weights with one scale per output channel, activations quantised per batch. Per-channel scales,
not torch's per-tensor default: on SciFact with the stand-in encoders per-tensor moved dense nDCG@10 by
-0.018, per-channel by +0.004 (benchmarks/results/int8_scifact.txt).

torch is imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from .backend import default_threads


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


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS and CPU allocators)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory(device: str) -> None:
    """After an out-of-memory error: give CUDA's cached blocks back, so the halves of a batch fit."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def to_device(array: npt.NDArray[np.int64], device: str) -> Any:
    """A numpy array as a tensor on ``device`` (no copy on the CPU)."""
    import torch

    return torch.from_numpy(array).to(device)


def to_numpy(tensor: Any) -> npt.NDArray[np.float32]:
    """A float tensor on any device as a float32 numpy array (bf16 has no numpy dtype: cast first)."""
    out: npt.NDArray[np.float32] = tensor.float().cpu().numpy()
    return out


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

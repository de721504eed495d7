"""The seam under ``M3Embedder``: the ``EmbeddingBackend`` protocol and its load options.

``M3Embedder`` checks its options and texts, cuts over-long texts and builds ``M3Embeddings``; a
backend tokenizes and runs the model. The backends are one table, ``backends.BACKENDS``:
"transformers" (the default, ``transformers_backend``: BGE-M3's encoder in plain torch, the heads
through ``torch.load``, no FlagEmbedding import) and "flagembedding" (``flagembedding_backend``: the
model as FlagEmbedding's ``BGEM3FlagModel`` loads it); ``devices=[...]`` puts one worker process per
device in front of either (``multi_device``).

Adding a backend (ONNX Runtime, say) is one new module and one table entry:

1. a class that subclasses ``loop.EncodeLoop`` (which implements this protocol: the tokenizer, batch
   planning, padding, out-of-memory backoff, progress, and turning the model's arrays into dense rows,
   sparse dicts and ColBERT rows) and gives its ``forward``: numpy ``int64`` ``input_ids`` and
   ``attention_mask`` (rows, tokens) in, ``loop.ForwardOutput`` (numpy dense [CLS] rows, per-token
   relu'd sparse weights, per-token ColBERT vectors when asked) out; plus ``is_out_of_memory`` when its
   runtime has an out-of-memory error worth splitting a batch for, and ``colbert_is_unit = True`` when
   its ColBERT rows come out unit length already;
2. a loader taking ``BackendOptions`` (device, precision, checkpoint, threads) and returning it;
3. one entry in ``backends._LOADERS``, which imports the module inside the loader.

Imports neither torch nor FlagEmbedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..types import SparseVector
from .checkpoint import DEFAULT_MODEL

BackendOutput = tuple[npt.NDArray[np.float32], list[SparseVector], list[npt.NDArray[np.float32]] | None]
"""What ``EmbeddingBackend.encode`` gives: dense (n, dim) unit rows, sparse dicts, ColBERT arrays or None."""


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """What a backend needs to load a model (``M3Embedder`` has already checked the types)."""

    model_name_or_path: str = DEFAULT_MODEL
    device: str | None = None
    """None: the backend picks one device ("cuda:0" when available, else "cpu")."""
    precision: str = "auto"
    """ "auto", "fp32", "fp16", "bf16" or "int8" (CPU)."""
    cache_dir: str | os.PathLike[str] | None = None
    local_files_only: bool | None = None
    backend: str = "transformers"
    """One of ``backends.BACKENDS``."""
    threads: int | None = None
    """torch's CPU threads for this process; None: ``$OMP_NUM_THREADS``, else the CPUs it may use."""
    max_batch_tokens: int | None = None
    """At most this many padded tokens (rows x the longest row) per batch; None: no token budget."""
    devices: tuple[str, ...] | None = None
    """One worker process per device (``device`` is then unused); None: run in this process."""


class EmbeddingBackend(Protocol):
    """A loaded BGE-M3-shaped model: a tokenizer and one forward pass giving dense, sparse and ColBERT.

    Token ids include ``<s>`` and ``</s>`` when ``special_tokens`` is True. Calls come one at a time
    (``M3Embedder`` holds a lock around each), so a backend need not be thread-safe.
    """

    @property
    def model_dir(self) -> Path:
        """The local checkpoint directory loaded."""
        ...

    @property
    def device(self) -> str:
        """The device it runs on, resolved ("cpu", "cuda:0", ...)."""
        ...

    @property
    def precision(self) -> str:
        """ "fp32", "fp16" or "bf16" ("auto" resolved)."""
        ...

    @property
    def dense_dim(self) -> int: ...

    @property
    def colbert_dim(self) -> int: ...

    @property
    def vocab_size(self) -> int:
        """Sparse keys are token ids in ``range(vocab_size)``."""
        ...

    @property
    def max_length(self) -> int:
        """The most tokens (with ``<s>`` and ``</s>``) the model takes in one text."""
        ...

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        """Token ids per text, never truncated."""
        ...

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each content token of ``text`` (no special tokens)."""
        ...

    def count(self, text: str) -> int:
        """Content tokens in ``text``."""
        ...

    def encode(
        self, ids: list[list[int]], *, batch_size: int, colbert: bool, show_progress: bool
    ) -> BackendOutput:
        """Embed texts given as token ids (each at most ``max_length`` long), in input order."""
        ...

    def close(self) -> None:
        """Release what the backend holds beyond memory (worker processes); safe to call twice."""
        ...


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set to a positive int, else the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1

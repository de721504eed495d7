"""The table of embedding backends: a name -> the loader of a backend that runs in this process.

"transformers" (the default: BGE-M3's encoder in plain torch, the heads through ``torch.load``, no
FlagEmbedding import) and "flagembedding" (the model as FlagEmbedding's ``BGEM3FlagModel`` loads it),
each one module with a ``loop.EncodeLoop`` subclass (its forward pass) and a loader. ``devices=[...]``
puts one worker process per device in front of either (``multi_device``, which loads its workers'
backends from this table). Each loader imports its module when called: importing this table loads
neither torch nor FlagEmbedding. A new backend is one module and one entry here (``backend``'s
docstring says what the module gives).
"""

from __future__ import annotations

from collections.abc import Callable

from .backend import BackendOptions, EmbeddingBackend

__all__ = ["BACKENDS", "load_in_process"]


def _transformers(options: BackendOptions) -> EmbeddingBackend:
    from .transformers_backend import load_hf_backend

    return load_hf_backend(options)


def _flagembedding(options: BackendOptions) -> EmbeddingBackend:
    from .flagembedding_backend import load_flag_backend

    return load_flag_backend(options)


_LOADERS: dict[str, Callable[[BackendOptions], EmbeddingBackend]] = {
    "transformers": _transformers,
    "flagembedding": _flagembedding,
}
BACKENDS: tuple[str, ...] = tuple(_LOADERS)
"""The backend names ``M3Embedder(backend=...)`` takes; the first is the default."""


def load_in_process(options: BackendOptions) -> EmbeddingBackend:
    """The backend ``options.backend`` names, loaded in this process (``devices`` not looked at)."""
    return _LOADERS[options.backend](options)

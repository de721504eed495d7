"""milvus-m3: hybrid dense + learned-sparse retrieval for Milvus with BGE-M3.

The public surface is ``__all__`` (pinned by tests/unit/test_public_api.py). The three parts are imported
on first use, so ``import milvus_m3`` loads neither pymilvus nor torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import (
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    ConfigError,
    FilterError,
    IngestAborted,
    InputError,
    MilvusM3Error,
    MilvusUnavailableError,
    MissingDependencyError,
    ModelLoadError,
    SchemaMismatchError,
    SearchError,
    TextTooLongError,
)
from .types import Encoder, Hit, M3Embeddings

logging.getLogger("milvus_m3").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .collection.async_manager import AsyncCollectionManager
    from .collection.manager import CollectionInfo, CollectionManager, CollectionSpec, ScalarField
    from .embedder.model import M3Embedder
    from .engine.connection import ConnectionOptions, RetryPolicy
    from .filters import F, Filter
    from .ingest import IngestOptions, IngestReport, ingest
    from .rerankers.cross_encoder import CrossEncoderReranker
    from .search import HybridSearcher
    from .search.async_searcher import AsyncHybridSearcher

_LAZY = {
    "AsyncCollectionManager": "collection.async_manager",
    "AsyncHybridSearcher": "search.async_searcher",
    "CollectionInfo": "collection",
    "CollectionManager": "collection",
    "CollectionSpec": "collection",
    "ScalarField": "collection",
    "ConnectionOptions": "engine.connection",
    "RetryPolicy": "engine.connection",
    "M3Embedder": "embedder",
    "CrossEncoderReranker": "rerankers",
    "F": "filters",
    "Filter": "filters",
    "IngestOptions": "ingest",
    "IngestReport": "ingest",
    "ingest": "ingest",
    "HybridSearcher": "search",
}

__all__ = [
    "AsyncCollectionManager",
    "AsyncHybridSearcher",
    "CollectionError",
    "CollectionExistsError",
    "CollectionInfo",
    "CollectionManager",
    "CollectionNotFoundError",
    "CollectionSpec",
    "ConfigError",
    "ConnectionOptions",
    "CrossEncoderReranker",
    "Encoder",
    "F",
    "Filter",
    "FilterError",
    "Hit",
    "HybridSearcher",
    "IngestAborted",
    "IngestOptions",
    "IngestReport",
    "InputError",
    "M3Embedder",
    "M3Embeddings",
    "MilvusM3Error",
    "MilvusUnavailableError",
    "MissingDependencyError",
    "ModelLoadError",
    "RetryPolicy",
    "ScalarField",
    "SchemaMismatchError",
    "SearchError",
    "TextTooLongError",
    "ingest",
]


_MOVED = {
    "async_collection": "collection.async_manager",
    "capabilities": "engine.capabilities",
    "checkpoint": "embedder.checkpoint",
    "connection": "engine.connection",
    "reranker": "rerankers.cross_encoder",
    "schema": "collection.schema",
}
"""Public modules of earlier releases and where they live now: ``import milvus_m3.connection`` still
works and gives the very module ``milvus_m3.engine.connection`` (one object, so patches apply to both)."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self._real_specs: dict[str, ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        prefix, _, leaf = fullname.rpartition(".")
        if prefix != __name__ or leaf not in _MOVED:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}")
        self._real_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the module: give it back its own
        module.__spec__ = self._real_specs[module.__name__]


sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'milvus_m3' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

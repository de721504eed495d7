"""milvus-m3: hybrid dense + learned-sparse retrieval for Milvus with BGE-M3.

The public surface is ``__all__`` (pinned by tests/unit/test_public_api.py). The three parts are imported
on first use, so ``import milvus_m3`` loads neither pymilvus nor torch.
"""

from __future__ import annotations

import importlib
import logging
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
    from .async_collection import AsyncCollectionManager
    from .collection import CollectionInfo, CollectionManager, CollectionSpec, ScalarField
    from .connection import ConnectionOptions, RetryPolicy
    from .embedder import M3Embedder
    from .filters import F, Filter
    from .ingest import IngestOptions, IngestReport, ingest
    from .reranker import CrossEncoderReranker
    from .search import HybridSearcher
    from .search.async_searcher import AsyncHybridSearcher

_LAZY = {
    "AsyncCollectionManager": "async_collection",
    "AsyncHybridSearcher": "search.async_searcher",
    "CollectionInfo": "collection",
    "CollectionManager": "collection",
    "CollectionSpec": "collection",
    "ScalarField": "collection",
    "ConnectionOptions": "connection",
    "RetryPolicy": "connection",
    "M3Embedder": "embedder",
    "CrossEncoderReranker": "reranker",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'milvus_m3' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

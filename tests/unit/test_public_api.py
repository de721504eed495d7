"""The public surface is a visible decision: this test pins it."""

from __future__ import annotations

import subprocess
import sys

import milvus_m3

# Decided on purpose: F (the filter builder, without which Filter cannot be made) and the two option
# dataclasses that travel between layers are public; M3Reranker is not (use HybridSearcher(mode="m3" /
# "m3-all"); it stays importable from milvus_m3.search.rerank for custom ColBERT sources). The async pair
# (AsyncCollectionManager, AsyncHybridSearcher) is public: serving code needs both.
EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert milvus_m3.__all__ == EXPECTED
    assert milvus_m3.__all__ == sorted(milvus_m3.__all__)


def test_every_public_name_resolves() -> None:
    for name in milvus_m3.__all__:
        assert getattr(milvus_m3, name) is not None, name


def test_errors_share_one_root() -> None:
    for name in milvus_m3.__all__:
        obj = getattr(milvus_m3, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, milvus_m3.MilvusM3Error), name


def test_import_is_light() -> None:
    code = (
        "import sys, milvus_m3; "
        "heavy = [m for m in ('torch', 'FlagEmbedding', 'transformers', 'pymilvus', 'langchain_core', "
        "'llama_index') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""The multi-language BM25 analyzer on the loopback gRPC server tier (Milvus Lite's server binary):
refused at create time with the fix, nothing left behind."""

from __future__ import annotations

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError

pytestmark = pytest.mark.server


def test_create_with_languages_is_refused_before_anything_is_created(
    server_manager: CollectionManager,
) -> None:
    assert not server_manager.capabilities.multi_language_analyzer
    before = server_manager.list_collections()
    spec = CollectionSpec(
        dense_dim=16, bm25=True, bm25_languages={"en": "english", "zh": "chinese", "default": "standard"}
    )
    with pytest.raises(ConfigError, match=r"multi-language analyzer.*chinese for Chinese.*>= 2\.5\.11"):
        server_manager.create_collection("ml", spec=spec)
    assert server_manager.list_collections() == before and "ml" not in before

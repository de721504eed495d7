"""Three legs through the loopback gRPC server tier and the embedded file: the same hits, every fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.filters import F
from milvus_m3.search import HybridSearcher
from tests.integration.test_legs import DOCS, N_PARENTS, QUERIES, NoisyEncoder

pytestmark = pytest.mark.server

CASES = (
    {"legs": ("bm25",)},
    {"legs": ("dense", "sparse", "bm25")},
    {"legs": ("dense", "bm25"), "weights": (0.4, 1.0)},
    {"ranker": "weighted", "weights": (1.0, 0.3, 0.5)},
    {"ranker": "weighted", "weights": (1.0, 0.3, 0.5), "norm_score": False},
    {"offset": 130, "limit": 20},
    {"group_by": "parent_id", "limit": 10},
    {"filter": F.eq("parent_id", "p05"), "limit": 5},
)


def test_three_legs_server_and_embedded_agree(server_manager: CollectionManager, tmp_path: Path) -> None:
    enc = NoisyEncoder(dim=16)
    texts = [t for _, t, _ in DOCS]
    emb = enc.encode_documents(texts)
    spec = CollectionSpec(
        dense_dim=16, model_name=enc.model_name, dense_index="FLAT", chunked=True, bm25=True
    )

    def fill(m: CollectionManager) -> HybridSearcher:
        m.create_collection("legs", spec=spec)
        m.upsert(
            "legs",
            ids=[d for d, _, _ in DOCS],
            texts=texts,
            embeddings=emb,
            parent_ids=[p for _, _, p in DOCS],
            chunk_indexes=[i // N_PARENTS for i in range(len(DOCS))],
        )
        return HybridSearcher(m, "legs", enc)

    server = fill(server_manager)
    with CollectionManager(str(tmp_path / "embedded.db")) as embedded:
        local = fill(embedded)
        for query in QUERIES:
            for case in CASES:
                kw = {"limit": 20, "output_fields": ["parent_id"], **case}
                a = server.search(query, **kw)  # type: ignore[arg-type]
                b = local.search(query, **kw)  # type: ignore[arg-type]
                assert a and [h.id for h in a] == [h.id for h in b], (query, case)
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)

"""Sparse size on Milvus Lite with the tiny checkpoint (issue 14, item 6): ``ingest --sparse-top-k /
--sparse-mass`` stores pruned rows, records the setting in the build record, and HybridSearcher prunes
queries the same way; other sizes on an existing collection are refused; Lite refuses
``--sparse-inverted-index-algo`` and keeps today's index params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.cli import main
from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import SchemaMismatchError
from milvus_m3.search import HybridSearcher
from milvus_m3.sparse import lexical_score, prune

pytestmark = pytest.mark.integration

# Texts the tiny checkpoint (random weights) gives 6-14 sparse terms each.
DOCS = [
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку у реки.",
    "Die Katze schläft auf dem Sofa, während draußen der Regen fällt.",
    "検索拡張生成は、外部の文書を使って言語モデルの回答を改善します。",
    "emoji 🙂 and rare ☃ symbols ✓",
    "a literal </s> and <s> in the text, plus <pad>",
]
QUERY = DOCS[0] + " " + DOCS[1] + " " + DOCS[3]


def _ingest(tmp_path: Path, db: str, model: Path, *flags: str) -> int:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)), "utf-8"
    )
    return main(
        ["ingest", str(docs), "--collection", "docs", "--uri", db, "--model", str(model), "-q", *flags]
    )


def _stored(manager: CollectionManager) -> dict[str, dict[int, float]]:
    res = manager.client.query(collection_name="docs", filter="", output_fields=["sparse"], limit=100)
    return {r["id"]: {int(k): float(v) for k, v in dict(r["sparse"]).items()} for r in res}


def test_ingest_prunes_rows_records_it_and_searches_prune_queries(
    tmp_path: Path, tiny_checkpoint: Path, tiny_embedder: M3Embedder, capsys: Any
) -> None:
    db = str(tmp_path / "s.db")
    assert _ingest(tmp_path, db, tiny_checkpoint, "--sparse-top-k", "3", "--sparse-mass", "0.95") == 0
    full = tiny_embedder.encode_documents(DOCS).sparse
    with CollectionManager(db) as manager:
        spec = manager.spec("docs")
        assert (spec.sparse_top_k, spec.sparse_mass) == (3, 0.95)
        stored = _stored(manager)
        assert sum(len(vec) > 3 for vec in full) >= 4  # pruning has something to cut
        for i, vec in enumerate(full):
            want = prune(vec, top_k=3, mass=0.95)
            assert len(want) <= 3 and set(stored[f"d{i}"]) == set(want)
            assert all(abs(stored[f"d{i}"][k] - w) < 1e-5 for k, w in want.items())

        # The searcher reads the record: the sparse score is the pruned query against the pruned row.
        q = tiny_embedder.encode_queries([QUERY]).sparse[0]
        hits = HybridSearcher(manager, "docs", tiny_embedder).search(QUERY, mode="sparse", limit=5)
        assert hits
        pruned_q = prune(q, top_k=3, mass=0.95)
        differs = 0
        for hit in hits:
            want = lexical_score(pruned_q, stored[hit.id])
            assert abs(hit.score - want) < 1e-4, (hit.id, hit.score, want)
            differs += abs(lexical_score(q, stored[hit.id]) - want) > 1e-3
        assert differs, "the texts must make pruning the query change a score, or the check proves nothing"

        # Reusing the collection with another size is refused (rows were stored the other way).
        with pytest.raises(SchemaMismatchError, match="sparse_top_k"):
            manager.create_collection(
                "docs",
                spec=CollectionSpec(dense_dim=spec.dense_dim, model_name=spec.model_name),
                exists_ok=True,
            )
    capsys.readouterr()
    assert _ingest(tmp_path, db, tiny_checkpoint, "--sparse-top-k", "8") == 2
    err = capsys.readouterr().err
    assert "sparse_top_k=3" in err and "--sparse-top-k" in err
    assert _ingest(tmp_path, db, tiny_checkpoint, "--sparse-top-k", "3") == 0  # the same size: fine


def test_lite_refuses_the_inverted_index_algo_and_keeps_todays_params(
    tmp_path: Path, tiny_checkpoint: Path, capsys: Any
) -> None:
    db = str(tmp_path / "a.db")
    rc = main(
        [
            "create",
            "--collection",
            "c",
            "--uri",
            db,
            "--dense-dim",
            "32",
            "--sparse-inverted-index-algo",
            "DAAT_WAND",
        ]
    )
    assert rc == 2
    assert "sparse_inverted_index_algo 'DAAT_WAND' is not available on Milvus Lite" in capsys.readouterr().err
    assert main(["create", "--collection", "c", "--uri", db, "--dense-dim", "32", "--sparse-top-k", "5"]) == 0
    with CollectionManager(db) as manager:
        assert not manager.has_collection("never")
        info = manager.describe("c")
        assert info.spec is not None and info.spec.sparse_top_k == 5
        sparse_index = dict(info.indexes.get("sparse", {}))
        assert sparse_index.get("index_type") == "SPARSE_INVERTED_INDEX"
        assert "inverted_index_algo" not in sparse_index


def test_the_server_index_params_are_accepted_by_the_milvus_2_5_core(tmp_path: Path) -> None:
    """The loopback tier has no Milvus server >= 2.5, so the params built for one are sent to Milvus Lite
    2.5.1 (Milvus 2.5's C++ core) directly: it builds the index with that algorithm and searches it."""
    from milvus_m3.collection.schema import build_index_params, build_schema
    from milvus_m3.engine.capabilities import server_capabilities

    spec = CollectionSpec(dense_dim=4, sparse_inverted_index_algo="DAAT_MAXSCORE")
    caps = server_capabilities((2, 5, 0))
    with CollectionManager(str(tmp_path / "core.db")) as manager:
        client = manager.client
        client.create_collection(
            "algo",
            schema=build_schema(spec, manager.capabilities),
            index_params=build_index_params(spec, "AUTOINDEX", caps=caps),
        )
        assert client.describe_index("algo", "sparse")["inverted_index_algo"] == "DAAT_MAXSCORE"
        rows = [
            {"id": "a", "text": "a", "dense": [1.0, 0, 0, 0], "sparse": {1: 0.5, 3: 0.2}, "metadata": {}},
            {"id": "b", "text": "b", "dense": [0, 1.0, 0, 0], "sparse": {3: 0.9}, "metadata": {}},
        ]
        client.insert("algo", rows)
        res = client.search(
            "algo", [{3: 1.0}], anns_field="sparse", limit=2, search_params={"metric_type": "IP"}
        )
        assert [h["id"] for h in res[0]] == ["b", "a"]

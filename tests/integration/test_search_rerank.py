"""The rerank stage on Milvus Lite, with the tiny BGE-M3 embedder and the tiny cross-encoder.

The reference for every case: run the same first stage without a reranker for ``rerank_depth`` hits,
score (query, text) with FlagEmbedding's ``FlagReranker.compute_score``, sort by that score (ties by
id, ``fusion.id_order``) and slice ``offset:offset + limit``. The searcher's hits must equal it, keep
the first-stage score, and do so for hybrid, dense, sparse and m3 first stages, filters and group-by.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.errors import ConfigError
from milvus_m3.filters import F
from milvus_m3.fusion import id_order
from milvus_m3.search import HybridSearcher
from milvus_m3.types import Hit

pytestmark = pytest.mark.integration

TOPICS = (
    "hybrid search fuses dense and sparse rankings",
    "bread rises because yeast makes gas",
    "milvus stores vectors in segments",
    "late interaction compares token vectors",
    "die katze schläft auf dem sofa",
    "rerankers read the query and the passage together",
)
DUPLICATE = "a passage stored twice under two ids"
QUERIES = ("how does hybrid vector search work?", "what makes bread rise", "token vectors and rerankers")


def _docs() -> list[dict[str, Any]]:
    docs = []
    for i in range(36):
        topic = TOPICS[i % len(TOPICS)]
        docs.append(
            {
                "id": f"d{i:02d}",
                "text": f"{topic}, note {i} of {36 - i}",
                "lang": ("en", "de")[i % 2],
                "parent": f"p{i % 9}",
            }
        )
    # Two ids with one text: equal rerank scores, ordered by id (d90 after d05 whatever Milvus returns).
    docs.append({"id": "d90", "text": DUPLICATE, "lang": "en", "parent": "p0"})
    docs.append({"id": "d05x", "text": DUPLICATE, "lang": "en", "parent": "p1"})
    return docs


DOCS = _docs()


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any) -> Iterator[HybridSearcher]:
    manager = CollectionManager(str(tmp_path_factory.mktemp("rerank") / "rerank.db"))
    try:
        manager.create_collection(
            "rr",
            spec=CollectionSpec(
                dense_dim=tiny_embedder.dense_dim,
                model_name=tiny_embedder.model_name,
                dense_index="FLAT",
                chunked=True,
                scalar_fields=(ScalarField(name="lang", max_length=8),),
            ),
        )
        texts = [d["text"] for d in DOCS]
        manager.upsert(
            "rr",
            ids=[d["id"] for d in DOCS],
            texts=texts,
            embeddings=tiny_embedder.encode_documents(texts),
            fields={"lang": [d["lang"] for d in DOCS]},
            parent_ids=[d["parent"] for d in DOCS],
            chunk_indexes=[0] * len(DOCS),
        )
        yield HybridSearcher(manager, "rr", tiny_embedder)
    finally:
        manager.close()


@pytest.fixture(scope="module")
def flag_reranker(tiny_reranker_checkpoint: Path) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(str(tiny_reranker_checkpoint), use_fp16=False, devices="cpu")


def _reference(
    searcher: HybridSearcher, flag: Any, query: str, *, depth: int, offset: int, limit: int, **kw: Any
) -> list[tuple[Hit, float]]:
    first = searcher.search(query, limit=depth, **kw)
    if not first:
        return []
    raw = flag.compute_score([(query, h.text) for h in first])
    # one score per distinct text (FlagReranker's batch can move a duplicate's logit by an ulp; ours
    # scores identical pairs once), so equal texts tie exactly and the id decides
    by_text: dict[str | None, float] = {}
    scores = [by_text.setdefault(h.text, s) for h, s in zip(first, raw, strict=True)]
    ranked = sorted(zip(first, scores, strict=True), key=lambda p: (-p[1], id_order(p[0].id)))
    return ranked[offset : offset + limit]


def _assert_equal(hits: list[Hit], want: list[tuple[Hit, float]]) -> None:
    assert [h.id for h in hits] == [h.id for h, _ in want]
    for hit, (first, score) in zip(hits, want, strict=True):
        assert abs(hit.score - score) <= 1e-5 and hit.rerank_score == hit.score
        assert hit.first_stage_score == first.score
        assert hit.text == first.text and hit.fields == first.fields


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse", "m3"])
def test_reranked_hits_equal_flagreranker_order_and_pages(
    searcher: HybridSearcher, tiny_reranker: Any, flag_reranker: Any, mode: str
) -> None:
    seen = 0
    for query in QUERIES:
        full = searcher.search(query, limit=20, mode=mode, reranker=tiny_reranker, rerank_depth=20)  # type: ignore[arg-type]
        _assert_equal(
            full, _reference(searcher, flag_reranker, query, depth=20, offset=0, limit=20, mode=mode)
        )
        assert [h.score for h in full] == sorted((h.score for h in full), reverse=True)
        pages = [
            searcher.search(query, limit=7, offset=o, mode=mode, reranker=tiny_reranker, rerank_depth=20)  # type: ignore[arg-type]
            for o in (0, 7, 14)
        ]
        assert [h.id for page in pages for h in page] == [h.id for h in full]  # limit / offset page the list
        assert len(pages[2]) == max(0, len(full) - 14)
        seen += len(full)
    assert seen >= 10  # the first stages found hits to rerank (sparse: fewer, the tiny sparse head is sparse)


def test_filters_and_group_by_run_in_the_first_stage(
    searcher: HybridSearcher, tiny_reranker: Any, flag_reranker: Any
) -> None:
    query = QUERIES[0]
    kw: dict[str, Any] = {"filter": F.eq("lang", "de")}
    hits = searcher.search(query, limit=5, offset=2, reranker=tiny_reranker, rerank_depth=12, **kw)
    assert {searcher_lang(h) for h in hits} == {"de"}
    _assert_equal(hits, _reference(searcher, flag_reranker, query, depth=12, offset=2, limit=5, **kw))

    kw = {"group_by": "parent_id"}
    hits = searcher.search(query, limit=6, reranker=tiny_reranker, rerank_depth=9, **kw)
    assert len({h.fields["parent_id"] for h in hits}) == 6
    _assert_equal(hits, _reference(searcher, flag_reranker, query, depth=9, offset=0, limit=6, **kw))


def searcher_lang(hit: Hit) -> str:
    return str(hit.fields["lang"])


def test_equal_scores_are_ordered_by_id(searcher: HybridSearcher, tiny_reranker: Any) -> None:
    hits = searcher.search(DUPLICATE, limit=38, reranker=tiny_reranker, rerank_depth=38, mode="dense")
    dup = [h for h in hits if h.text == DUPLICATE]
    assert [h.id for h in dup] == ["d05x", "d90"] and dup[0].score == dup[1].score
    pos = [i for i, h in enumerate(hits) if h.text == DUPLICATE]
    assert pos[1] == pos[0] + 1


def test_searcher_defaults_per_call_overrides_and_batches(
    searcher: HybridSearcher, tiny_reranker: Any, tiny_embedder: Any
) -> None:
    staged = HybridSearcher(searcher.manager, "rr", tiny_embedder, reranker=tiny_reranker, rerank_depth=15)
    assert staged.search(QUERIES[1], limit=4) == searcher.search(
        QUERIES[1], limit=4, reranker=tiny_reranker, rerank_depth=15
    )
    plain = staged.search(QUERIES[1], limit=4, rerank_depth=0)  # this call without the second stage
    assert plain == searcher.search(QUERIES[1], limit=4)
    assert all(h.rerank_score is None and h.first_stage_score is None for h in plain)
    batch = staged.search_batch(list(QUERIES), limit=3, offset=1)
    assert batch == [staged.search(q, limit=3, offset=1) for q in QUERIES]
    # output_fields without the text: the first stage still reads it (the reranker needs it)
    hits = staged.search(QUERIES[0], limit=3, output_fields=["lang"])
    assert all(h.text for h in hits) and all("lang" in h.fields for h in hits)


def test_bad_rerank_arguments_are_refused(searcher: HybridSearcher, tiny_reranker: Any) -> None:
    with pytest.raises(ConfigError, match="rerank_depth 10 is smaller than limit 15"):
        searcher.search(QUERIES[0], limit=15, reranker=tiny_reranker, rerank_depth=10)
    assert searcher.search(QUERIES[0], limit=5, offset=10, reranker=tiny_reranker, rerank_depth=10) == []
    with pytest.raises(ConfigError, match="rerank_depth=30 without a reranker"):
        searcher.search(QUERIES[0], rerank_depth=30)
    with pytest.raises(ConfigError, match="reranker must be a CrossEncoderReranker"):
        searcher.search(QUERIES[0], reranker="BAAI/bge-reranker-v2-m3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="above Milvus's per-request cap"):
        searcher.search(QUERIES[0], reranker=tiny_reranker, rerank_depth=20000)
    with pytest.raises(ConfigError, match="rerank_depth must be an int >= 0"):
        HybridSearcher(searcher.manager, "rr", reranker=tiny_reranker, rerank_depth=-1)


def test_cli_search_rerank_equals_the_python_api(
    tmp_path: Path,
    tiny_checkpoint: Path,
    tiny_reranker_checkpoint: Path,
    tiny_embedder: Any,
    tiny_reranker: Any,
) -> None:
    import json

    from tests.integration.test_cli import release, run

    uri = str(tmp_path / "cli.db")
    texts = [d["text"] for d in DOCS]
    with CollectionManager(uri) as manager:
        manager.create_collection(
            "docs",
            spec=CollectionSpec(dense_dim=tiny_embedder.dense_dim, model_name=tiny_embedder.model_name),
        )
        manager.upsert(
            "docs", ids=[d["id"] for d in DOCS], texts=texts, embeddings=tiny_embedder.encode_documents(texts)
        )
        want = HybridSearcher(manager, "docs", tiny_embedder).search(
            QUERIES[0], limit=4, offset=1, reranker=tiny_reranker, rerank_depth=10
        )
    release(uri)
    base = ["search", QUERIES[0], "--collection", "docs", "--uri", uri, "--model", str(tiny_checkpoint)]
    proc = run(
        [
            *base,
            "--limit",
            "4",
            "--offset",
            "1",
            "--rerank",
            str(tiny_reranker_checkpoint),
            "--rerank-depth",
            "10",
            "--json",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [g["id"] for g in got] == [h.id for h in want]
    for g, h in zip(got, want, strict=True):
        assert abs(g["score"] - h.score) <= 1e-5 and abs(g["first_stage_score"] - h.first_stage_score) <= 1e-5
    proc = run([*base, "--rerank-depth", "10"], tmp_path)  # no --rerank: plain search, no stage
    assert proc.returncode == 2 and "--rerank-depth needs --rerank MODEL" in proc.stderr

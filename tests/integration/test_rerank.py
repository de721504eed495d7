"""m3 (raw dense + sparse fusion over the union, exact fill-in) and m3-all (+ ColBERT) against references.

Pure scores against hand-computed values; m3 through Milvus Lite against a numpy brute force; m3-all on
the tiny checkpoint against FlagEmbedding's own ``BGEM3FlagModel.compute_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError, InputError
from milvus_m3.search.rerank import (
    CandidateSet,
    M3Reranker,
    M3Weights,
    colbert_score,
    dense_score,
    sparse_score,
)
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder

WORDS = [
    "milvus",
    "vector",
    "database",
    "dense",
    "sparse",
    "retrieval",
    "hybrid",
    "search",
    "index",
    "query",
    "document",
    "model",
    "encoder",
    "token",
    "weight",
    "score",
    "fusion",
    "rank",
    "paper",
    "lexical",
    "semantic",
    "graph",
    "cat",
    "dog",
    "bread",
    "yeast",
    "river",
    "mountain",
]


def _corpus(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(n)]


# ------------------------------------------------------------------------------------- pure scores


def test_colbert_score_is_mean_over_query_tokens_of_max_dot() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]])
    # token 1: max(0.6, 1.0, -1.0) = 1.0; token 2: max(0.8, 0, 0) = 0.8 -> (1.0 + 0.8) / 2
    assert colbert_score(q, d) == pytest.approx(0.9)
    # a query token with only negative dot products keeps its negative max (no zero padding)
    assert colbert_score(np.array([[1.0, 0.0]]), np.array([[-0.5, 0.5], [-0.9, 0.1]])) == pytest.approx(-0.5)
    assert colbert_score(np.zeros((0, 2)), d) == 0.0
    with pytest.raises(InputError):
        colbert_score(np.ones((2, 3)), d)
    with pytest.raises(InputError):
        colbert_score(np.ones(3), d)


def test_dense_and_sparse_scores() -> None:
    assert dense_score([0.6, 0.8], [1.0, 0.0]) == pytest.approx(0.6)
    assert sparse_score({1: 0.5, 7: 2.0}, {7: 0.25, 9: 1.0}) == pytest.approx(0.5)
    assert sparse_score({}, {1: 1.0}) == 0.0


def test_weights_validate() -> None:
    assert M3Weights() == M3Weights(dense=1.0, sparse=0.3, colbert=1.0)
    assert M3Weights().total("m3") == pytest.approx(1.3)
    assert M3Weights().total("m3-all") == pytest.approx(2.3)
    for bad in ({"dense": -1.0}, {"sparse": float("nan")}, {"colbert": True}, {"dense": 0.0, "sparse": 0.0}):
        with pytest.raises(ConfigError):
            M3Weights(**bad)


def test_candidate_set_fuses_raw_scores_with_deterministic_ties() -> None:
    cs = CandidateSet(
        ids=("b", "a", "c"),
        dense=np.array([0.5, 0.2, 0.8]),
        sparse=np.array([1.0, 2.0, 0.0]),
        from_dense=np.array([True, False, True]),
        from_sparse=np.array([True, True, False]),
    )
    # b: 0.5 + 0.3 = 0.8, a: 0.2 + 0.6 = 0.8, c: 0.8 -> all tie; ids order them
    assert [d for d, _ in cs.top(M3Weights())] == ["a", "b", "c"]
    top = cs.top(M3Weights(dense=1.0, sparse=1.0), limit=2)
    assert top == [("a", pytest.approx(2.2)), ("b", pytest.approx(1.5))]


# ------------------------------------------------------------------------- m3 through Milvus Lite


def _reference_m3(
    q: M3Embeddings, docs: M3Embeddings, ids: Sequence[str], depth: int, w: M3Weights
) -> list[list[tuple[str, float]]]:
    """Brute force: top-depth per field, union, exact scores from the original vectors, fused."""
    out = []
    for i in range(len(q)):
        d = docs.dense.astype(np.float64) @ q.dense[i].astype(np.float64)
        s = np.array([sparse_score(q.sparse[i], ds) for ds in docs.sparse])
        # a sparse ANN list holds only documents sharing a token with the query (score > 0)
        by_sparse = [j for j in np.argsort(-s, kind="stable")[:depth] if s[j] > 0]
        union = set(np.argsort(-d, kind="stable")[:depth]) | set(by_sparse)
        fused = sorted(
            ((ids[j], w.dense * d[j] + w.sparse * s[j]) for j in union), key=lambda t: (-t[1], t[0])
        )
        out.append(fused)
    return out


@pytest.fixture
def fake_collection(
    manager: CollectionManager, fake_encoder: FakeEncoder
) -> tuple[str, list[str], list[str], M3Embeddings]:
    texts = _corpus(60)
    ids = [f"doc{i:03d}" for i in range(len(texts))]
    manager.create_collection(
        "m3fake",
        spec=CollectionSpec(
            dense_dim=fake_encoder.dense_dim, model_name=fake_encoder.model_name, dense_index="FLAT"
        ),
    )
    emb = fake_encoder.encode_documents(texts)
    manager.upsert("m3fake", ids=ids, texts=texts, embeddings=emb)
    return "m3fake", ids, texts, emb


@pytest.mark.integration
def test_m3_matches_numpy_union_fusion_with_exact_fill_in(
    manager: CollectionManager,
    fake_encoder: FakeEncoder,
    fake_collection: tuple[str, list[str], list[str], M3Embeddings],
) -> None:
    name, ids, texts, docs = fake_collection
    queries = ["dense sparse fusion", "cat dog bread", "milvus query index score", "river"]
    depth = 5
    rr = M3Reranker(manager, name, fake_encoder, candidates=depth)
    q = fake_encoder.encode_queries(queries)
    sets = rr.candidate_sets(q)
    ref = _reference_m3(q, docs, ids, depth, M3Weights())
    filled = 0
    for cs, want in zip(sets, ref, strict=False):
        got = cs.top(M3Weights())
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        only_one = ~(cs.from_dense & cs.from_sparse)
        filled += int(only_one.sum())
    assert filled > 0, "the test needs candidates found by one list only"
    # a filled-in score is the exact one, not zero: compare with the original vectors
    text_of = dict(zip(ids, range(len(ids)), strict=False))
    for qi, cs in enumerate(sets):
        for j, doc in enumerate(cs.ids):
            k = text_of[str(doc)]
            assert cs.dense[j] == pytest.approx(float(docs.dense[k] @ q.dense[qi]), abs=1e-5)
            assert cs.sparse[j] == pytest.approx(sparse_score(q.sparse[qi], docs.sparse[k]), abs=1e-5)

    hits = rr.search_many(queries, limit=3)
    for hs, want in zip(hits, ref, strict=False):
        assert [h.id for h in hs] == [d for d, _ in want[:3]]
        assert hs[0].text == texts[text_of[str(hs[0].id)]]
        assert set(hs[0].fields) >= {"dense_score", "sparse_score"}
        assert hs[0].score == pytest.approx(hs[0].fields["dense_score"] + 0.3 * hs[0].fields["sparse_score"])
    mean = M3Reranker(manager, name, fake_encoder, candidates=depth, score_scale="mean").search(
        queries[0], limit=1
    )[0]
    assert mean.score == pytest.approx(hits[0][0].score / 1.3)


@pytest.mark.integration
def test_m3_all_refuses_an_encoder_without_colbert(
    manager: CollectionManager,
    fake_encoder: FakeEncoder,
    fake_collection: tuple[str, list[str], list[str], M3Embeddings],
) -> None:
    rr = M3Reranker(manager, fake_collection[0], fake_encoder, candidates=5)
    with pytest.raises(ConfigError, match="ColBERT"):
        rr.search("cat dog", mode="m3-all")
    with pytest.raises(ConfigError):
        rr.search("cat dog", mode="m4")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        rr.search_many("cat dog")


@pytest.mark.integration
def test_m3_all_with_stored_colbert_vectors_matches_numpy(
    manager: CollectionManager,
    fake_encoder: FakeEncoder,
    fake_collection: tuple[str, list[str], list[str], M3Embeddings],
) -> None:
    """doc_colbert= takes vectors from the caller's store; the fused score is the paper's sum."""
    name, ids, texts, docs = fake_collection
    rng = np.random.default_rng(3)

    def vecs(n: int) -> np.ndarray:
        v = rng.standard_normal((n, 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    store = {doc: vecs(4) for doc in ids}
    q_col = vecs(3)

    class WithColbert(FakeEncoder):
        def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
            e = super().encode_queries(texts)
            return M3Embeddings(dense=e.dense, sparse=e.sparse, colbert=[q_col for _ in texts])

    enc = WithColbert(dim=fake_encoder.dense_dim)
    asked: list[int] = []

    def doc_colbert(doc_ids: Sequence[Any], doc_texts: Sequence[str]) -> list[np.ndarray]:
        asked.append(len(doc_ids))
        assert all(texts[ids.index(d)] == t for d, t in zip(doc_ids, doc_texts, strict=False))
        return [store[d] for d in doc_ids]

    rr = M3Reranker(manager, name, enc, candidates=5, doc_colbert=doc_colbert, rerank_depth=4)
    hits = rr.search("dense sparse fusion", limit=4, mode="m3-all")
    assert asked == [4]
    m3_top4 = [
        d
        for d, _ in _reference_m3(enc.encode_queries(["dense sparse fusion"]), docs, ids, 5, M3Weights())[0][
            :4
        ]
    ]
    assert sorted(h.id for h in hits) == sorted(m3_top4)
    for h in hits:
        c = colbert_score(q_col, store[str(h.id)])
        assert h.fields["colbert_score"] == pytest.approx(c)
        assert h.score == pytest.approx(h.fields["dense_score"] + 0.3 * h.fields["sparse_score"] + c)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(ConfigError, match="rerank_depth"):
        rr.search("x", limit=5, mode="m3-all")


# ------------------------------------------------------------- the tiny checkpoint vs FlagEmbedding

TINY_DOCS = [
    "Milvus stores dense and sparse vectors side by side for hybrid search.",
    "BGE-M3 produces dense, lexical and multi-vector representations in one pass.",
    "Bread dough rises because yeast releases carbon dioxide.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "Reciprocal rank fusion combines ranked lists without looking at their scores.",
    "Le modèle encode des textes dans plus de cent langues.",
    "A learned sparse vector keeps one weight per token of the vocabulary.",
    "Mountains and rivers shape where people settle.",
    "ColBERT scores a passage by late interaction over token vectors.",
    "検索システムは文書をベクトルに変換します。",
    "Vector databases index embeddings for nearest neighbour search.",
    "Yeast, flour, water and salt are all that bread needs.",
]
TINY_QUERIES = [
    "how does hybrid vector search work?",
    "what makes bread rise",
    "late interaction token vectors",
]


@pytest.fixture(scope="module")
def flag_reference(tiny_checkpoint: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_checkpoint), use_fp16=False, devices="cpu", normalize_embeddings=True)


@pytest.mark.integration
def test_m3_and_m3_all_on_the_tiny_checkpoint_equal_flagembedding(
    manager: CollectionManager, tiny_embedder: Any, flag_reference: Any
) -> None:
    ids = [f"t{i:02d}" for i in range(len(TINY_DOCS))]
    manager.create_collection(
        "tiny",
        spec=CollectionSpec(
            dense_dim=tiny_embedder.dense_dim, model_name=tiny_embedder.model_name, dense_index="FLAT"
        ),
    )
    docs = tiny_embedder.encode_documents(TINY_DOCS)
    manager.upsert("tiny", ids=ids, texts=TINY_DOCS, embeddings=docs)
    text_of = dict(zip(ids, TINY_DOCS, strict=False))
    weights = [1.0, 0.3, 1.0]

    # m3 against a numpy brute force (4 candidates per field out of 12: the union needs fill-in)
    rr = M3Reranker(manager, "tiny", tiny_embedder, candidates=4, score_scale="sum")
    q = tiny_embedder.encode_queries(TINY_QUERIES)
    ref = _reference_m3(q, docs, ids, 4, M3Weights())
    for hits, want in zip(rr.search_many(TINY_QUERIES, limit=4, with_text=False), ref, strict=False):
        assert [h.id for h in hits] == [d for d, _ in want[:4]]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in want[:4]], atol=1e-5)

    # m3-all, FlagEmbedding's scale: compute_score(...)["colbert+sparse+dense"] pair by pair
    rr_all = M3Reranker(manager, "tiny", tiny_embedder, candidates=4, score_scale="mean")
    worst = 0.0
    for query, hits in zip(
        TINY_QUERIES, rr_all.search_many(TINY_QUERIES, limit=4, mode="m3-all", with_text=False), strict=False
    ):
        assert len(hits) == 4
        pairs = [(query, text_of[str(h.id)]) for h in hits]
        flag = flag_reference.compute_score(pairs, batch_size=1, weights_for_different_modes=weights)
        for h, want, c, d, s in zip(
            hits, flag["colbert+sparse+dense"], flag["colbert"], flag["dense"], flag["sparse"], strict=False
        ):
            worst = max(worst, abs(h.score - want))
            assert h.score == pytest.approx(want, abs=1e-4)
            assert h.fields["colbert_score"] == pytest.approx(c, abs=1e-4)
            assert h.fields["dense_score"] == pytest.approx(d, abs=1e-4)
            assert h.fields["sparse_score"] == pytest.approx(s, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert worst <= 1e-4

    # the paper's scale is the same ranking times the weight sum
    summed = M3Reranker(manager, "tiny", tiny_embedder, candidates=4).search(
        TINY_QUERIES[0], limit=3, mode="m3-all"
    )
    mean = rr_all.search(TINY_QUERIES[0], limit=3, mode="m3-all")
    assert [h.id for h in summed] == [h.id for h in mean]
    np.testing.assert_allclose([h.score for h in summed], [h.score * 2.3 for h in mean], rtol=1e-9)

"""Three legs (dense, learned sparse, Milvus BM25) on Milvus Lite: each leg alone, N-leg fusion against
references computed from the per-leg lists, engine and client fusion hit for hit, raw weighted sums,
paging far past 100 as slices of one ranking, group_by in fused order, analyzers per language, model
identity by fingerprint.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError, SchemaMismatchError
from milvus_m3.filters import F
from milvus_m3.fusion import dbsf, id_order, rrf, tiered, weighted
from milvus_m3.search import HybridSearcher
from milvus_m3.search.requests import bm25_request, dense_request, sparse_request
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration

N_DOCS = 400
N_PARENTS = 37
VOCAB = [f"t{i}" for i in range(60)]
QUERIES = ("t1 t2 t3 t5", "t7 t8 t1", "t20 t21 t2 t40")


def _corpus() -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(11)
    docs = []
    for i in range(N_DOCS):
        words = list(rng.choice(VOCAB, size=int(rng.integers(4, 12)), replace=True))
        docs.append((f"d{i:03d}", " ".join(words), f"p{i % N_PARENTS:02d}"))
    return docs


DOCS = _corpus()


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path_factory.mktemp("legs") / "legs.db"))
    try:
        yield m
    finally:
        m.close()


class NoisyEncoder(FakeEncoder):
    """FakeEncoder with each document's sparse weights scaled by its own factor in [1, 1.01): the word
    counts alone tie often, and Milvus orders tied hits in no fixed way (engine RRF ranks them so)."""

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        emb = super().encode_documents(texts)
        rng = np.random.default_rng(3)
        scale = 1.0 + 0.01 * rng.random(len(texts))
        sparse = [{k: v * float(f) for k, v in s.items()} for s, f in zip(emb.sparse, scale, strict=True)]
        return M3Embeddings(dense=emb.dense, sparse=sparse)


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return NoisyEncoder(dim=16)


@pytest.fixture(scope="module")
def docs(manager: CollectionManager, encoder: FakeEncoder) -> str:
    spec = CollectionSpec(dense_dim=16, model_name="fake/m3", dense_index="FLAT", chunked=True, bm25=True)
    manager.create_collection("legs", spec=spec)
    texts = [t for _, t, _ in DOCS]
    manager.upsert(
        "legs",
        ids=[d for d, _, _ in DOCS],
        texts=texts,
        embeddings=encoder.encode_documents(texts),
        parent_ids=[p for _, _, p in DOCS],
        chunk_indexes=[i // N_PARENTS for i in range(N_DOCS)],
    )
    return "legs"


@pytest.fixture(scope="module")
def searcher(manager: CollectionManager, docs: str, encoder: FakeEncoder) -> HybridSearcher:
    return HybridSearcher(manager, docs, encoder)


def _pairs(hits: Sequence[Any]) -> list[tuple[Any, float]]:
    return [(h.id, round(h.score, 5)) for h in hits]


def _leg_list(
    manager: CollectionManager, enc: FakeEncoder, leg: str, query: str, limit: int, *, by_id: bool = False
) -> list:
    q = enc.encode_queries([query])
    if leg == "dense":
        req = dense_request([q.dense[0]], limit=limit, index_kind="FLAT")
    elif leg == "sparse":
        req = sparse_request([q.sparse[0]], limit=limit)
    else:
        req = bm25_request([query], field="bm25", limit=limit)
    if by_id:  # read deep enough that no tie at the last place is cut where Milvus happened to cut it
        req = dataclasses.replace(req, limit=max(limit * 10, 200))
    res = manager.client.search("legs", output_fields=[], **req.search_kwargs())
    pairs = [(h["id"], float(h["distance"])) for h in res[0]]
    # as Milvus ranks it; by_id: one ranking, ties in id order, as the searcher gives a single leg's hits
    return sorted(pairs, key=lambda p: (-p[1], id_order(p[0])))[:limit] if by_id else pairs


def test_collection_records_and_checks_the_bm25_leg(manager: CollectionManager, docs: str) -> None:
    spec = manager.spec(docs)
    assert (spec.bm25, spec.bm25_analyzer, spec.bm25_k1, spec.bm25_b) == (True, "english", 1.2, 0.75)
    assert spec.legs == ("dense", "sparse", "bm25")
    assert "bm25" in manager.describe(docs).fields
    other = CollectionSpec(dense_dim=16, model_name="fake/m3", dense_index="FLAT", chunked=True, bm25=True)
    for change in ({"bm25_analyzer": "chinese"}, {"bm25_k1": 1.5}, {"bm25": False}):
        bad = CollectionSpec(**{**other.to_json(), "scalar_fields": (), **change})
        with pytest.raises(SchemaMismatchError, match=next(iter(change))):
            manager.create_collection(docs, spec=bad, exists_ok=True)


def test_default_legs_are_all_three_and_single_legs_are_raw(
    manager: CollectionManager, searcher: HybridSearcher, encoder: FakeEncoder
) -> None:
    assert searcher.legs == ("dense", "sparse", "bm25")
    for leg in ("dense", "sparse", "bm25"):
        for query in QUERIES:
            got = searcher.search(query, legs=(leg,), limit=20, output_fields=[])
            want = _leg_list(manager, encoder, leg, query, 20, by_id=True)
            assert [h.id for h in got] == [d for d, _ in want], leg
            assert [h.score for h in got] == pytest.approx([s for _, s in want], rel=1e-6)


@pytest.mark.parametrize(
    "legs, weights",
    [
        (("dense", "sparse", "bm25"), None),
        (("dense", "sparse", "bm25"), (1.0, 0.5, 0.8)),
        (("dense", "bm25"), None),
        (("sparse", "bm25"), (0.3, 1.0)),
    ],
)
def test_rrf_and_weighted_equal_references(
    manager: CollectionManager,
    searcher: HybridSearcher,
    encoder: FakeEncoder,
    legs: tuple[str, ...],
    weights: tuple[float, ...] | None,
) -> None:
    ws = weights or (1.0,) * len(legs)
    norms = {"dense": "arctan", "sparse": "arctan", "bm25": "bm25"}
    for query in QUERIES:
        lists = [_leg_list(manager, encoder, leg, query, 100) for leg in legs]  # each leg's top 100
        got = searcher.search(query, legs=legs, weights=weights, limit=30, output_fields=[])
        assert _pairs(got) == [(d, round(s, 5)) for d, s in rrf(lists, k=60, weights=ws, limit=30)]
        # hand-computed: the top hit's score is the sum of w / (60 + rank) over the lists holding it
        top = got[0].id
        hand = sum(
            w / (60 + [d for d, _ in x].index(top) + 1)
            for x, w in zip(lists, ws, strict=True)
            if top in dict(x)
        )
        assert got[0].score == pytest.approx(hand, rel=1e-9)
        got_w = searcher.search(query, legs=legs, weights=ws, ranker="weighted", limit=30, output_fields=[])
        ref_w = weighted(lists, ws, normalize=[norms[leg] for leg in legs], limit=30)  # type: ignore[misc]
        assert [h.id for h in got_w] == [d for d, _ in ref_w]
        assert [h.score for h in got_w] == pytest.approx([s for _, s in ref_w], abs=1e-5)


def test_engine_and_client_fusion_agree_hit_for_hit(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    # dense + sparse: BM25 scores of this corpus tie, and the engine ranks tied hits in its own order
    server = HybridSearcher(manager, docs, encoder, fusion="server", legs=("dense", "sparse"))
    client = HybridSearcher(manager, docs, encoder, fusion="client", legs=("dense", "sparse"))
    for ranker in ("rrf", "weighted"):
        a = server.search_batch(list(QUERIES), limit=25, ranker=ranker, output_fields=[])  # type: ignore[arg-type]
        b = client.search_batch(list(QUERIES), limit=25, ranker=ranker, output_fields=[])  # type: ignore[arg-type]
        assert [[h.id for h in x] for x in a] == [[h.id for h in x] for x in b], ranker
        for x, y in zip(a, b, strict=True):
            assert [h.score for h in x] == pytest.approx([h.score for h in y], abs=1e-5)


def test_lite_weighted_ranker_inverts_bm25_quirk_is_real(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    """Pins why a weighted fusion with a bm25 leg is computed here on Lite (caps.weighted_inverts_bm25)."""
    import math

    from milvus_m3.search.requests import weighted_ranker

    if not manager.capabilities.weighted_inverts_bm25:
        pytest.skip("engine maps BM25 scores the right way round")
    q = encoder.encode_queries([QUERIES[0]])
    reqs = [
        dense_request([q.dense[0]], limit=N_DOCS, index_kind="FLAT").ann_request(),
        bm25_request([QUERIES[0]], field="bm25", limit=N_DOCS).ann_request(),
    ]
    res = manager.client.hybrid_search(docs, reqs, weighted_ranker(1.0, 1.0), limit=3)
    d = dict(_leg_list(manager, encoder, "dense", QUERIES[0], N_DOCS))
    b = dict(_leg_list(manager, encoder, "bm25", QUERIES[0], N_DOCS))
    for h in res[0]:
        inverted = 0.5 + math.atan(d[h["id"]]) / math.pi + 1 - 2 * math.atan(b[h["id"]]) / math.pi
        assert h["distance"] == pytest.approx(inverted, abs=1e-5)


def test_raw_weighted_fusion_is_the_sum_of_raw_scores(
    manager: CollectionManager, searcher: HybridSearcher, encoder: FakeEncoder
) -> None:
    legs, ws = ("dense", "sparse", "bm25"), (1.0, 0.3, 0.5)
    for query in QUERIES:
        lists = [dict(_leg_list(manager, encoder, leg, query, 100)) for leg in legs]
        hits = searcher.search(
            query, ranker="weighted", weights=ws, norm_score=False, limit=40, output_fields=[]
        )
        for h in hits:
            assert h.score == pytest.approx(
                sum(w * x.get(h.id, 0.0) for w, x in zip(ws, lists, strict=True)), abs=1e-5
            )
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("ranker", ["rrf", "weighted", "dbsf"])
@pytest.mark.parametrize("legs", [("dense", "sparse", "bm25"), ("dense", "sparse")])
def test_pages_far_past_100_are_slices_of_one_ranking(
    searcher: HybridSearcher, ranker: str, legs: tuple[str, ...]
) -> None:
    query = QUERIES[0]
    full = searcher.search(query, legs=legs, ranker=ranker, limit=400, output_fields=[])  # type: ignore[arg-type]
    assert len(full) == 400 and len({h.id for h in full}) == 400
    pages: list[Any] = []
    for offset in range(0, 400, 25):
        pages += searcher.search(query, legs=legs, ranker=ranker, limit=25, offset=offset, output_fields=[])  # type: ignore[arg-type]
    assert _pairs(pages) == _pairs(full)
    # and it is fusion.tiered over each leg's top 100, 200, 400 (each searched at exactly that limit)
    ws = [1.0] * len(legs)
    norms = [{"dense": "arctan", "sparse": "arctan", "bm25": "bm25"}[leg] for leg in legs]
    fuse = (
        (lambda ls: rrf(ls, k=60)) if ranker == "rrf" else (lambda ls: weighted(ls, ws, normalize=norms))  # type: ignore[arg-type]
    )
    if ranker == "dbsf":
        fuse = lambda ls: dbsf(ls)  # noqa: E731
    tiers = [
        [_leg_list(searcher.manager, searcher.encoder, leg, query, c) for leg in legs]
        for c in (100, 200, 400)
    ]  # type: ignore[arg-type]
    assert _pairs(full) == [(d, round(x, 5)) for d, x in tiered(tiers, fuse)[:400]]
    # the first tier is the plain fusion of the top-100 lists
    top = searcher.search(query, legs=legs, ranker=ranker, limit=10, output_fields=[])  # type: ignore[arg-type]
    assert _pairs(top) == _pairs(full[:10])


@pytest.mark.parametrize(
    "legs, weights",
    [
        (("dense", "sparse", "bm25"), None),
        (("dense", "sparse"), (1.0, 0.3)),
        (("dense", "bm25"), (2.0, 0.5)),  # dbsf weights are any numbers >= 0
        (("sparse", "bm25"), None),
    ],
)
def test_dbsf_equals_fusion_dbsf_over_the_per_leg_lists(
    manager: CollectionManager,
    searcher: HybridSearcher,
    encoder: FakeEncoder,
    legs: tuple[str, ...],
    weights: tuple[float, ...] | None,
) -> None:
    for query in QUERIES:
        lists = [_leg_list(manager, encoder, leg, query, 100) for leg in legs]  # each leg's top 100
        got = searcher.search(query, legs=legs, weights=weights, ranker="dbsf", limit=30, output_fields=[])
        want = dbsf(lists, weights=weights, limit=30)
        assert [h.id for h in got] == [d for d, _ in want]
        assert [h.score for h in got] == pytest.approx([s for _, s in want], abs=1e-9)
        # by hand for the top hit: each leg's (s - mean + 3 sd) / (6 sd), sd with n - 1
        top, hand = got[0].id, 0.0
        for x, w in zip(lists, weights or (1.0,) * len(legs), strict=True):
            scores = np.array([s for _, s in x])
            if top in dict(x):
                mean, sd = scores.mean(), scores.std(ddof=1)
                hand += w * (dict(x)[top] - mean + 3 * sd) / (6 * sd)
        assert got[0].score == pytest.approx(hand, rel=1e-9)


def test_dbsf_is_fused_here_on_every_fusion_setting_and_server_fusion_refuses_it(
    manager: CollectionManager, docs: str, encoder: FakeEncoder, searcher: HybridSearcher
) -> None:
    want = searcher.search_batch(list(QUERIES), ranker="dbsf", limit=20, output_fields=[])
    client = HybridSearcher(manager, docs, encoder, fusion="client", ranker="dbsf")
    assert [_pairs(x) for x in client.search_batch(list(QUERIES), limit=20, output_fields=[])] == [
        _pairs(x) for x in want
    ]
    with pytest.raises(ConfigError, match="fusion='server' cannot run ranker 'dbsf'"):
        HybridSearcher(manager, docs, encoder, fusion="server", ranker="dbsf")
    server = HybridSearcher(manager, docs, encoder, fusion="server")
    with pytest.raises(ConfigError, match="hybrid_search has no such ranker"):
        server.search(QUERIES[0], ranker="dbsf")
    q = encoder.encode_queries([QUERIES[0]])
    with pytest.raises(ConfigError, match="fusion='server'"):
        server.search_embeddings(q, legs=("dense", "sparse"), ranker="dbsf")
    with pytest.raises(ConfigError, match="ranker must be one of rrf, weighted, dbsf"):
        searcher.search(QUERIES[0], ranker="rrf3")  # type: ignore[arg-type]


def test_dbsf_group_by_is_one_hit_per_parent_in_its_order(searcher: HybridSearcher) -> None:
    query = QUERIES[1]
    ranking = searcher.search(query, ranker="dbsf", limit=N_DOCS, output_fields=["parent_id"])
    first: dict[str, Any] = {}
    for h in ranking:
        first.setdefault(h.fields["parent_id"], h)
    pages = []
    for offset in (0, 10, 20, 30):
        pages += searcher.search(query, ranker="dbsf", limit=10, offset=offset, group_by="parent_id")
    assert [h.id for h in pages] == [h.id for h in first.values()][: len(pages)]
    assert len(pages) == N_PARENTS


def test_rrf_k_per_call_changes_the_ranking_as_computed(
    manager: CollectionManager, searcher: HybridSearcher, encoder: FakeEncoder
) -> None:
    legs = ("dense", "sparse")
    for query in QUERIES:
        lists = [_leg_list(manager, encoder, leg, query, 100) for leg in legs]
        for k in (1, 60, 1000):
            got = searcher.search(query, legs=legs, rrf_k=k, limit=20, output_fields=[])
            assert _pairs(got) == [(d, round(s, 5)) for d, s in rrf(lists, k=k, limit=20)]
            top = got[0].id
            hand = sum(1 / (k + [d for d, _ in x].index(top) + 1) for x in lists if top in dict(x))
            assert got[0].score == pytest.approx(hand, rel=1e-9)
    # the call's k, not the searcher's: k=1 and k=1000 rank differently here
    a = searcher.search(QUERIES[0], legs=legs, rrf_k=1, limit=20, output_fields=[])
    b = searcher.search(QUERIES[0], legs=legs, rrf_k=1000, limit=20, output_fields=[])
    assert [h.id for h in a] != [h.id for h in b]
    for bad in (0, 60.5, 16384):
        with pytest.raises(ConfigError, match="rrf_k must be an int"):
            searcher.search(QUERIES[0], rrf_k=bad)  # type: ignore[arg-type]


def test_group_by_is_one_hit_per_parent_in_fused_order(searcher: HybridSearcher) -> None:
    for query in QUERIES:
        ranking = searcher.search(query, limit=N_DOCS, output_fields=["parent_id"])
        first: dict[str, Any] = {}
        for h in ranking:
            first.setdefault(h.fields["parent_id"], h)
        want = list(first.values())
        pages = []
        for offset in (0, 10, 20, 30):
            pages += searcher.search(query, limit=10, offset=offset, group_by="parent_id")
        assert [h.id for h in pages] == [h.id for h in want][: len(pages)]
        assert len(pages) == N_PARENTS


def test_m3_takes_structured_filters(searcher: HybridSearcher) -> None:
    hits = searcher.search(QUERIES[0], mode="m3", limit=5, filter=F.eq("parent_id", "p03"))
    assert hits and all(h.fields["parent_id"] == "p03" for h in hits)


def test_empty_sparse_query_is_a_normal_query(
    manager: CollectionManager, docs: str, searcher: HybridSearcher, encoder: FakeEncoder
) -> None:
    q = encoder.encode_queries(["t1 t2"])
    empty = type(q)(dense=q.dense, sparse=[{}])
    hits = searcher.search_embeddings(empty, legs=("dense", "sparse"), limit=5, output_fields=[])[0]
    dense = searcher.search_embeddings(q, legs=("dense",), limit=5, output_fields=[])[0]
    assert [h.id for h in hits] == [h.id for h in dense]
    assert searcher.search_embeddings(empty, legs=("sparse",), limit=5)[0] == []


def test_bad_legs_and_weights_are_clear_errors(
    manager: CollectionManager, searcher: HybridSearcher, encoder: FakeEncoder
) -> None:
    with pytest.raises(ConfigError, match="unknown leg 'colbert'"):
        searcher.search("t1", legs=("colbert",))
    with pytest.raises(ConfigError, match="three numbers"):
        searcher.search("t1", weights=(1.0, 1.0))
    with pytest.raises(ConfigError, match="search_embeddings"):
        searcher.search_embeddings(encoder.encode_queries(["t1"]))
    manager.create_collection("plain", dense_dim=16, model_name="fake/m3")
    with pytest.raises(ConfigError, match="bm25=True"):
        HybridSearcher(manager, "plain", encoder, legs=("dense", "bm25"))


# --------------------------------------------------------------------- analyzers


LANG_DOCS = {
    "chinese": (["我们在北京大学学习计算机科学", "今天的天气非常好", "猫喜欢吃鱼"], "天气", 1),
    "jieba": (["ฉันชอบกินข้าวผัดกับไก่ทอด", "วันนี้อากาศดีมาก", "แมวชอบกินปลา"], "อากาศ", 1),
    "standard": (["أحب قراءة الكتب في المكتبة", "الطقس جميل اليوم", "القطة تحب السمك"], "الطقس", 1),
}


@pytest.mark.parametrize("analyzer", list(LANG_DOCS))
def test_recommended_analyzer_finds_a_query_word(
    manager: CollectionManager, encoder: FakeEncoder, analyzer: str
) -> None:
    """Chinese (chinese), Thai (jieba on Lite), Arabic (standard): a query word finds its passage."""
    texts, word, want = LANG_DOCS[analyzer]
    name = f"lang_{analyzer}"
    manager.create_collection(
        name,
        spec=CollectionSpec(dense_dim=16, model_name="fake/m3", bm25=True, bm25_analyzer=analyzer),  # type: ignore[arg-type]
    )
    manager.upsert(name, ids=["a", "b", "c"], texts=texts, embeddings=encoder.encode_documents(texts))
    hits = HybridSearcher(manager, name, encoder).search(word, legs=("bm25",), limit=3)
    assert hits[0].id == "abc"[want]
    if analyzer != "jieba":  # jieba reads Thai as characters: other passages share some
        assert len(hits) == 1
    english = f"lang_{analyzer}_english"
    manager.create_collection(english, spec=CollectionSpec(dense_dim=16, model_name="fake/m3", bm25=True))
    manager.upsert(english, ids=["a", "b", "c"], texts=texts, embeddings=encoder.encode_documents(texts))
    if analyzer != "standard":  # the default english analyzer cannot split Chinese or Thai
        assert HybridSearcher(manager, english, encoder).search(word, legs=("bm25",), limit=3) == []


@pytest.mark.parametrize("analyzer", ["icu", "lindera"])
def test_analyzer_the_engine_cannot_run_is_refused_at_create(
    manager: CollectionManager, analyzer: str
) -> None:
    spec = CollectionSpec(dense_dim=16, bm25=True, bm25_analyzer=analyzer)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{analyzer}.*cannot run on Milvus Lite.*jieba for Thai"):
        manager.create_collection(f"no_{analyzer}", spec=spec)
    assert not manager.has_collection(f"no_{analyzer}")
    with pytest.raises(ConfigError, match="bm25_analyzer must be one of"):
        CollectionSpec(dense_dim=16, bm25=True, bm25_analyzer="klingon")  # type: ignore[arg-type]


# --------------------------------------------------------------------- model identity


def test_model_identity_is_the_checkpoint_not_its_path(
    manager: CollectionManager, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from milvus_m3.embedder.checkpoint import model_fingerprint
    from milvus_m3.embedder.model import M3Embedder

    renamed = tmp_path / "my-local-copy"
    shutil.copytree(tiny_checkpoint, renamed)
    same_name = tmp_path / "other" / tiny_checkpoint.name
    shutil.copytree(tiny_checkpoint, same_name)
    import torch

    head = same_name / "sparse_linear.pt"
    state = torch.load(head, weights_only=True)
    state = {k: v + 0.01 for k, v in state.items()}  # another fine-tune: the sparse head differs
    torch.save(state, head)
    assert model_fingerprint(renamed) == model_fingerprint(tiny_checkpoint) != model_fingerprint(same_name)

    emb = M3Embedder(str(renamed), device="cpu")
    # a collection created without naming the model records it as unknown, not as BAAI/bge-m3
    info = manager.create_collection("unnamed", dense_dim=emb.dense_dim)
    assert info.model_name == ""
    HybridSearcher(manager, "unnamed", emb)  # accepted: dims agree, nothing else is known
    manager.create_collection("named", dense_dim=emb.dense_dim, model_fingerprint=emb.model_fingerprint)
    HybridSearcher(manager, "named", emb)
    HybridSearcher(manager, "named", M3Embedder(str(tiny_checkpoint), device="cpu"))  # same model, other path
    with pytest.raises(SchemaMismatchError, match="another model.*fingerprint"):
        HybridSearcher(manager, "named", M3Embedder(str(same_name), device="cpu"))

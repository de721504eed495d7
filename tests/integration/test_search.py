"""HybridSearcher on Milvus Lite: modes, paging, batching, grouping, filters, and two reference checks.

* congruence: Milvus's server-side fusion equals ``fusion.rrf`` / ``fusion.weighted`` applied to the
  dense-only and sparse-only candidate lists Milvus returns for the same query;
* exactness: with an exact (FLAT) index, dense and sparse rankings equal numpy brute force, and the
  hybrid ranking equals RRF of the two brute-force rankings (candidate lists cover the corpus).

Every collection lives in one module-scoped Milvus Lite file (Lite starts a process per client).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.errors import ConfigError, FilterError, InputError, SchemaMismatchError, SearchError
from milvus_m3.filters import F
from milvus_m3.fusion import rrf, weighted
from milvus_m3.search import MAX_TOPK, HybridSearcher
from milvus_m3.sparse import lexical_score
from milvus_m3.types import Hit, M3Embeddings
from tests.fakes import FakeEncoder

N_DOCS = 80
N_PARENTS = 10
QUERY_WORDS = ("w0", "w1", "w2", "w3")


def _words(*counts: int) -> str:
    return " ".join(w for w, c in zip(QUERY_WORDS, counts, strict=False) for _ in range(c))


# Query word counts chosen so that no two docs tie in sparse (or dense) score for these queries.
EXACT_QUERIES = (_words(7, 5, 4, 3), _words(3, 4, 5, 7), _words(6, 5, 4, 3))
QUERY = EXACT_QUERIES[0]
LANGS = ("en", "de", '" or id != "', "back\\slash", "new\nline", "{p0}", "ü日本🎉", "' or '1'='1")
SCIFACT = Path("/work/shared/data/scifact")


def _corpus() -> list[dict[str, Any]]:
    """Doc i holds query word j (base-3 digit j of i) times, plus filler and one word of its own."""
    rng = np.random.default_rng(7)
    docs = []
    for i in range(N_DOCS):
        words = [w for j, w in enumerate(QUERY_WORDS) for _ in range((i // 3**j) % 3)]
        words += [f"w{j}" for j in rng.choice(np.arange(4, 40), size=int(rng.integers(3, 7)), replace=False)]
        words.append(f"own{i}")
        rng.shuffle(words)
        docs.append(
            {
                "id": f"d{i:02d}",
                "text": " ".join(words),
                "lang": LANGS[i % len(LANGS)],
                "year": 2000 + i % 25,
                "parent": f"p{i % N_PARENTS}",
                "chunk": i // N_PARENTS,
                "metadata": {"n": i, "lang": LANGS[i % len(LANGS)], "even": i % 2 == 0},
            }
        )
    return docs


DOCS = _corpus()
BY_ID = {d["id"]: d for d in DOCS}


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path_factory.mktemp("search") / "search.db"))
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder(dim=16)


@pytest.fixture(scope="module")
def doc_embeddings(encoder: FakeEncoder) -> M3Embeddings:
    return encoder.encode_documents([d["text"] for d in DOCS])


@pytest.fixture(scope="module")
def docs(manager: CollectionManager, encoder: FakeEncoder, doc_embeddings: M3Embeddings) -> str:
    spec = CollectionSpec(
        dense_dim=encoder.dense_dim,
        model_name=encoder.model_name,
        dense_index="FLAT",
        chunked=True,
        scalar_fields=(ScalarField(name="lang", max_length=64), ScalarField(name="year", dtype="int64")),
    )
    manager.create_collection("docs", spec=spec)
    manager.upsert(
        "docs",
        ids=[d["id"] for d in DOCS],
        texts=[d["text"] for d in DOCS],
        embeddings=doc_embeddings,
        metadata=[d["metadata"] for d in DOCS],
        fields={"lang": [d["lang"] for d in DOCS], "year": [d["year"] for d in DOCS]},
        parent_ids=[d["parent"] for d in DOCS],
        chunk_indexes=[d["chunk"] for d in DOCS],
    )
    return "docs"


@pytest.fixture(scope="module")
def searcher(manager: CollectionManager, docs: str, encoder: FakeEncoder) -> HybridSearcher:
    return HybridSearcher(manager, docs, encoder)


# --------------------------------------------------------------------- helpers


def _pairs(hits: Sequence[Hit]) -> list[tuple[Any, float]]:
    return [(h.id, h.score) for h in hits]


def _ids(hits: Sequence[Hit]) -> list[Any]:
    return [h.id for h in hits]


def assert_valid_topk(
    got: Sequence[tuple[Any, float]], truth: Mapping[Any, float], k: int, tol: float
) -> None:
    """``got`` is a correct top-k of ``truth``: right scores at every rank, every id scored truly.

    Exact ties may come in any order, and a tie across the cut may pick any of the tied ids.
    """
    want = sorted(truth.values(), reverse=True)[:k]
    assert len(got) == len(want), (len(got), len(want))
    assert len({doc for doc, _ in got}) == len(got), "an id repeats"
    for rank, ((doc, score), best) in enumerate(zip(got, want, strict=False), 1):
        assert doc in truth, f"rank {rank}: {doc!r} should not be a hit"
        assert abs(truth[doc] - score) <= tol, f"rank {rank}: {doc!r} scored {score}, truly {truth[doc]}"
        assert abs(score - best) <= tol, f"rank {rank}: score {score}, the true rank-{rank} score is {best}"


def assert_same_ranking(
    got: Sequence[tuple[Any, float]], expected: Sequence[tuple[Any, float]], tol: float
) -> None:
    """Same ids in the same order and scores within ``tol``; only exactly tied ids may swap places."""
    assert len(got) == len(expected)
    expected_score = dict(expected)
    for rank, ((gid, gs), (eid, es)) in enumerate(zip(got, expected, strict=False), 1):
        assert abs(gs - es) <= tol, f"rank {rank}: {gs} vs {es}"
        if gid != eid:
            assert gid in expected_score and abs(expected_score[gid] - es) <= 1e-9, (
                f"rank {rank}: {gid!r} in place of {eid!r}, and they are not tied"
            )
    assert len({g for g, _ in got}) == len(got)


def _min_gap(scores: Sequence[float]) -> float:
    s = sorted(scores, reverse=True)
    return min((a - b for a, b in itertools.pairwise(s)), default=1.0)


# --------------------------------------------------------------------- modes, hits, paging, batching


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_a_doc_sharing_the_query_words_ranks_first_and_hits_are_filled(
    searcher: HybridSearcher, mode: str
) -> None:
    target = BY_ID["d42"]
    hits = searcher.search(target["text"], limit=5, mode=mode)  # type: ignore[arg-type]
    assert len(hits) == 5
    top = hits[0]
    assert top.id == "d42"
    assert top.text == target["text"]
    assert dict(top.metadata) == target["metadata"]
    assert dict(top.fields) == {
        "parent_id": "p2",
        "chunk_index": 4,
        "lang": target["lang"],
        "year": target["year"],
    }
    assert all(isinstance(h, Hit) and isinstance(h.score, float) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if mode == "dense":
        assert top.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_offset_pages_are_slices_of_a_longer_list(searcher: HybridSearcher, mode: str) -> None:
    full = searcher.search(QUERY, limit=20, mode=mode)  # type: ignore[arg-type]
    page2 = searcher.search(QUERY, limit=10, offset=10, mode=mode)  # type: ignore[arg-type]
    assert _ids(page2) == _ids(full[10:20])
    assert [h.score for h in page2] == pytest.approx([h.score for h in full[10:20]])


@pytest.mark.integration
@pytest.mark.parametrize(
    "mode, ranker", [("hybrid", "rrf"), ("hybrid", "weighted"), ("dense", "rrf"), ("sparse", "rrf")]
)
def test_batch_is_one_encode_call_and_equals_single_searches(
    searcher: HybridSearcher, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch, mode: str, ranker: str
) -> None:
    queries = [QUERY, BY_ID["d07"]["text"], "w5 w6 own3"]
    kw: dict[str, Any] = {"limit": 7, "mode": mode, "ranker": ranker}
    singles = [searcher.search(q, **kw) for q in queries]
    conn = searcher.manager.connection
    calls: list[str] = []
    real_call = conn.call

    sizes: list[int] = []

    def spy(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(what)
        sizes.append(len(kwargs.get("data") or kwargs.get("reqs", [None])[0].data))
        return real_call(what, fn, *args, **kwargs)

    monkeypatch.setattr(conn, "call", spy)
    encoder.calls.clear()
    batch = searcher.search_batch(queries, **kw)
    assert encoder.calls == [("queries", 3)]
    # one Milvus call for the whole batch; hybrid RRF on Milvus Lite is fused here from one dense and one
    # sparse search. A single leg reads deeper only for a query whose tie at the page's last place runs past
    # what was read (issue 27 item 5): those later calls carry only such queries.
    lite_rrf = mode == "hybrid" and ranker == "rrf" and searcher.manager.capabilities.is_lite
    first = 2 if lite_rrf else 1
    assert sizes[:first] == [3] * first
    assert all(size < 3 for size in sizes[first:])
    # equal, tied hits included: the searcher orders ties by id
    assert [_pairs(h) for h in batch] == [_pairs(h) for h in singles]
    assert searcher.search_batch([]) == []


@pytest.mark.integration
def test_lite_batch_rrf_quirk_is_real(searcher: HybridSearcher, encoder: FakeEncoder) -> None:
    """Pins the engine behaviour the searcher works around: if Lite fixes it, the workaround can go."""
    from pymilvus import AnnSearchRequest, RRFRanker

    if not searcher.manager.capabilities.is_lite:
        pytest.skip("Milvus Lite only")
    q = encoder.encode_queries([QUERY, BY_ID["d07"]["text"]])
    reqs = [
        AnnSearchRequest(data=list(q.dense), anns_field="dense", param={"metric_type": "IP"}, limit=20),
        AnnSearchRequest(data=q.sparse, anns_field="sparse", param={"metric_type": "IP"}, limit=20),
    ]
    res = searcher.manager.client.hybrid_search("docs", reqs, RRFRanker(60), limit=3)
    # d07's own text ranks d07 first in both lists: 2 / (60 + 1), but Lite counts query 1's 20 hits first
    assert res[1][0]["id"] == "d07"
    assert res[1][0]["distance"] == pytest.approx(2 / (60 + 20 + 1), abs=1e-6)
    fixed = searcher.search_batch(
        [QUERY, BY_ID["d07"]["text"]], limit=3, candidate_limit=20, output_fields=[]
    )
    assert fixed[1][0].id == "d07" and fixed[1][0].score == pytest.approx(2 / 61, abs=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_search_embeddings_equals_search_batch(
    searcher: HybridSearcher, encoder: FakeEncoder, mode: str
) -> None:
    queries = [QUERY, "w9 w10 own11"]
    a = searcher.search_batch(queries, limit=5, mode=mode)  # type: ignore[arg-type]
    b = searcher.search_embeddings(encoder.encode_queries(queries), limit=5, mode=mode)  # type: ignore[arg-type]
    assert [_pairs(x) for x in a] == [_pairs(x) for x in b]


@pytest.mark.integration
def test_output_fields(searcher: HybridSearcher) -> None:
    bare = searcher.search(QUERY, limit=3, output_fields=[])
    assert all(h.text is None and dict(h.metadata) == {} and dict(h.fields) == {} for h in bare)
    some = searcher.search(QUERY, limit=3, output_fields=["year"], mode="dense")
    assert all(set(h.fields) == {"year"} and h.text is None for h in some)
    with pytest.raises(ConfigError, match="not fields of collection"):
        searcher.search(QUERY, output_fields=["nope"])


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_group_by_returns_one_hit_per_parent_and_pages_over_groups(
    searcher: HybridSearcher, mode: str
) -> None:
    first = searcher.search(QUERY, limit=5, mode=mode, group_by="parent_id")  # type: ignore[arg-type]
    second = searcher.search(QUERY, limit=5, offset=5, mode=mode, group_by="parent_id")  # type: ignore[arg-type]
    parents = [h.fields["parent_id"] for h in first + second]
    assert len(parents) == len(set(parents)) == N_PARENTS
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    if mode != "hybrid":
        # one plain search: the best chunk of each parent, in the order of the ungrouped ranking
        ranking = searcher.search(QUERY, limit=N_DOCS, mode=mode, output_fields=["parent_id"])  # type: ignore[arg-type]
        best: dict[str, Hit] = {}
        for h in ranking:
            best.setdefault(h.fields["parent_id"], h)
        assert _ids(first + second) == _ids(list(best.values()))[: len(first + second)]


# --------------------------------------------------------------------- congruence with fusion.py


def _milvus_list(
    manager: CollectionManager, field: str, q: M3Embeddings, limit: int
) -> list[tuple[Any, float]]:
    """One plain pymilvus search on one field: the candidate list exactly as Milvus ranks it."""
    data = [q.dense[0]] if field == "dense" else [q.sparse[0]]
    params: dict[str, Any] = {
        "metric_type": "IP",
        "params": {"drop_ratio_search": 0.0} if field == "sparse" else {},
    }
    res = manager.client.search("docs", data=data, anns_field=field, limit=limit, search_params=params)
    return [(h["id"], float(h["distance"])) for h in res[0]]


@pytest.mark.integration
@pytest.mark.parametrize("query", [QUERY, "w4 w5 w5 w17 own8", "own1 own2 w3 w30"])
def test_milvus_rrf_equals_fusion_rrf_of_milvus_candidate_lists(
    searcher: HybridSearcher, encoder: FakeEncoder, query: str
) -> None:
    cand = 30
    q = encoder.encode_queries([query])
    dense = _milvus_list(searcher.manager, "dense", q, cand)
    sparse = _milvus_list(searcher.manager, "sparse", q, cand)
    expected = rrf([dense, sparse], k=60, limit=cand)
    got = _pairs(searcher.search(query, limit=cand, candidate_limit=cand, output_fields=[]))
    assert_same_ranking(got, expected, tol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.7, 0.3), (0.0, 1.0)])
def test_milvus_weighted_ranker_equals_fusion_weighted(
    searcher: HybridSearcher, encoder: FakeEncoder, weights: tuple[float, float]
) -> None:
    cand = 40
    q = encoder.encode_queries([QUERY])
    dense = _milvus_list(searcher.manager, "dense", q, cand)
    sparse = _milvus_list(searcher.manager, "sparse", q, cand)
    expected = weighted([dense, sparse], weights, normalize="arctan", limit=20)
    got = _pairs(
        searcher.search(
            QUERY, limit=20, ranker="weighted", weights=weights, candidate_limit=cand, output_fields=[]
        )
    )
    assert_same_ranking(got, expected, tol=1e-6)


# --------------------------------------------------------------------- exactness against brute force


def _brute_force(
    doc_emb: M3Embeddings, ids: Sequence[Any], q: M3Embeddings
) -> tuple[dict[Any, float], dict[Any, float]]:
    dense_scores = doc_emb.dense.astype(np.float64) @ q.dense[0].astype(np.float64)
    dense = {doc: float(s) for doc, s in zip(ids, dense_scores, strict=False)}
    sparse = {doc: lexical_score(q.sparse[0], vec) for doc, vec in zip(ids, doc_emb.sparse, strict=False)}
    return dense, {doc: s for doc, s in sparse.items() if s > 0}


def _ranking(scores: Mapping[Any, float]) -> list[tuple[Any, float]]:
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _check_exact(
    searcher: HybridSearcher,
    query: M3Embeddings,
    dense: dict[Any, float],
    sparse: dict[Any, float],
    tol: float,
) -> None:
    k = 10
    n = len(dense)
    got_dense = searcher.search_embeddings(query, mode="dense", limit=k, output_fields=[])[0]
    assert_valid_topk(_pairs(got_dense), dense, k, tol)
    got_sparse = searcher.search_embeddings(query, mode="sparse", limit=k, output_fields=[])[0]
    assert_valid_topk(_pairs(got_sparse), sparse, k, tol)
    fused = dict(rrf([_ranking(dense), _ranking(sparse)]))
    got_hybrid = searcher.search_embeddings(query, limit=k, candidate_limit=max(100, n), output_fields=[])[0]
    assert_valid_topk(_pairs(got_hybrid), fused, k, 1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("query", EXACT_QUERIES)
def test_exact_index_matches_numpy_brute_force(
    searcher: HybridSearcher, encoder: FakeEncoder, doc_embeddings: M3Embeddings, query: str
) -> None:
    q = encoder.encode_queries([query])
    dense, sparse = _brute_force(doc_embeddings, [d["id"] for d in DOCS], q)
    # the corpus is built so that neither ranking has near-ties: rank positions are well defined
    assert _min_gap(list(dense.values())) > 1e-5 and _min_gap(list(sparse.values())) > 1e-5
    _check_exact(searcher, q, dense, sparse, tol=1e-5)


@pytest.fixture(scope="module")
def scifact() -> tuple[list[str], list[str], list[str]]:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"{SCIFACT} is not present")
    ids, texts = [], []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append((row["title"] + ". " + row["text"])[:300])
            if len(ids) == 50:
                break
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(3), f, strict=False)]
    return ids, texts, queries


@pytest.mark.integration
def test_exact_index_matches_brute_force_over_flagembedding_vectors(
    manager: CollectionManager,
    tiny_embedder: Any,
    tiny_checkpoint: Path,
    scifact: tuple[list[str], list[str], list[str]],
) -> None:
    from FlagEmbedding import BGEM3FlagModel

    ids, texts, queries = scifact
    spec = CollectionSpec(
        dense_dim=tiny_embedder.dense_dim, model_name=tiny_embedder.model_name, dense_index="FLAT"
    )
    manager.create_collection("scifact_tiny", spec=spec)
    manager.upsert("scifact_tiny", ids=ids, texts=texts, embeddings=tiny_embedder.encode_documents(texts))
    real = HybridSearcher(manager, "scifact_tiny", tiny_embedder)

    flag = BGEM3FlagModel(str(tiny_checkpoint), use_fp16=False, devices="cpu")

    def flag_encode(batch: list[str], max_length: int) -> M3Embeddings:
        out = flag.encode(batch, max_length=max_length, return_dense=True, return_sparse=True)
        return M3Embeddings(
            dense=np.asarray(out["dense_vecs"], dtype=np.float32).reshape(len(batch), -1),
            sparse=[
                {int(t): float(w) for t, w in lw.items() if float(w) > 0} for lw in out["lexical_weights"]
            ],
        )

    ref_docs = flag_encode(texts, 8192)
    for query in queries:
        q_ref = flag_encode([query], 512)
        dense, sparse = _brute_force(ref_docs, ids, q_ref)
        assert sparse, "the tiny model gives this query no lexical overlap with the corpus"
        # Milvus ranks the collection (stored from M3Embedder) for the query as M3Embedder encodes it
        q_ours = tiny_embedder.encode_queries([query])
        _check_exact(real, q_ours, dense, sparse, tol=1e-4)
        hits = real.search(query, limit=5)
        assert _ids(hits) == _ids(real.search_embeddings(q_ours, limit=5)[0])


# --------------------------------------------------------------------- filters


def _matching(pred: Any) -> set[str]:
    return {d["id"] for d in DOCS if pred(d)}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense"])
@pytest.mark.parametrize("lang", LANGS)
def test_hostile_filter_values_give_exactly_the_honest_rows(
    searcher: HybridSearcher, mode: str, lang: str
) -> None:
    # FLAT dense search with limit >= corpus returns every matching row, and hybrid's union covers it
    for flt in (F.eq("lang", lang), F.eq("metadata.lang", lang), [F.ne("lang", lang), "year >= 2010"]):
        hits = searcher.search(QUERY, limit=N_DOCS, candidate_limit=100, filter=flt, mode=mode)  # type: ignore[arg-type]
        if isinstance(flt, list):
            expected = _matching(lambda d: d["lang"] != lang and d["year"] >= 2010)
        else:
            expected = _matching(lambda d: d["lang"] == lang)
        assert set(_ids(hits)) == expected, (flt, lang)


@pytest.mark.integration
def test_raw_and_structured_filters(searcher: HybridSearcher) -> None:
    hits = searcher.search(
        QUERY, limit=N_DOCS, filter='year >= 2020 and metadata["even"] == true', mode="dense"
    )
    assert set(_ids(hits)) == _matching(lambda d: d["year"] >= 2020 and d["metadata"]["even"])
    flt = [F.in_("parent_id", ["p1", "p3"]), F.lt("chunk_index", 4), F.prefix("text", "w")]
    hits = searcher.search(QUERY, limit=N_DOCS, filter=flt, mode="dense")
    assert set(_ids(hits)) == _matching(
        lambda d: d["parent"] in ("p1", "p3") and d["chunk"] < 4 and d["text"].startswith("w")
    )
    nothing = searcher.search(QUERY, limit=10, filter=F.eq("lang", "xx"))
    assert nothing == []


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_an_expression_the_engine_rejects_is_a_filter_error_not_no_hits(
    searcher: HybridSearcher, mode: str
) -> None:
    with pytest.raises(FilterError, match="engine rejected the filter") as info:
        searcher.search(QUERY, filter="nosuchfield == 3", mode=mode)  # type: ignore[arg-type]
    assert "nosuchfield" in str(info.value)
    with pytest.raises(FilterError, match="engine rejected the filter"):
        searcher.search(QUERY, filter="year > 3 and", mode=mode)  # type: ignore[arg-type]


@pytest.mark.integration
def test_a_missing_result_list_is_an_error(searcher: HybridSearcher, monkeypatch: pytest.MonkeyPatch) -> None:
    # What Milvus Lite 2.5.1 does when a hybrid search's filter fails inside the engine.
    monkeypatch.setattr(searcher.manager.connection, "call", lambda *a, **k: [])
    with pytest.raises(FilterError, match="returned 0 result lists for 1 queries"):
        searcher.search(QUERY, filter=F.eq("lang", "en"))
    with pytest.raises(SearchError, match="returned 0 result lists for 2 queries") as info:
        searcher.search_batch([QUERY, QUERY])
    assert not isinstance(info.value, FilterError)


@pytest.mark.integration
def test_unchecked_filters_are_refused_before_they_reach_the_engine(searcher: HybridSearcher) -> None:
    with pytest.raises(FilterError, match="no filterable field 'nosuch'"):
        searcher.search(QUERY, filter=F.eq("nosuch", "{x}"))
    with pytest.raises(FilterError, match="int64"):
        searcher.search(QUERY, filter=F.eq("year", "2020"))
    with pytest.raises(FilterError, match="brace"):
        searcher.search(QUERY, filter='lang == "{p0}"')  # Lite: use F.eq instead (tested above)


@pytest.mark.integration
def test_hybrid_hits_with_quotes_in_their_ids_get_their_own_fields(
    manager: CollectionManager, encoder: FakeEncoder
) -> None:
    manager.create_collection("quoted", dense_dim=encoder.dense_dim, model_name=encoder.model_name)
    ids = ['say "hi"', "plain", '""', 'a"b"c']
    texts = [f"w1 w2 row{i} " + "w3 " * i for i in range(len(ids))]
    manager.upsert(
        "quoted",
        ids=ids,
        texts=texts,
        embeddings=encoder.encode_documents(texts),
        metadata=[{"i": i} for i in range(len(ids))],
    )
    s = HybridSearcher(manager, "quoted", encoder)
    for query in ("w1 w2 w3", "row1", "row4 w3"):
        hits = s.search(query, limit=5)
        assert sorted(_ids(hits)) == sorted(ids)
        for h in hits:
            i = ids.index(h.id)
            assert h.text == texts[i] and dict(h.metadata) == {"i": i}, h.id
    # Milvus Lite 2.5 mishandles single quotes and backslashes in ids (wrong rows, a crashed engine):
    # the manager refuses them there, naming the row, before anything is written.
    bad = ["ok", "it's"]
    with pytest.raises(InputError, match=r"row 1: id \"it's\" holds a single quote"):
        manager.upsert("quoted", ids=bad, texts=texts[:2], embeddings=encoder.encode_documents(texts[:2]))
    assert manager.count("quoted") == len(ids)


# --------------------------------------------------------------------- model checks and validation


@pytest.mark.integration
def test_a_collection_built_for_another_model_or_dim_is_refused(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    manager.create_collection("small", dense_dim=8, model_name=encoder.model_name)
    with pytest.raises(SchemaMismatchError, match="dense dim 8"):
        HybridSearcher(manager, "small", encoder)
    with pytest.raises(SchemaMismatchError, match="built with model"):
        HybridSearcher(manager, docs, FakeEncoder(dim=16, model_name="other/model"))
    unchecked = HybridSearcher(manager, "small", encoder, check=False)
    with pytest.raises(InputError, match="dim 16.*dense dim 8"):
        unchecked.search_embeddings(encoder.encode_queries(["w1"]))


@pytest.mark.integration
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit": 0}, "limit must be an int >= 1"),
        ({"limit": "10"}, "limit must be an int"),
        ({"limit": True}, "limit must be an int"),
        ({"offset": -1}, "offset must be an int >= 0"),
        ({"limit": 10, "offset": MAX_TOPK}, "at most 16384"),
        ({"mode": "bm25"}, "mode must be one of"),
        ({"ranker": "max"}, "ranker must be"),
        ({"weights": (1.0, 2.0)}, r"in \[0, 1\]"),
        ({"weights": (0.5,)}, "two numbers"),
        ({"weights": (float("nan"), 1.0)}, "dense weight"),
        ({"weights": (0, 0)}, "both 0"),
        ({"ranker": "dbsf", "weights": (-1.0, 1.0)}, "finite numbers >= 0"),
        ({"rrf_k": 0}, "rrf_k must be an int"),
        ({"rrf_k": 60.0}, "rrf_k must be an int"),
        (
            {"limit": 20, "offset": 5, "candidate_limit": 10},
            "candidate_limit 10 is smaller than offset \\+ limit = 25",
        ),
        ({"candidate_limit": MAX_TOPK + 1}, "cap"),
        ({"candidate_limit": 0}, "candidate_limit must be"),
        ({"group_by": "metadata"}, "group_by='metadata'"),
        ({"group_by": "nope"}, "choose from"),
        ({"output_fields": "text"}, "list of field names"),
        ({"filter": 3}, "raw expression string, a Filter"),
    ],
)
def test_bad_arguments_are_clear_errors(searcher: HybridSearcher, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ConfigError, FilterError), match=match):
        searcher.search(QUERY, **kwargs)


@pytest.mark.integration
def test_bad_queries_and_constructor_arguments(
    manager: CollectionManager, docs: str, searcher: HybridSearcher
) -> None:
    for bad in ("", "   "):
        with pytest.raises(InputError, match="empty"):
            searcher.search(bad)
    with pytest.raises(InputError, match="must be a string"):
        searcher.search(["w1"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="wrap it"):
        searcher.search_batch("w1")
    with pytest.raises(InputError, match="query 1 is a int"):
        searcher.search_batch(["w1", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="M3Embeddings"):
        searcher.search_embeddings([[0.1] * 16])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no encoder"):
        HybridSearcher(manager, docs).search("w1")
    with pytest.raises(ConfigError, match="rrf_k"):
        HybridSearcher(manager, docs, rrf_k=0)
    with pytest.raises(ConfigError, match="inner parameters"):
        HybridSearcher(manager, docs, dense_params={"metric_type": "L2"})
    with pytest.raises(ConfigError, match="mode must be"):
        HybridSearcher(manager, docs, mode="fuzzy")  # type: ignore[arg-type]
    assert "docs" in repr(searcher)


@pytest.mark.integration
def test_defaults_set_on_the_searcher_apply_to_every_call(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    dense_only = HybridSearcher(manager, docs, encoder, mode="dense")
    base = HybridSearcher(manager, docs, encoder)
    assert _pairs(dense_only.search(QUERY, limit=5)) == _pairs(base.search(QUERY, limit=5, mode="dense"))
    w = HybridSearcher(manager, docs, encoder, ranker="weighted", weights=(0.7, 0.3), candidate_limit=40)
    assert _pairs(w.search(QUERY, limit=5)) == _pairs(
        base.search(QUERY, limit=5, ranker="weighted", weights=(0.7, 0.3), candidate_limit=40)
    )


# --------------------------------------------------------------------- client-side m3 mode


@pytest.mark.integration
def test_m3_mode_equals_brute_force_raw_score_fusion(
    searcher: HybridSearcher, encoder: FakeEncoder, doc_embeddings: M3Embeddings
) -> None:
    """Mode m3 ranks by dense + 0.3 x sparse raw scores; with complete candidate lists that is exact."""
    ids = [d["id"] for d in DOCS]
    for query in ("w1 w2 w3", "row1 w3", "lang year w2"):
        q = encoder.encode_queries([query])
        dense = doc_embeddings.dense @ q.dense[0]
        sparse = np.array([lexical_score(q.sparse[0], s) for s in doc_embeddings.sparse])
        fused = dense + 0.3 * sparse
        order = sorted(range(len(ids)), key=lambda i: (-fused[i], ids[i]))[:5]
        hits = searcher.search(query, limit=5, mode="m3", candidate_limit=len(ids))
        assert _ids(hits) == [ids[i] for i in order]
        for h, i in zip(hits, order, strict=False):
            assert h.score == pytest.approx(float(fused[i]), abs=1e-5)
        page2 = searcher.search(query, limit=2, offset=3, mode="m3", candidate_limit=len(ids))
        assert _ids(page2) == [ids[i] for i in order[3:5]]
        pre = searcher.search_embeddings(q, limit=5, mode="m3", candidate_limit=len(ids))[0]
        assert _ids(pre) == _ids(hits)
    with pytest.raises(ConfigError, match="group_by is not available"):
        searcher.search("w1", mode="m3", group_by="parent_id")


@pytest.mark.integration
def test_client_side_rrf_equals_the_engines_rrf(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    """On Milvus Lite hybrid RRF is fused here by default; it must equal Milvus's own RRFRanker."""
    client_side = HybridSearcher(manager, docs, encoder)  # fusion="auto": client-side on Lite
    engine = HybridSearcher(manager, docs, encoder, fusion="server")
    assert client_side._runner.client_rrf and not engine._runner.client_rrf
    queries = ["w1 w2 w3", "row1 w3", "lang year w2", "w3"]
    for kw in (
        {},
        {"offset": 3, "limit": 4},
        {"filter": F.eq("lang", "en")},
        {"candidate_limit": 7, "limit": 7},
    ):
        for q in queries:
            a = client_side.search(q, **kw)  # type: ignore[arg-type]
            b = engine.search(q, **kw)  # type: ignore[arg-type]
            assert _ids(a) == _ids(b), (q, kw)
            for x, y in zip(a, b, strict=False):
                assert x.score == pytest.approx(y.score, abs=1e-6)
                assert (x.text, dict(x.metadata), dict(x.fields)) == (
                    y.text,
                    dict(y.metadata),
                    dict(y.fields),
                )
        batch = client_side.search_batch(queries, **kw)  # type: ignore[arg-type]
        assert [_ids(h) for h in batch] == [_ids(engine.search(q, **kw)) for q in queries]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fusion must be"):
        HybridSearcher(manager, docs, encoder, fusion="nowhere")  # type: ignore[arg-type]


@pytest.mark.integration
def test_close_shuts_the_leg_pool_and_a_closed_searcher_refuses_searches(
    manager: CollectionManager, docs: str, encoder: FakeEncoder
) -> None:
    """The legs of a client-fused search go out from a thread pool; close() (and the end of a with
    block) shuts it, twice is fine, and a closed searcher refuses every search method."""
    import threading

    before = set(threading.enumerate())
    with HybridSearcher(manager, docs, encoder) as searcher:  # client-side fusion on Lite: 2 legs at once
        assert searcher.search("w1 w2", limit=3) and not searcher.closed
        pool = [t for t in set(threading.enumerate()) - before if t.name.startswith("milvus-m3-search")]
        assert pool
    assert searcher.closed and not any(t.is_alive() for t in pool)
    searcher.close()  # idempotent
    q = encoder.encode_queries(["w1"])
    for call in (
        lambda: searcher.search("w1"),
        lambda: searcher.search_batch(["w1"]),
        lambda: searcher.search_embeddings(q),
    ):
        with pytest.raises(SearchError, match="closed .*create a new one"):
            call()


@pytest.mark.integration
def test_an_unknown_option_is_a_config_error_naming_the_options(
    manager: CollectionManager, docs: str, searcher: HybridSearcher
) -> None:
    with pytest.raises(ConfigError, match="unknown search option limt; the options are: limit, offset"):
        searcher.search("w1", limt=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="unknown search option reranker"):
        searcher.search_embeddings(searcher.encoder.encode_queries(["w1"]), reranker=None)  # type: ignore[union-attr, call-arg]
    with pytest.raises(ConfigError, match="unknown searcher option moed; the options are: mode, ranker"):
        HybridSearcher(manager, docs, moed="dense")  # type: ignore[call-arg]


@pytest.mark.integration
def test_modes_m3_reuse_one_m3_reranker(
    manager: CollectionManager, docs: str, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One M3Reranker per searcher, built on first use, serves every m3 call (texts or vectors, any
    depth); each call gives it its own candidate depth."""
    from milvus_m3.search.rerank import M3Reranker

    served: list[tuple[int, int | None]] = []
    built: list[int] = []
    search_many = M3Reranker.search_many
    init = M3Reranker.__init__

    def counting_init(self: M3Reranker, *args: Any, **kwargs: Any) -> None:
        built.append(id(self))
        init(self, *args, **kwargs)

    def recording(self: M3Reranker, *args: Any, **kwargs: Any) -> list[list[Hit]]:
        served.append((id(self), kwargs.get("candidates")))
        return search_many(self, *args, **kwargs)

    monkeypatch.setattr(M3Reranker, "__init__", counting_init)
    monkeypatch.setattr(M3Reranker, "search_many", recording)
    searcher = HybridSearcher(manager, docs, encoder, mode="m3")
    assert not built  # lazily
    first = searcher.search("w1 w2", limit=3)
    assert searcher.search("w1 w2", limit=3) == first
    searcher.search_batch(["w1", "w3 w2"], limit=2, candidate_limit=20)
    searcher.search_embeddings(encoder.encode_queries(["w1"]), limit=2)
    assert len(built) == 1 and len(served) == 4
    assert {i for i, _ in served} == set(built)
    assert [c for _, c in served] == [100, 100, 20, 100]

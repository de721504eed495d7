"""Evaluation: BEIR loader, metrics against hand-computed cases, cache, and the mode runner end to end
on a tiny BEIR dataset written by the test (FakeEncoder, Milvus Lite)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from milvus_m3.cli.eval import build_eval_parser, run_eval_cli
from milvus_m3.collection.manager import CollectionManager
from milvus_m3.errors import ConfigError, InputError
from milvus_m3.evaluate import (
    BM25_FIELD,
    CachedEncoder,
    EvalConfig,
    evaluate_run,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    rank_run,
    recall_at_k,
    run_evaluation,
)
from milvus_m3.search.rerank import M3Weights, sparse_score
from tests.fakes import FakeEncoder

# ------------------------------------------------------------------------------------------- metrics


def test_ndcg_by_hand() -> None:
    rels = {"b": 1, "c": 2}
    # DCG = 0/log2(2) + 1/log2(3) + 2/log2(4); ideal = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / 2
    ideal = 2 + 1 / math.log2(3)
    assert ndcg_at_k(["a", "b", "c"], rels, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "b", "c"], rels, 10) == pytest.approx(0.61991, abs=1e-5)
    assert ndcg_at_k(["c", "b"], rels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b", "c"], rels, 1) == 0.0
    # the ideal ranking uses every judged document, retrieved or not
    assert ndcg_at_k(["b"], rels, 10) == pytest.approx(1 / ideal)
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0
    assert ndcg_at_k([], rels, 10) == 0.0


def test_recall_and_mrr_by_hand() -> None:
    rels = {"b": 1, "c": 1, "d": 1, "z": 0}
    assert recall_at_k(["a", "b", "c"], rels, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c", "z"], rels, 100) == pytest.approx(2 / 3)
    assert mrr_at_k(["a", "z", "c"], rels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["a", "z", "c"], rels, 2) == 0.0
    assert mrr_at_k(["d"], rels, 10) == 1.0
    for fn in (ndcg_at_k, recall_at_k, mrr_at_k):
        with pytest.raises(ConfigError):
            fn(["a"], rels, 0)


def test_rank_run_breaks_ties_like_trec_eval() -> None:
    assert rank_run([("a", 1.0), ("b", 1.0), ("c", 2.0), ("a", 0.5)]) == ["c", "b", "a"]


def test_evaluate_run_means_over_judged_queries() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d9": 0}, "q4": {"d4": 1}}
    run = {
        "q1": [("d1", 3.0), ("d2", 2.0)],  # ndcg 1, recall 1, mrr 1
        "q2": [("d1", 3.0), ("d3", 2.0)],  # ndcg (1/log2 3)/(1 + 1/log2 3), recall .5, mrr .5
        # q3 has no relevant document: not counted; q4 has no results: counts as 0
    }
    got = evaluate_run(run, qrels)
    n2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got == {
        "ndcg@10": pytest.approx((1 + n2 + 0) / 3),
        "recall@100": pytest.approx((1 + 0.5 + 0) / 3),
        "mrr@10": pytest.approx((1 + 0.5 + 0) / 3),
    }
    # a document with the query's own id is dropped on request (BEIR's ArguAna option)
    assert (
        evaluate_run({"q": [("q", 9.0), ("a", 1.0)]}, {"q": {"a": 1}}, ignore_identical_ids=True)["mrr@10"]
        == 1.0
    )
    assert evaluate_run({"q": [("q", 9.0), ("a", 1.0)]}, {"q": {"a": 1}})["mrr@10"] == 0.5
    with pytest.raises(InputError):
        evaluate_run({}, {"q": {"a": 0}})


# ------------------------------------------------------------------------------- BEIR files

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "omicron",
    "sigma",
    "tau",
    "upsilon",
    "omega",
]


def write_beir(root: Path, n_docs: int = 40, n_queries: int = 12, seed: int = 1) -> Path:
    """A tiny BEIR dataset: each query shares words with its relevant documents."""
    rng = np.random.default_rng(seed)
    (root / "qrels").mkdir(parents=True)
    docs = []
    for i in range(n_docs):
        words = rng.choice(WORDS, size=6)
        docs.append(
            {"_id": f"d{i}", "title": f"Title {words[0]}", "text": " ".join(words[1:]), "metadata": {}}
        )
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    queries, test, train = [], ["query-id\tcorpus-id\tscore"], ["query-id\tcorpus-id\tscore"]
    for j in range(n_queries):
        target = docs[int(rng.integers(n_docs))]
        words = (target["title"] + " " + target["text"]).split()
        queries.append({"_id": f"q{j}", "text": " ".join(rng.choice(words[1:], size=3)), "metadata": {}})
        (test if j % 2 == 0 else train).append(f"q{j}\t{target['_id']}\t1")
    queries.append({"_id": "unjudged", "text": "omega", "metadata": {}})
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("\n".join(test) + "\n", encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
    return root


def test_load_beir(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "tiny")
    ds = load_beir(root)
    assert ds.name == "tiny" and ds.split == "test"
    assert len(ds.doc_ids) == 40 and ds.doc_texts[0].startswith("Title ")
    assert ds.query_ids == tuple(f"q{j}" for j in range(0, 12, 2))  # only judged queries, file order
    assert ds.qrels["q0"] and all(v == 1 for r in ds.qrels.values() for v in r.values())
    assert "unjudged" not in ds.query_ids
    small = load_beir(root, max_docs=3)
    assert set(small.doc_ids) >= {d for r in ds.qrels.values() for d in r} and len(small.doc_ids) < 40
    with pytest.raises(ConfigError, match="qrels/dev.tsv"):
        load_beir(root, split="dev")
    (root / "qrels" / "bad.tsv").write_text("q0\td1\n", encoding="utf-8")
    with pytest.raises(InputError):
        load_beir(root, split="bad")
    (root / "qrels" / "ghost.tsv").write_text("nobody\td1\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match="lacks"):
        load_beir(root, split="ghost")


def test_cached_encoder_reuses_chunks(tmp_path: Path) -> None:
    fake = FakeEncoder(dim=8)
    cache = CachedEncoder(fake, tmp_path / "cache", chunk_size=3)
    texts = [f"text number {i} alpha" for i in range(7)]
    first = cache.encode_documents(texts)
    assert fake.calls == [("documents", 3), ("documents", 3), ("documents", 1)]
    again = CachedEncoder(fake, tmp_path / "cache", chunk_size=3).encode_documents(texts)
    assert len(fake.calls) == 3  # all from the cache
    np.testing.assert_array_equal(first.dense, again.dense)
    assert [dict(s) for s in again.sparse] == [
        {k: pytest.approx(v) for k, v in s.items()} for s in first.sparse
    ]
    assert again.token_counts == first.token_counts
    cache.encode_queries(texts[:2])  # another kind: another key
    assert fake.calls[-1] == ("queries", 2)
    with pytest.raises(InputError):
        cache.encode_documents("one string")


# --------------------------------------------------------------------------------- the runner


@pytest.mark.integration
def test_runner_end_to_end_on_a_tiny_beir_dataset(tmp_path: Path, manager: CollectionManager) -> None:
    root = write_beir(tmp_path / "tiny")
    ds = load_beir(root)
    train = load_beir(root, split="train")
    enc = FakeEncoder(dim=16)
    config = EvalConfig(limit=20, candidates=20, recall_k=20, tune_grid=(0.1, 1.0))
    report = run_evaluation(
        ds, enc, manager, collection="tiny_eval", config=config, tune_on=train, command="pytest"
    )
    modes = [r.mode for r in report.results]
    assert modes == ["dense", "sparse", "bm25", "rrf", "weighted", "rrf3", "m3", "m3-tuned"]
    assert "m3-all" in report.skipped and "ColBERT" in report.skipped["m3-all"]
    assert BM25_FIELD in manager.describe("tiny_eval").fields
    for r in report.results:
        assert set(r.metrics) == {"ndcg@10", "recall@20", "mrr@10"}
        assert all(0.0 <= v <= 1.0 for v in r.metrics.values())
    # queries are built from their target's words: every mode finds something
    assert min(r.metrics["recall@20"] for r in report.results) > 0.5

    # dense through Milvus (FLAT) equals a numpy brute force
    docs = enc.encode_documents(list(ds.doc_texts))
    q = enc.encode_queries(list(ds.query_texts))
    sims = q.dense @ docs.dense.T
    brute = {
        qid: [(ds.doc_ids[j], float(sims[i, j])) for j in range(len(ds.doc_ids))]
        for i, qid in enumerate(ds.query_ids)
    }
    want = evaluate_run(brute, ds.qrels, recall_k=20)
    assert report.result("dense").metrics == pytest.approx(want, abs=1e-9)
    # m3 equals a numpy fusion over the union of both top-20 lists (exact fill-in)
    w = M3Weights()
    fused = {}
    for i, qid in enumerate(ds.query_ids):
        s = np.array([sparse_score(q.sparse[i], d) for d in docs.sparse])
        top_d = set(np.argsort(-sims[i])[:20])
        top_s = {j for j in np.argsort(-s)[:20] if s[j] > 0}
        fused[qid] = [
            (ds.doc_ids[j], w.dense * float(sims[i, j]) + w.sparse * float(s[j])) for j in top_d | top_s
        ]
    assert report.result("m3").metrics == pytest.approx(evaluate_run(fused, ds.qrels, recall_k=20), abs=1e-9)
    assert "w_sparse=" in report.result("m3-tuned").note

    have_plot = importlib.util.find_spec("matplotlib") is not None
    paths = report.save(tmp_path / "out", "tiny", plot=have_plot)
    assert [p.name for p in paths] == ["tiny.md", "tiny.json", "tiny.png"][: 3 if have_plot else 2]
    if have_plot:
        assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths[0].read_text()
    assert "| dense |" in md and "nDCG@10" in md and "pytest" in md
    data = json.loads(paths[1].read_text())
    assert data["results"][0]["mode"] == "dense" and data["n_queries"] == len(ds.query_ids)

    # a second run reuses the filled collection; a mismatched one is refused
    again = run_evaluation(
        ds,
        enc,
        manager,
        collection="tiny_eval",
        config=EvalConfig(modes=("dense",), limit=20, candidates=20, recall_k=20),
    )
    assert again.result("dense").metrics == report.result("dense").metrics
    with pytest.raises(ConfigError, match="recreate"):
        run_evaluation(load_beir(root, max_docs=1), enc, manager, collection="tiny_eval", config=config)
    with pytest.raises(ConfigError, match="another split"):
        run_evaluation(ds, enc, manager, collection="tiny_eval", config=config, tune_on=ds)


@pytest.mark.integration
def test_eval_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_beir(tmp_path / "tiny")
    args = build_eval_parser().parse_args(
        [
            str(root),
            "--uri",
            str(tmp_path / "eval.db"),
            "--modes",
            "dense,sparse,rrf,m3",
            "--no-bm25",
            "--limit",
            "100",
            "--out",
            str(tmp_path / "out"),
            "--name",
            "cli",
            "--no-plot",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert run_eval_cli(args, encoder=FakeEncoder(dim=16), command="milvus-m3 eval tiny") == 0
    out = capsys.readouterr().out
    assert "| m3 |" in out and "milvus-m3 eval tiny" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cli.json", "cli.md"]
    assert any((tmp_path / "cache").iterdir())
    with pytest.raises(ConfigError):
        EvalConfig(modes=("nope",))
    with pytest.raises(ConfigError):
        EvalConfig(limit=5)
    bad = build_eval_parser().parse_args([str(root), "--dense-model", "minilm"])
    with pytest.raises(ConfigError, match="both"):
        run_eval_cli(bad)

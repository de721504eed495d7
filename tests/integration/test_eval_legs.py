"""The evaluation on the product path: every fused mode equals a brute-force reference computed from the
same stored vectors, an empty sparse query is ordinary, reuse checks what shaped the collection, and
the IR outputs (TREC runs, per-query metrics, significance, identical ids, --max-length) act.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager
from milvus_m3.errors import SchemaMismatchError
from milvus_m3.evaluate import EvalConfig, evaluate_run, load_beir, run_evaluation
from milvus_m3.fusion import dbsf, id_order, rrf, weighted
from milvus_m3.search.requests import bm25_request, dense_request, sparse_request
from milvus_m3.sparse import lexical_score
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder
from tests.integration.test_evaluate import write_beir
from tests.integration.test_legs import NoisyEncoder

pytestmark = pytest.mark.integration

FUSED = ("rrf", "rrf-dense-bm25", "rrf-sparse-bm25", "rrf3", "weighted", "weighted-raw", "weighted3")
NORMALIZE = {"dense": "arctan", "sparse": "arctan", "bm25": "bm25"}


class EmptySparseForSome(NoisyEncoder):
    """An encoder whose query 'omega' (and any query holding it) has an empty sparse vector; documents'
    sparse weights carry a little noise, so the dense and sparse brute-force rankings have no ties."""

    def encode_queries(self, texts):  # type: ignore[no-untyped-def]
        emb = super().encode_queries(texts)
        sparse = [{} if "omega" in t.split() else s for t, s in zip(texts, emb.sparse, strict=True)]
        return M3Embeddings(dense=emb.dense, sparse=sparse)


class KeyedFake(FakeEncoder):
    """FakeEncoder declaring what shapes its vectors (``types.CacheKeyed``)."""

    @property
    def config_key(self) -> str:
        return f"fake|{self.model_name}|seed={self._seed}"


def _sorted(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(pairs, key=lambda p: (-p[1], id_order(p[0])))


def test_every_fused_mode_equals_a_brute_force_reference(tmp_path: Path, manager: CollectionManager) -> None:
    root = write_beir(tmp_path / "tiny", n_docs=60, n_queries=24)
    ds = load_beir(root)
    enc = EmptySparseForSome(dim=16)
    cand = 20
    config = EvalConfig(modes=("dense", "sparse", "bm25", *FUSED), limit=20, candidates=cand, recall_k=20)
    report = run_evaluation(ds, enc, manager, collection="brute", config=config)
    assert [r.mode for r in report.results] == list(config.modes)

    docs = enc.encode_documents(list(ds.doc_texts))
    q = enc.encode_queries(list(ds.query_texts))
    assert any(not s for s in q.sparse)  # an empty sparse query ran like any other
    weights = {"dense": config.w_dense, "sparse": config.w_sparse, "bm25": config.w_bm25}
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {m: {} for m in ("dense", "sparse", "bm25", *FUSED)}
    for i, qid in enumerate(ds.query_ids):
        legs = {
            "dense": _sorted([(d, float(q.dense[i] @ docs.dense[j])) for j, d in enumerate(ds.doc_ids)]),
            "sparse": _sorted(
                [
                    (d, s)
                    for j, d in enumerate(ds.doc_ids)
                    if (s := lexical_score(q.sparse[i], docs.sparse[j])) > 0
                ]
            ),
        }
        # BM25's statistics live in the engine: its own top list is the reference. The fused modes fuse the
        # candidate list Milvus gives (so they equal Milvus's own rankers); the bm25 mode alone is a page
        # of one ranking, read deep enough that no tie at its last place is cut (issue 27 item 5)
        req = bm25_request([ds.query_texts[i]], field="bm25", limit=cand)
        res = manager.client.search("brute", output_fields=[], **req.search_kwargs())[0]
        top = {leg: x[:cand] for leg, x in legs.items()}
        top["bm25"] = [(str(h["id"]), float(h["distance"])) for h in res]
        deep = bm25_request([ds.query_texts[i]], field="bm25", limit=len(ds.doc_ids))
        every = manager.client.search("brute", output_fields=[], **deep.search_kwargs())[0]
        runs["bm25"][qid] = _sorted([(str(h["id"]), float(h["distance"])) for h in every])[:cand]
        for leg in ("dense", "sparse"):
            runs[leg][qid] = top[leg]
        for mode in FUSED:
            names = {"rrf": ("dense", "sparse"), "rrf-dense-bm25": ("dense", "bm25")}.get(mode)
            names = names or {"rrf-sparse-bm25": ("sparse", "bm25"), "weighted": ("dense", "sparse")}.get(
                mode
            )
            names = names or {"weighted-raw": ("dense", "sparse")}.get(mode, ("dense", "sparse", "bm25"))
            lists = [top[leg] for leg in names]
            ws = [weights[leg] for leg in names]
            ws = [w / max(ws) for w in ws]
            if mode.startswith("rrf"):
                runs[mode][qid] = rrf(lists, k=60, limit=20)
            else:
                norm = ["none"] * len(names) if mode == "weighted-raw" else [NORMALIZE[n] for n in names]
                runs[mode][qid] = weighted(lists, ws, normalize=norm, limit=20)  # type: ignore[arg-type]
    for mode, run in runs.items():
        want = evaluate_run(run, ds.qrels, recall_k=20)
        assert report.result(mode).metrics == pytest.approx(want, abs=1e-9), mode
    for mode in FUSED:
        sig = report.result(mode).significance
        assert sig["against"] in ("dense", "sparse", "bm25") and 0.0 < sig["p"] <= 1.0
    assert "Paired randomization test" in report.to_markdown()


def test_dbsf_modes_equal_fusion_dbsf_over_the_legs_runs(tmp_path: Path, manager: CollectionManager) -> None:
    ds = load_beir(write_beir(tmp_path / "tiny", n_docs=60, n_queries=12))
    dbsf_modes = {
        "dbsf": ("dense", "sparse"),
        "dbsf3": ("dense", "sparse", "bm25"),
        "dbsf-dense-bm25": ("dense", "bm25"),
        "dbsf-sparse-bm25": ("sparse", "bm25"),
    }
    config = EvalConfig(modes=("dense", "sparse", "bm25", *dbsf_modes), limit=20, candidates=20, recall_k=20)
    report = run_evaluation(ds, NoisyEncoder(dim=16), manager, collection="dbsf", config=config)
    assert [r.mode for r in report.results] == list(config.modes)
    enc = NoisyEncoder(dim=16)
    q = enc.encode_queries(list(ds.query_texts))
    index = {qid: i for i, qid in enumerate(ds.query_ids)}

    def candidates(leg: str, qid: str) -> list[tuple[str, float]]:
        """The candidate list the mode fused: the leg's top 20 as Milvus gives it."""
        i = index[qid]
        if leg == "dense":
            req = dense_request([q.dense[i]], limit=20, index_kind="FLAT")
        elif leg == "sparse":
            req = sparse_request([q.sparse[i]], limit=20)
        else:
            req = bm25_request([ds.query_texts[i]], field="bm25", limit=20)
        res = manager.client.search("dbsf", output_fields=[], **req.search_kwargs())[0]
        return [(str(h["id"]), float(h["distance"])) for h in res]

    for mode, legs in dbsf_modes.items():
        for qid, got in report.result(mode).run.items():
            want = dbsf([candidates(leg, qid) for leg in legs], limit=20)
            assert [d for d, _ in got] == [d for d, _ in want], (mode, qid)
            assert [x for _, x in got] == pytest.approx([x for _, x in want], abs=1e-9)
        assert report.result(mode).significance["against"] in legs
    table = report.to_markdown()
    assert "| dbsf |" in table and "distribution-based score fusion" in table


def test_reuse_checks_what_shaped_the_collection(tmp_path: Path, manager: CollectionManager) -> None:
    ds = load_beir(write_beir(tmp_path / "tiny"))
    enc = KeyedFake(dim=16)
    config = EvalConfig(modes=("bm25",), limit=20, candidates=20, recall_k=20)
    run_evaluation(ds, enc, manager, collection="reuse", config=config)
    for change in ({"bm25_analyzer": "standard"}, {"bm25_k1": 1.5}, {"bm25_b": 0.5}):
        other = EvalConfig(modes=("bm25",), limit=20, candidates=20, recall_k=20, **change)  # type: ignore[arg-type]
        with pytest.raises(SchemaMismatchError, match=next(iter(change))):
            run_evaluation(ds, enc, manager, collection="reuse", config=other)
    with pytest.raises(SchemaMismatchError, match="another model"):
        # same name and dims, other settings (here the seed): its vectors are not comparable
        run_evaluation(ds, KeyedFake(dim=16, seed=1), manager, collection="reuse", config=config)


def test_eval_cli_writes_runs_and_acts_on_its_options(tmp_path: Path) -> None:
    from milvus_m3.cli.eval import build_eval_parser, run_eval_cli

    root = write_beir(tmp_path / "tiny")
    # a query whose id is a document id: identical ids are ignored by default there (BEIR's convention)
    lines = (root / "queries.jsonl").read_text().splitlines()
    lines.append(json.dumps({"_id": "d3", "text": "alpha beta", "metadata": {}}))
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with (root / "qrels" / "test.tsv").open("a") as fh:
        fh.write("d3\td5\t1\n")
    base = [str(root), "--uri", str(tmp_path / "e.db"), "--limit", "100", "--out", str(tmp_path / "out")]
    base += ["--no-plot", "--no-cache", "--modes", "dense,bm25,rrf3"]
    args = build_eval_parser().parse_args([*base, "--runs", "--name", "r"])
    assert run_eval_cli(args, encoder=FakeEncoder(dim=16), command="x") == 0
    out = tmp_path / "out"
    trec = (out / "r.runs" / "rrf3.trec").read_text().splitlines()
    qid, q0, doc, rank, score, tag = trec[0].split()
    assert (q0, rank, tag) == ("Q0", "1", "rrf3") and float(score) > 0
    tsv = (out / "r.per_query.tsv").read_text().splitlines()
    assert tsv[0] == "mode\tquery\tndcg@10\trecall@100\tmrr@10" and len(tsv) > 3
    data = json.loads((out / "r.json").read_text())
    assert data["settings"]["ignore_identical_ids"] is True
    keep = build_eval_parser().parse_args([*base, "--keep-identical-ids", "--name", "k"])
    assert run_eval_cli(keep, encoder=FakeEncoder(dim=16), command="x") == 0
    assert json.loads((out / "k.json").read_text())["settings"]["ignore_identical_ids"] is False


def test_max_length_reaches_the_encoders() -> None:
    from milvus_m3.cli.eval import _build_encoders, build_eval_parser

    args = build_eval_parser().parse_args(
        ["x", "--dense-model", "minilm", "--sparse-model", "splade-tiny", "--max-length", "64"]
    )
    enc, _ = _build_encoders(args, None)
    assert "max_length=64" in enc.config_key  # type: ignore[attr-defined]
    assert enc.config_key.count("max_length=64") == 2  # type: ignore[attr-defined]


def test_empty_sparse_queries_do_not_abort_a_run(tmp_path: Path, manager: CollectionManager) -> None:
    ds = load_beir(write_beir(tmp_path / "tiny"))
    config = EvalConfig(modes=("sparse", "rrf", "weighted"), limit=20, candidates=20, recall_k=20)
    report = run_evaluation(ds, EmptySparseForSome(dim=16), manager, collection="empties", config=config)
    assert [r.mode for r in report.results] == ["sparse", "rrf", "weighted"]
    assert np.isfinite([r.metrics["ndcg@10"] for r in report.results]).all()

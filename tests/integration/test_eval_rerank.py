"""``M+rerank`` in the evaluation: a mode's top ``cross_encoder_depth`` documents reordered by the tiny
cross-encoder equal the same documents sorted by ``FlagEmbedding.FlagReranker.compute_score`` over the
same (query, document text) pairs (ties by id), the variant is scored from that run, and
``milvus-m3 eval --rerank PATH`` puts the variant in the JSON report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from milvus_m3 import CrossEncoderReranker
from milvus_m3.collection.manager import CollectionManager
from milvus_m3.errors import ConfigError
from milvus_m3.evaluate import EvalConfig, evaluate_run, load_beir, run_evaluation
from milvus_m3.fusion import id_order
from tests.fakes import FakeEncoder
from tests.integration.test_evaluate import write_beir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def flag_reranker(tiny_reranker_checkpoint: Path) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(str(tiny_reranker_checkpoint), use_fp16=False, devices="cpu")


def test_rerank_variant_equals_flag_reranker_order(
    tmp_path: Path, manager: CollectionManager, tiny_reranker_checkpoint: Path, flag_reranker: Any
) -> None:
    ds = load_beir(write_beir(tmp_path / "tiny", n_docs=50, n_queries=16))
    depth = 12
    config = EvalConfig(
        modes=("dense", "rrf3"),
        limit=20,
        candidates=20,
        recall_k=20,
        rerank=str(tiny_reranker_checkpoint),
        cross_encoder_depth=depth,
    )
    cross = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", precision="fp32")
    report = run_evaluation(
        ds, FakeEncoder(dim=16), manager, collection="rr", config=config, cross_encoder=cross
    )
    assert [r.mode for r in report.results] == ["dense", "dense+rerank", "rrf3", "rrf3+rerank"]
    texts = dict(zip(ds.doc_ids, ds.doc_texts, strict=True))
    queries = dict(zip(ds.query_ids, ds.query_texts, strict=True))
    moved = 0
    for mode in config.modes:
        base, variant = report.result(mode), report.result(mode + "+rerank")
        assert set(variant.run) == set(base.run) == set(ds.query_ids)
        reference: dict[str, list[tuple[str, float]]] = {}
        for qid, ranked in base.run.items():
            top = [doc for doc, _ in ranked[:depth]]
            assert len(top) == depth
            ref = flag_reranker.compute_score([(queries[qid], texts[d]) for d in top])
            reference[qid] = sorted(
                zip(top, map(float, ref), strict=True), key=lambda p: (-p[1], id_order(p[0]))
            )
            ours = variant.run[qid]
            assert [d for d, _ in ours] == [d for d, _ in reference[qid]]
            assert max(abs(a[1] - b[1]) for a, b in zip(ours, reference[qid], strict=True)) <= 1e-5
            moved += [d for d, _ in ours] != top
        kw = {"ndcg_k": 10, "recall_k": 20, "mrr_k": 10}
        assert variant.metrics == evaluate_run(dict(variant.run), ds.qrels, **kw)
        assert variant.metrics == pytest.approx(evaluate_run(reference, ds.qrels, **kw), abs=1e-12)
        assert variant.significance["against"] == mode
        assert f"top {depth} of {mode}" in variant.note
    assert moved > 0  # the cross-encoder reordered something: the variant is not its mode's run cut short


def test_rerank_options_are_checked(tiny_reranker_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="not among the modes"):
        EvalConfig(modes=("dense",), rerank="m", rerank_modes=("bm25",))
    with pytest.raises(ConfigError, match="needs rerank"):
        EvalConfig(modes=("dense",), rerank_modes=("dense",))
    with pytest.raises(ConfigError, match="above limit"):
        EvalConfig(rerank="m", cross_encoder_depth=101)
    with pytest.raises(ConfigError, match="cross_encoder_depth must be an int >= 1"):
        EvalConfig(rerank="m", cross_encoder_depth=0)


def test_eval_cli_rerank_adds_the_variant(tmp_path: Path, tiny_reranker_checkpoint: Path) -> None:
    from milvus_m3.cli.eval import build_eval_parser, run_eval_cli

    root = write_beir(tmp_path / "tiny")
    argv = [str(root), "--uri", str(tmp_path / "e.db"), "--limit", "100", "--out", str(tmp_path / "out")]
    argv += ["--no-plot", "--no-cache", "--modes", "dense,bm25", "--device", "cpu", "--name", "r", "-q"]
    argv += [
        "--rerank",
        str(tiny_reranker_checkpoint),
        "--rerank-modes",
        "bm25",
        "--cross-encoder-depth",
        "7",
    ]
    args = build_eval_parser().parse_args(argv)
    assert run_eval_cli(args, encoder=FakeEncoder(dim=16), command="x") == 0
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert [r["mode"] for r in data["results"]] == ["dense", "bm25", "bm25+rerank"]
    variant = data["results"][2]
    assert set(variant["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert "top 7 of bm25" in variant["note"] and str(tiny_reranker_checkpoint) in variant["note"]
    settings = data["settings"]
    assert settings["rerank"] == str(tiny_reranker_checkpoint) and settings["cross_encoder_depth"] == 7
    assert settings["rerank_modes"] == ["bm25"]

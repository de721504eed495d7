"""``milvus-m3 create --bm25`` and ``milvus-m3 search --legs/--weights/--rrf-k/--candidates``, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import run

pytestmark = pytest.mark.integration


def test_create_with_bm25_then_search_each_leg(tmp_path: Path, tiny_checkpoint: Path) -> None:
    db = str(tmp_path / "cli.db")
    model = ["--uri", db, "--model", str(tiny_checkpoint)]
    proc = run(["create", "--collection", "zh", *model, "--bm25", "--bm25-analyzer", "chinese"], tmp_path)
    assert proc.returncode == 0 and "bm25 (chinese)" in proc.stdout, proc.stderr
    info = json.loads(run(["info", "--collection", "zh", "--uri", db, "--json"], tmp_path).stdout)
    assert info["spec"]["bm25"] is True and info["spec"]["bm25_analyzer"] == "chinese"
    assert "bm25" in info["fields"] and info["spec"]["model_fingerprint"]
    docs = tmp_path / "docs.jsonl"
    texts = ["我们在北京大学学习计算机科学", "今天的天气非常好", "猫喜欢吃鱼"]
    docs.write_text("".join(json.dumps({"id": f"z{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    proc = run(["ingest", str(docs), "--collection", "zh", *model, "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run(["search", "天气", "--collection", "zh", *model, "--legs", "bm25", "--json"], tmp_path)
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [h["id"] for h in hits] == ["z1"], proc.stderr
    args = ["search", "天气", "--collection", "zh", *model, "--json", "--rrf-k", "10", "--candidates", "50"]
    proc = run([*args, "--legs", "dense,bm25", "--weights", "0.5,1"], tmp_path)
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and hits[0]["id"] == "z1", proc.stderr
    # weighted RRF with k=10: 1 / (10 + 1) from BM25 (rank 1) + 0.5 / (10 + r) from dense (rank r of 3)
    assert any(hits[0]["score"] == pytest.approx(1 / 11 + 0.5 / (10 + r)) for r in (1, 2, 3))
    proc = run([*args, "--weights", "1,1"], tmp_path)
    assert proc.returncode == 2 and "three numbers" in proc.stderr
    proc = run([*args, "--legs", "dense,colbert"], tmp_path)
    assert proc.returncode == 2 and "dense, sparse, bm25" in proc.stderr
    # dbsf: each leg's scores scaled by its own mean -+ 3 sd (a one-hit leg gives 0.5), summed
    proc = run([*args, "--legs", "dense,bm25", "--ranker", "dbsf", "--weights", "1,2"], tmp_path)
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and [h["id"] for h in hits][:1] == ["z1"], proc.stderr
    # bm25 finds z1 alone: 2 x 0.5; dense ranks all three, whose normalised scores average 0.5
    assert len(hits) == 3 and sum(h["score"] for h in hits) == pytest.approx(2 * 0.5 + 3 * 0.5)
    proc = run([*args, "--ranker", "max"], tmp_path)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "invalid choice: 'max'" in errors[0] and all(n in errors[0] for n in ("rrf", "weighted", "dbsf"))
    proc = run([*args, "--rrf-k", "2.5"], tmp_path)
    assert proc.returncode == 2 and "invalid int value: '2.5'" in proc.stderr


def test_create_refuses_an_analyzer_lite_cannot_run(tmp_path: Path, tiny_checkpoint: Path) -> None:
    db = str(tmp_path / "cli.db")
    proc = run(
        [
            "create",
            "--collection",
            "th",
            "--uri",
            db,
            "--model",
            str(tiny_checkpoint),
            "--bm25",
            "--bm25-analyzer",
            "icu",
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "cannot run on Milvus Lite" in proc.stderr and "jieba" in proc.stderr
    assert "th:" not in run(["info", "--uri", db], tmp_path).stdout

"""The README's Reranking example runs as written (tiny BGE-M3 checkpoint + tiny cross-encoder) and its
printed order is the cross-encoder's order over the first stage's hits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_readme_adapters import ROOT, example

pytestmark = pytest.mark.integration


def test_the_rerank_example_prints_the_reranked_hits(
    tiny_checkpoint: Path, tiny_reranker_checkpoint: Path, tiny_reranker: Any, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        MILVUS_M3_MODEL=str(tiny_checkpoint),
        MILVUS_M3_RERANKER=str(tiny_reranker_checkpoint),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        [sys.executable, "-c", example("Reranking")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2
    texts = {
        "milvus": "Milvus is a vector database.",
        "bread": "Bread dough rises with yeast.",
        "m3": "BGE-M3 embeds text.",
    }
    # rerank_depth=3 covers the corpus: the two hits are the cross-encoder's top two of all three texts
    scores = dict(
        zip(texts, tiny_reranker.score("which database stores vectors?", list(texts.values())), strict=True)
    )
    want = sorted(texts, key=lambda d: (-scores[d], d))[:2]
    assert [ln[0] for ln in lines] == want
    for (doc, score, _first), name in zip(lines, want, strict=True):
        assert abs(float(score) - round(scores[name], 4)) <= 1e-4 and doc == name

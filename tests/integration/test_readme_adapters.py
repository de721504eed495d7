"""The README's Multi-tenancy, Async, LangChain and LlamaIndex examples run as written (tiny checkpoint).

They are fenced as ``py`` (the ``python`` fence is the one main example ``test_readme.py`` runs).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.integration


def example(section: str) -> str:
    """The ``py`` block of the README section headed ``## {section}``."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```py\n(.*?)```", body, flags=re.DOTALL)
    return block


def run(block: str, checkpoint: Path, cwd: Path) -> list[str]:
    env = dict(os.environ, MILVUS_M3_MODEL=str(checkpoint), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def test_the_tenancy_example_sees_one_tenant(tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines = run(example("Multi-tenancy"), tiny_checkpoint, tmp_path)
    assert lines == ['t1-0 globex "east"']


def test_the_async_example_runs_three_searches(tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines = run(example("Async"), tiny_checkpoint, tmp_path)
    assert len(lines) == 3
    for line in lines:
        ids = ast.literal_eval(line)  # a printed list of ids
        assert len(ids) == 2 and set(ids) <= {"milvus", "bread", "m3"}


@pytest.mark.parametrize("section", ["LangChain", "LlamaIndex"])
def test_the_adapter_examples_print_two_hits(section: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines = run(example(section), tiny_checkpoint, tmp_path)
    assert len(lines) == 2
    texts = {
        "milvus": "Milvus is a vector database.",
        "bread": "Bread dough rises with yeast.",
        "m3": "BGE-M3 embeds text.",
    }
    for line in lines:
        doc_id, score, text = line.split(" ", 2)
        assert texts[doc_id] == text
        float(score)

"""The README's Python example and its first command run as written (with the tiny checkpoint)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.integration


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_the_two_commands() -> None:
    blocks = [b.strip() for b in _bash_blocks()]
    assert blocks[0].endswith("bash scripts/demo.sh")
    assert blocks[1] == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec bash scripts/test.sh" in ci


def test_readme_python_example_runs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (block,) = _python_blocks()
    env = dict(os.environ, MILVUS_M3_MODEL=str(tiny_checkpoint), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", block],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2
    ids = [ln.split()[0] for ln in lines]
    assert set(ids) <= {"milvus", "m3", "bread"}
    assert (tmp_path / "readme_example.db").exists()


def test_readme_first_command_ingests_and_prints_hybrid_results(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        MILVUS_M3_MODEL=str(tiny_checkpoint),
        MILVUS_URI=str(tmp_path / "demo.db"),
        HF_HUB_OFFLINE="1",
    )
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "== highest mountain" in out.stdout
    ingested_ids = {
        line.split('"id": "')[1].split('"')[0]
        for line in (ROOT / "examples" / "sample.jsonl").read_text().splitlines()
    }
    printed = [tok for tok in re.findall(r"[a-z0-9]+-\d+", out.stdout) if tok in ingested_ids]
    assert len(printed) >= 9  # three hits for each of the three queries

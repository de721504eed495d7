"""The README's Python example and its first command run as written (with the tiny checkpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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


def _clean_checkout(dest: Path) -> Path:
    """The working tree's files as a fresh clone has them (tracked and not ignored), committed in a new
    repository, beside a ``shared/fixtures`` holding the XLM-R tokenizer, as in this project's layout."""
    from milvus_m3.testing import find_tokenizer_file

    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    repo = dest / "repo"
    for rel in (p.decode() for p in listed if p):
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    fixtures = dest / "shared" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "xlmr-tokenizer.json").symlink_to(find_tokenizer_file())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "clean checkout"], cwd=repo, check=True)
    return repo


def test_readme_offline_demo_and_cli_examples_run_on_a_clean_checkout(tmp_path: Path) -> None:
    """The README's offline command, as written, on a clean checkout without MILVUS_M3_MODEL: it builds
    the tiny checkpoint, says loudly that it ranks at random, ingests and searches; then the README's
    CLI examples run as written, and nothing the demo leaves shows in git status."""
    (offline,) = [b for b in _bash_blocks() if "HF_HUB_OFFLINE=1 bash scripts/demo.sh" in b]
    (examples,) = [b for b in _bash_blocks() if "source .venv/bin/activate" in b]
    venv = Path(sys.prefix)
    stamp = venv / ".milvus-m3-installed"
    want = hashlib.sha256(
        (ROOT / "requirements-lock.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    )
    if not stamp.is_file() or stamp.read_text().strip() != want.hexdigest()[:16]:
        pytest.skip(f"{venv} is not the venv scripts/setup.sh builds for this checkout (its stamp differs)")
    repo = _clean_checkout(tmp_path)
    (repo / ".venv").symlink_to(venv)  # setup.sh finds it installed and leaves it as it is
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS_", "HF_"))}
    env["PYTHONPATH"] = str(repo)  # the venv's editable install points at another checkout
    out = subprocess.run(
        ["bash", "-c", offline], cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("THE RANKINGS ARE RANDOM") == 2, out.stderr[-3000:]
    assert (repo / ".cache" / "demo-tiny-bge-m3" / "milvus_m3_testing.json").is_file()
    assert (
        out.stdout.count("== ") == 3
        and len(re.findall(r"^\s+\d\. \d\.\d{4}  \S+-\d+ ", out.stdout, re.M)) == 9
    )
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", examples],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "collection demo at ./milvus_m3.db" in ran.stdout and "rows:      24" in ran.stdout
    hits = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    assert sorted(h["id"] for h in hits) == ["milvus-1", "milvus-2"]
    filtered = re.findall(r"^\s+\d+\. \d\.\d{4}  (\S+) ", ran.stdout, re.M)
    geography = {"geo-1", "geo-2", "geo-3", "de-1", "es-1", "ja-1"}  # topic "geography" in sample.jsonl
    assert len(filtered) == 3 + 6 and set(filtered[3:]) == geography, filtered
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", f"the demo leaves files git does not ignore:\n{status.stdout}"

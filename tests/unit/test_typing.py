"""The package is mypy-clean in strict mode and ruff-clean (configuration in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is a dev dependency (requirements-lock.txt installs it)")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "milvus_m3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is a dev dependency (requirements-lock.txt installs it)")
    out = subprocess.run(
        [ruff, "check", "milvus_m3"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout[-4000:]

"""The embedder under transformers 5.x and huggingface-hub >= 1, against FlagEmbedding's outputs (issue 14).

FlagEmbedding 1.4.2 does not import with transformers 5, so the dev venv (requirements-lock.txt) keeps
transformers 4.57 for the parity reference and scripts/check_transformers5.sh builds a second venv
(torch 2.13.0 CPU first, then this package with transformers 5 and hub 2, no FlagEmbedding) and checks
M3Embedder's outputs there against the ones FlagEmbedding gave in this venv. Slow: pip installs into a
fresh venv the first time (about 2-3 minutes here; reused from ``$MILVUS_M3_TEST_CACHE`` afterwards).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_embedder_under_transformers_5_equals_flagembedding_reference(tmp_path: Path) -> None:
    cache = os.environ.get("MILVUS_M3_TEST_CACHE")
    venv = (REPO / cache / "venv-tf5") if cache else tmp_path / "venv-tf5"
    env = dict(os.environ, DEV_PYTHON=sys.executable, TF5_VENV=str(venv), TF5_WORK=str(tmp_path / "work"))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_transformers5.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "transformers 5 parity: OK" in proc.stdout, out[-4000:]
    assert "check: torch 2.13.0" in proc.stdout and "transformers 5." in proc.stdout
    assert proc.stdout.count("max |diff|") == 2  # the default encoder and transformers 5's AutoModel

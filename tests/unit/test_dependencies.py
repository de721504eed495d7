"""The package's declared dependencies: no caps that exclude transformers 5 / huggingface-hub 1+,
FlagEmbedding only in its extra (issue 14). scripts/check_transformers5.sh proves the result works."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8"))
PROJECT = PYPROJECT["project"]


def _named(reqs: list[str], name: str) -> list[str]:
    return [r for r in reqs if re.match(rf"{re.escape(name)}\b", r, flags=re.IGNORECASE)]


def test_core_dependencies_admit_transformers_5_and_hub_2() -> None:
    deps = PROJECT["dependencies"]
    for name in ("transformers", "huggingface-hub"):
        (req,) = _named(deps, name)
        assert "<" not in req, f"{req!r} caps {name}: the default backend works with its current releases"
    assert not _named(deps, "FlagEmbedding"), "FlagEmbedding must be optional (extra 'flagembedding')"


def test_flagembedding_is_an_extra_that_keeps_transformers_4_and_the_dev_extra_uses_it() -> None:
    extra = PROJECT["optional-dependencies"]["flagembedding"]
    assert _named(extra, "FlagEmbedding")
    (tf,) = _named(extra, "transformers")
    assert "<5" in tf  # FlagEmbedding 1.4.2 does not import with transformers 5
    assert "milvus-m3[flagembedding]" in PROJECT["optional-dependencies"]["dev"]


def test_the_dev_lock_keeps_the_parity_reference() -> None:
    lock = (Path(__file__).resolve().parents[2] / "requirements-lock.txt").read_text("utf-8").splitlines()
    pins = dict(line.split("==", 1) for line in lock if "==" in line and not line.startswith("#"))
    assert "FlagEmbedding" in pins and pins["transformers"].startswith("4.")

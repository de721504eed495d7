"""Model fixtures: a tiny BGE-M3-shaped checkpoint and a tiny bge-reranker-v2-m3-shaped cross-encoder
(random weights, real XLM-R tokenizer), each built once.

The checkpoint goes into a session tmp dir, or into ``$MILVUS_M3_TEST_CACHE`` when that is set (a path;
relative to the repo root, e.g. ``MILVUS_M3_TEST_CACHE=.cache``) so later sessions skip the build.
Tests that use these fixtures are marked ``integration``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from milvus_m3.embedder.model import M3Embedder
    from milvus_m3.rerankers.cross_encoder import CrossEncoderReranker

REPO = Path(__file__).resolve().parents[1]
CACHE_ENV = "MILVUS_M3_TEST_CACHE"
TINY_NAME = "tiny-bge-m3-v1"  # bump when build_checkpoint's defaults change
TINY_RERANKER_NAME = "tiny-bge-reranker-v1"  # bump when build_reranker_checkpoint's defaults change
_DONE = ".complete"


def _cached_build(cache: Path, name: str = TINY_NAME) -> Path:
    from milvus_m3.testing import build_checkpoint, build_reranker_checkpoint

    build = build_reranker_checkpoint if name == TINY_RERANKER_NAME else build_checkpoint
    target = cache / name
    if (target / _DONE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build(staging)
    (staging / _DONE).touch()
    try:
        shutil.rmtree(target, ignore_errors=True)  # an unfinished build from an interrupted run
        staging.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny checkpoint (2 layers, hidden 32, colbert dim 32, max 8192 tokens)."""
    cache = os.environ.get(CACHE_ENV)
    if cache:
        return _cached_build(REPO / Path(cache).expanduser())
    from milvus_m3.testing import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def tiny_embedder(tiny_checkpoint: Path) -> M3Embedder:
    """M3Embedder on the tiny checkpoint, on CPU in fp32."""
    from milvus_m3.embedder.model import M3Embedder

    return M3Embedder(tiny_checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_reranker_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny cross-encoder (XLM-R sequence classifier, 2 layers, hidden 32, 1 label)."""
    cache = os.environ.get(CACHE_ENV)
    if cache:
        return _cached_build(REPO / Path(cache).expanduser(), TINY_RERANKER_NAME)
    from milvus_m3.testing import build_reranker_checkpoint

    return build_reranker_checkpoint(tmp_path_factory.mktemp("tiny-reranker"))


@pytest.fixture(scope="session")
def tiny_reranker(tiny_reranker_checkpoint: Path) -> CrossEncoderReranker:
    """CrossEncoderReranker on the tiny cross-encoder, on CPU in fp32, raw scores."""
    from milvus_m3.rerankers.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", precision="fp32")

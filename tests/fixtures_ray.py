"""A local Ray instance for the Ray ingestion tests: started once per test session (``num_cpus=2``),
shut down at its end. A start that times out on a loaded machine ("Failed to get node info ... Deadline
Exceeded", seen once) is retried once after a shutdown; a second failure fails the tests that use it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the ray extra (pip install 'milvus-m3[ray]') is not installed")
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for attempt in (1, 2):
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024**2,
                runtime_env={"env_vars": env},
            )
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
            logging.getLogger("tests.ray").warning("ray.init failed once; retrying", exc_info=True)
    try:
        yield ray
    finally:
        ray.shutdown()

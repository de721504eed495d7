"""Milvus fixtures: a fresh Milvus Lite file per test, and a deterministic fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from milvus_m3.collection.manager import CollectionManager
from tests.fakes import FakeEncoder


@pytest.fixture
def lite_uri(tmp_path: Path) -> str:
    return str(tmp_path / "milvus.db")


@pytest.fixture
def manager(lite_uri: str) -> Iterator[CollectionManager]:
    m = CollectionManager(lite_uri)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder(dim=16)

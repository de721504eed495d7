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
    return [
        {"id": f"{prefix}{i}", "text": f"document {i} about topic {i % 7} word{i}", **extra} for i in range(n)
    ]


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


# ------------------------------------------------------------------ 3. a collection recreated by raw pymilvus


def recreate_with_copied_schema(m: CollectionManager, name: str) -> None:
    """Drop ``name`` and create it again with raw pymilvus, its schema (description included) and its
    indexes copied: everything milvus-m3 wrote into it survives, only the rows are gone."""
    from pymilvus import CollectionSchema

    client = m.client
    desc = client.describe_collection(name)
    schema = CollectionSchema.construct_from_dict(desc)
    index_params = client.prepare_index_params()
    for idx in client.list_indexes(name):
        info = dict(client.describe_index(name, idx))
        field = info.pop("field_name")
        info.pop("index_name", None)
        kind, metric = info.pop("index_type"), info.pop("metric_type", None)
        params = {
            k: v
            for k, v in info.items()
            if k not in ("total_rows", "indexed_rows", "pending_index_rows", "state", "dim")
        }
        index_params.add_index(
            field_name=field, index_name=idx, index_type=kind, metric_type=metric, params=params
        )
    client.drop_collection(name)
    client.create_collection(name, schema=schema, index_params=index_params)
    assert client.describe_collection(name)["description"] == desc["description"]


def test_resume_into_a_collection_recreated_with_its_schema_copied_starts_over(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: the build id lives in the description, which a copied schema copies: resume skipped all
    200 rows of a collection that held none of them (count 0, "skipped 200")."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(200))
    state = tmp_path / "a.state.json"
    first = run(lite, name, [f], state_path=state, batch_size=50)
    assert first.written == 200 and lite.count(name) == 200
    build_id = lite.build_id(name)
    recreate_with_copied_schema(lite, name)
    assert lite.build_id(name) == build_id and lite.count(name) == 0
    rep = run(lite, name, [f], state_path=state, resume=True, batch_size=50)
    assert (rep.skipped, rep.written) == (0, 200)
    assert lite.count(name) == 200
    # a resume into the same collection still skips what is settled
    again = run(lite, name, [f], state_path=state, resume=True, batch_size=50)
    assert (again.skipped, again.written, lite.count(name)) == (200, 0, 200)


def test_a_checkpoint_of_another_collection_instance_is_not_resumed(tmp_path: Path) -> None:
    """FAULT: on a Milvus server a recreated collection has another collection id (Milvus Lite gives 0
    for every collection, so there the row probe of the test above decides)."""
    from milvus_m3.ingest.checkpoint import Checkpoint

    state = tmp_path / "s.json"
    target = {"uri": "http://h:19530", "db_name": "default", "collection": "c", "build_id": "b1"}
    cp = Checkpoint(state, {"collection": "c"}, False, {**target, "collection_id": 11})
    cp.commit({"x.jsonl": 5}, {}, None)
    same = Checkpoint(state, {"collection": "c"}, True, {**target, "collection_id": 11})
    assert same.resumed and same.done("x.jsonl") == 5
    other = Checkpoint(state, {"collection": "c"}, True, {**target, "collection_id": 12})
    assert not other.resumed and other.done("x.jsonl") == 0


def test_cli_resume_into_a_recreated_collection_writes_every_row(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """FAULT, the issue's case through the CLI: ingest 200, drop and recreate by raw pymilvus with the
    schema copied, ``ingest --resume``: 200 stored, nothing skipped."""
    from tests.integration.test_cli import count_of, release
    from tests.integration.test_cli import run as cli

    write_jsonl(tmp_path / "a.jsonl", docs(200))
    argv = ["ingest", "a.jsonl", "--collection", "docs", "--uri", "x.db", "--model", str(tiny_checkpoint)]
    first = cli([*argv, "-q"], tmp_path)
    assert first.returncode == 0, first.stderr
    db = str(tmp_path / "x.db")
    with CollectionManager(db) as m:
        recreate_with_copied_schema(m, "docs")
    release(db)
    proc = cli([*argv, "--resume", "--json", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["skipped"], report["written"]) == (0, 200)
    assert count_of(db, "docs") == 200

"""Model identity recorded by the first write (issue 11): a collection created without naming its model
takes the model of its first write, kept in the ``milvus_m3_models`` registry by build id, on Milvus
Lite with the tiny checkpoint (A), a copy of it under another folder name, and another checkpoint (B:
other sparse-head weights, same dims) in a folder named like A's. The gRPC server tier runs the main
path too (tests/server/test_server_model_registry.py).
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from milvus_m3._version import __version__
from milvus_m3.collection.manager import CollectionManager
from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import ConfigError, SchemaMismatchError
from milvus_m3.ingest import ingest
from milvus_m3.search import HybridSearcher

pytestmark = pytest.mark.integration

REGISTRY = "milvus_m3_models"
FIX = "use the model that first wrote it, or recreate the collection (recreate=True / --recreate"


@dataclass(frozen=True)
class Models:
    a: M3Embedder  # the tiny checkpoint in <root>/a/tiny-bge-m3
    copy: M3Embedder  # the same files in <root>/copy/my-local-copy
    b: M3Embedder  # other sparse-head weights, same dims, in <root>/b/tiny-bge-m3
    dirs: tuple[Path, Path, Path]


def build_models(tiny_checkpoint: Path, root: Path) -> Models:
    import torch

    from milvus_m3.embedder.checkpoint import model_fingerprint

    a, copy, b = root / "a" / "tiny-bge-m3", root / "copy" / "my-local-copy", root / "b" / "tiny-bge-m3"
    for d in (a, copy, b):
        shutil.copytree(tiny_checkpoint, d)
    head = b / "sparse_linear.pt"
    state = torch.load(head, weights_only=True)
    torch.save({k: v * 1.5 + 0.01 for k, v in state.items()}, head)  # another fine-tune of the same shape
    assert model_fingerprint(a) == model_fingerprint(copy) != model_fingerprint(b)
    load = lambda d: M3Embedder(str(d), device="cpu", precision="fp32")  # noqa: E731
    models = Models(a=load(a), copy=load(copy), b=load(b), dirs=(a, copy, b))
    assert models.a.dense_dim == models.b.dense_dim and a.name == b.name
    return models


@pytest.fixture(scope="module")
def models(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return build_models(tiny_checkpoint, tmp_path_factory.mktemp("models"))


def write_docs(path: Path, prefix: str, n: int = 4) -> Path:
    texts = ["the cat sat on the mat", "milvus stores vectors", "rain falls in spring", "a quiet blue lake"]
    path.write_text(
        "".join(json.dumps({"id": f"{prefix}{i}", "text": texts[i % 4]}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    return path


def registry_rows(manager: CollectionManager, build_id: str) -> list[dict[str, Any]]:
    """The registry's rows for ``build_id``, read with pymilvus itself (not through the code under test)."""
    if not manager.client.has_collection(REGISTRY):
        return []
    return list(
        manager.client.query(
            REGISTRY,
            filter=f'build_id == "{build_id}"',
            output_fields=["build_id", "collection", "model_name", "model_fingerprint", "recorded_by"],
        )
    )


def run_main_path(manager: CollectionManager, models: Models, tmp_path: Path, *, fresh_db: bool) -> None:
    """create without a model -> first ingest with A records it -> a copy of A passes -> B is refused."""
    name = "firstwrite"
    info = manager.create_collection(name, dense_dim=models.a.dense_dim)
    assert info.model_name == "" and info.spec is not None and info.spec.model_fingerprint is None
    build_id = manager.build_id(name)
    assert build_id is not None
    if fresh_db:  # created lazily: not by create_collection
        assert not manager.client.has_collection(REGISTRY)

    rep = ingest(
        [write_docs(tmp_path / "a.jsonl", "a")],
        manager=manager,
        collection=name,
        encoder=models.a,
        progress=False,
    )
    assert rep.written == 4
    rows = registry_rows(manager, build_id)
    assert [(r["collection"], r["model_name"], r["model_fingerprint"], r["recorded_by"]) for r in rows] == [
        (name, models.a.model_name, models.a.model_fingerprint, __version__)
    ]
    assert REGISTRY not in manager.list_collections() and name in manager.list_collections()
    desc = manager.client.describe_collection(REGISTRY)["description"]
    assert "milvus-m3 model registry" in desc and "Owned by milvus-m3" in desc
    shown = manager.describe(name).spec
    assert shown is not None
    assert (shown.model_name, shown.model_fingerprint) == (models.a.model_name, models.a.model_fingerprint)
    with _fresh(manager) as other:
        again = other.describe(name).spec  # recorded in the database, not only in the writer's cache
        assert again is not None and again.model_fingerprint == models.a.model_fingerprint

    # the same checkpoint under another folder name: ingests and searches
    rep = ingest(
        [write_docs(tmp_path / "c.jsonl", "c")],
        manager=manager,
        collection=name,
        encoder=models.copy,
        progress=False,
    )
    assert rep.written == 4 and manager.count(name) == 8
    hits = HybridSearcher(manager, name, models.copy).search("milvus stores vectors", limit=8)
    assert len(hits) == 8
    assert len(registry_rows(manager, build_id)) == 1  # a later writer records nothing

    # another checkpoint, same dims, in a folder named like A's: refused by ingest, nothing written
    with pytest.raises(SchemaMismatchError) as err:
        ingest(
            [write_docs(tmp_path / "b.jsonl", "b")],
            manager=manager,
            collection=name,
            encoder=models.b,
            progress=False,
        )
    msg = str(err.value)
    for part in (
        repr(name),
        "first written",
        FIX,
        models.a.model_fingerprint[:12],
        models.b.model_fingerprint[:12],
    ):
        assert part in msg, msg
    assert manager.count(name) == 8
    # and by a searcher, on this manager and on another one
    with pytest.raises(SchemaMismatchError, match="first written") as err:
        HybridSearcher(manager, name, models.b)
    assert FIX in str(err.value)
    with _fresh(manager) as other, pytest.raises(SchemaMismatchError, match="first wrote it"):
        HybridSearcher(other, name, models.b)
    assert len(registry_rows(manager, build_id)) == 1


def _fresh(manager: CollectionManager) -> CollectionManager:
    return CollectionManager(manager.connection.uri, options=manager.connection.options)


def test_first_write_records_the_model_and_refuses_another(
    manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    run_main_path(manager, models, tmp_path, fresh_db=True)


def test_racing_first_writers_one_is_refused(manager: CollectionManager, models: Models) -> None:
    name = "race"
    manager.create_collection(name, dense_dim=models.a.dense_dim)
    build_id = manager.build_id(name)
    assert build_id is not None
    with _fresh(manager) as m2:
        # both writers looked the build id up before either recorded (the window a race opens)
        spec1, spec2 = manager.spec(name), m2.spec(name)
        assert spec1.model_fingerprint is None and spec2.model_fingerprint is None
        a, b = models.a, models.b
        manager._registry.record(name, spec1, build_id, a.model_name, a.model_fingerprint)
        with pytest.raises(SchemaMismatchError) as err:
            m2._registry.record(name, spec2, build_id, b.model_name, b.model_fingerprint)
        msg = str(err.value)
        assert a.model_fingerprint[:12] in msg and b.model_fingerprint[:12] in msg and FIX in msg, msg
        # the loser withdrew its row: the winner's model stands, for both managers
        rows = registry_rows(manager, build_id)
        assert [r["model_fingerprint"] for r in rows] == [a.model_fingerprint]
        with pytest.raises(SchemaMismatchError, match="first written"):
            m2.check_collection(
                name,
                dense_dim=b.dense_dim,
                model_name=b.model_name,
                model_fingerprint=b.model_fingerprint,
                record_model=True,
            )
        m2.check_collection(
            name, dense_dim=a.dense_dim, model_fingerprint=a.model_fingerprint, record_model=True
        )

    # a loser that stopped before withdrawing (two rows of two models): everyone is refused, no silent pass
    manager.client.upsert(
        REGISTRY,
        [
            {
                "record_id": f"{build_id}.stale",
                "build_id": build_id,
                "collection": name,
                "model_name": b.model_name,
                "model_fingerprint": b.model_fingerprint,
                "recorded_by": "x",
                "vector": [1.0, 0.0],
            }
        ],
    )
    with _fresh(manager) as m3:
        for attempt in (lambda: m3.describe(name), lambda: HybridSearcher(m3, name, models.a)):
            with pytest.raises(SchemaMismatchError, match="two models recorded") as err:
                attempt()
            assert FIX in str(err.value) and b.model_fingerprint[:12] in str(err.value)


def _race(manager: CollectionManager, name: str, encoders: tuple[M3Embedder, M3Embedder]) -> list[str]:
    """Two writers on their own managers check ``name`` with record_model at once: what each got."""
    writers = [_fresh(manager), _fresh(manager)]
    for w in writers:
        w.spec(name)  # both start from the unknown model
    barrier = threading.Barrier(2)
    outcome = ["", ""]

    def write(i: int) -> None:
        enc = encoders[i]
        barrier.wait()
        try:
            writers[i].check_collection(
                name,
                dense_dim=enc.dense_dim,
                model_name=enc.model_name,
                model_fingerprint=enc.model_fingerprint,
                record_model=True,
            )
            outcome[i] = enc.model_fingerprint
        except SchemaMismatchError as exc:
            outcome[i] = "refused" if FIX in str(exc) else str(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    return outcome


def test_racing_first_writers_in_threads_never_both_pass(manager: CollectionManager, models: Models) -> None:
    for round_ in range(4):
        name = f"race{round_}"
        manager.create_collection(name, dense_dim=models.a.dense_dim)
        outcome = _race(manager, name, (models.a, models.b))
        passed = [v for v in outcome if v != "refused"]
        assert "" not in outcome and len(passed) <= 1, outcome
        assert all(len(v) == 32 for v in passed), outcome  # a fingerprint, not another error
        rows = registry_rows(manager, manager.build_id(name) or "")
        assert [r["model_fingerprint"] for r in rows] == passed  # the registry holds the winner's, or none


def test_drop_forgets_the_model_and_a_recreated_collection_starts_unknown(
    manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    name = "dropme"
    docs = write_docs(tmp_path / "d.jsonl", "d")
    manager.create_collection(name, dense_dim=models.a.dense_dim)
    first = manager.build_id(name)
    ingest([docs], manager=manager, collection=name, encoder=models.a, progress=False)
    assert len(registry_rows(manager, first or "")) == 1
    assert manager.drop(name)
    assert registry_rows(manager, first or "") == [] and manager.client.has_collection(REGISTRY)
    with pytest.raises(ConfigError, match="reserved"):
        manager.drop(REGISTRY)  # milvus-m3 never drops it

    # the same name again starts unknown; its first write (B) records anew
    info = manager.create_collection(name, dense_dim=models.a.dense_dim)
    assert info.model_name == "" and manager.build_id(name) != first
    ingest([docs], manager=manager, collection=name, encoder=models.b, progress=False)
    spec = manager.describe(name).spec
    assert spec is not None and spec.model_fingerprint == models.b.model_fingerprint
    with pytest.raises(SchemaMismatchError, match="first written"):
        HybridSearcher(manager, name, models.a)

    # recreate=True goes through drop
    second = manager.build_id(name)
    info = manager.create_collection(name, dense_dim=models.a.dense_dim, recreate=True)
    assert info.model_name == "" and info.spec is not None and info.spec.model_fingerprint is None
    assert registry_rows(manager, second or "") == []

    # dropped by raw pymilvus and recreated by name: a new build id, so the old row is never inherited
    ingest([docs], manager=manager, collection=name, encoder=models.a, progress=False)
    third = manager.build_id(name)
    manager.client.drop_collection(name)
    with _fresh(manager) as other:
        other.create_collection(name, dense_dim=models.a.dense_dim)
        assert other.describe(name).model_name == ""
        ingest([docs], manager=other, collection=name, encoder=models.b, progress=False)
        assert other.describe(name).spec.model_fingerprint == models.b.model_fingerprint  # type: ignore[union-attr]
    assert [r["model_fingerprint"] for r in registry_rows(manager, third or "")] == [
        models.a.model_fingerprint
    ]


def test_a_collection_created_with_its_model_never_touches_the_registry(
    manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path / "n.jsonl", "n")
    manager.create_collection("byname", dense_dim=models.a.dense_dim, model_name=models.a.model_name)
    manager.create_collection(
        "byprint", dense_dim=models.a.dense_dim, model_fingerprint=models.a.model_fingerprint
    )
    for name, searcher in (("byname", models.a), ("byprint", models.copy)):
        ingest([docs], manager=manager, collection=name, encoder=models.a, progress=False)
        assert len(HybridSearcher(manager, name, searcher).search("rain", limit=2)) == 2
    with pytest.raises(SchemaMismatchError, match="another model"):
        HybridSearcher(manager, "byprint", models.b)
    assert not manager.client.has_collection(REGISTRY)


def test_a_record_without_build_id_keeps_the_dims_only_check(
    manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    from milvus_m3.collection.schema import META_MARKER, CollectionSpec, build_index_params, build_schema

    spec = CollectionSpec(dense_dim=models.a.dense_dim, model_name="")
    caps = manager.capabilities
    schema = build_schema(spec, caps)
    record = json.loads(schema.description[len(META_MARKER) :])
    del record["build_id"]  # as milvus-m3 wrote it before build ids
    schema._description = META_MARKER + json.dumps(record)
    manager.client.create_collection(
        "old",
        schema=schema,
        index_params=build_index_params(spec, spec.resolved_dense_index(caps), caps=caps),
    )
    assert manager.build_id("old") is None
    ingest(
        [write_docs(tmp_path / "o.jsonl", "o")],
        manager=manager,
        collection="old",
        encoder=models.a,
        progress=False,
    )
    assert manager.describe("old").model_name == ""
    HybridSearcher(manager, "old", models.b)  # dims agree, nothing else is known: accepted, as before
    assert not manager.client.has_collection(REGISTRY)


def test_the_registry_name_is_reserved(manager: CollectionManager, models: Models, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        manager.create_collection(REGISTRY, dense_dim=models.a.dense_dim)
    manager.create_collection("docs", dense_dim=models.a.dense_dim)
    docs = write_docs(tmp_path / "r.jsonl", "r")
    ingest([docs], manager=manager, collection="docs", encoder=models.a, progress=False)  # creates it
    assert manager.client.has_collection(REGISTRY) and manager.list_collections() == ["docs"]
    with pytest.raises(ConfigError, match="reserved"):
        ingest([docs], manager=manager, collection=REGISTRY, encoder=models.a, progress=False)
    with pytest.raises(ConfigError, match="reserved"):
        HybridSearcher(manager, REGISTRY, models.a)
    with pytest.raises(ConfigError, match="reserved"):
        manager.describe(REGISTRY)


def test_cli_ingest_info_and_refusal(models: Models, tmp_path: Path) -> None:
    from tests.integration.test_cli import run

    db = str(tmp_path / "cli.db")
    with CollectionManager(db) as m:
        m.create_collection("docs", dense_dim=models.a.dense_dim)
    a_dir, _, b_dir = models.dirs
    docs = str(write_docs(tmp_path / "cli.jsonl", "k"))
    proc = run(["ingest", docs, "--collection", "docs", "--uri", db, "--model", str(a_dir), "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run(["info", "--uri", db, "--json"], tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["collections"] == {"docs": 4}, proc.stdout
    info = json.loads(run(["info", "--collection", "docs", "--uri", db, "--json"], tmp_path).stdout)
    assert info["model"] == str(a_dir) and info["spec"]["model_fingerprint"] == models.a.model_fingerprint
    proc = run(["info", "--collection", REGISTRY, "--uri", db], tmp_path)
    assert proc.returncode == 2 and "reserved" in proc.stderr, proc.stderr
    proc = run(["ingest", docs, "--collection", "docs", "--uri", db, "--model", str(b_dir), "-q"], tmp_path)
    assert proc.returncode == 1 and "first written" in proc.stderr, proc.stderr
    assert "recreate the collection (--recreate; its data is dropped)" in proc.stderr, proc.stderr
    with CollectionManager(db) as m:
        assert m.count("docs") == 4


@pytest.mark.usefixtures("ray_local")
def test_ray_ingest_records_the_fingerprint_and_refuses_another_model(
    manager: CollectionManager, models: Models, tmp_path: Path
) -> None:
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory, RayOptions, ray_ingest

    a_dir, _, b_dir = models.dirs
    name = "rayfirst"
    manager.create_collection(name, dense_dim=models.a.dense_dim)
    docs = write_docs(tmp_path / "ray.jsonl", "y")
    opts = RayOptions(actors=1, cpus_per_actor=1, cpus_per_reader=0.5)

    def run(model: Path) -> Any:
        enc = M3EmbedderFactory(model=str(model), device="cpu", precision="fp32")
        return ray_ingest([docs], manager=manager, collection=name, encoder=enc, ray_options=opts)

    assert run(a_dir).written == 4
    rows = registry_rows(manager, manager.build_id(name) or "")
    assert [r["model_fingerprint"] for r in rows] == [models.a.model_fingerprint]
    with pytest.raises(SchemaMismatchError, match="first written") as err:
        run(b_dir)
    assert FIX in str(err.value) and manager.count(name) == 4

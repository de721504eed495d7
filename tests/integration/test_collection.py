"""CollectionManager on a real Milvus Lite engine, with the deterministic fake encoder."""

from __future__ import annotations

import numpy as np
import pytest

from milvus_m3 import (
    CollectionExistsError,
    CollectionManager,
    CollectionNotFoundError,
    CollectionSpec,
    ConfigError,
    InputError,
    M3Embeddings,
    ScalarField,
    SchemaMismatchError,
)
from milvus_m3._version import __version__
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration

TEXTS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "milvus stores dense and sparse vectors",
    "bge m3 gives dense and sparse vectors from one pass",
]
IDS = ["d0", "d1", "d2", "d3"]


def _make(manager: CollectionManager, enc: FakeEncoder, name: str = "docs", **spec_kw: object) -> None:
    spec = CollectionSpec(dense_dim=enc.dense_dim, model_name=enc.model_name, **spec_kw)  # type: ignore[arg-type]
    manager.create_collection(name, spec=spec)


def test_create_records_what_built_it(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder, scalar_fields=(ScalarField(name="lang", default=""),))
    info = manager.describe("docs")
    assert info.spec is not None
    assert info.dense_dim == 16
    assert info.model_name == "fake/m3"
    assert info.built_by_version == __version__
    assert info.count == 0
    assert info.fields == ("id", "text", "dense", "sparse", "metadata", "lang")
    assert info.indexes["dense"]["metric_type"] == "IP"
    assert info.indexes["dense"]["index_type"] == "AUTOINDEX"  # Lite's default
    assert info.indexes["sparse"]["index_type"] == "SPARSE_INVERTED_INDEX"
    assert info.indexes["sparse"]["metric_type"] == "IP"
    # A fresh manager (new process state) reads the same record back from the engine.
    with CollectionManager(manager.connection.uri) as again:
        assert again.spec("docs") == info.spec


def test_exists_ok_recreate_and_mismatch(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    emb = fake_encoder.encode_documents(TEXTS)
    manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=emb)
    with pytest.raises(CollectionExistsError, match="exists_ok=True"):
        _make(manager, fake_encoder)
    # exists_ok keeps the data
    manager.create_collection("docs", dense_dim=16, model_name="fake/m3", exists_ok=True)
    assert manager.count("docs") == 4
    with pytest.raises(SchemaMismatchError, match="dense dim 16, the embedder gives 32"):
        manager.create_collection("docs", dense_dim=32, model_name="fake/m3", exists_ok=True)
    with pytest.raises(SchemaMismatchError, match="built with model 'fake/m3'"):
        manager.check_collection("docs", dense_dim=16, model_name="BAAI/bge-m3")
    # recreate drops the data
    manager.create_collection("docs", dense_dim=16, model_name="fake/m3", recreate=True)
    assert manager.count("docs") == 0
    with pytest.raises(ConfigError):
        manager.create_collection("docs", dense_dim=16, exists_ok=True, recreate=True)


def test_model_names_compare_by_last_path_part(manager: CollectionManager) -> None:
    manager.create_collection("docs", dense_dim=8, model_name="BAAI/bge-m3")
    manager.check_collection("docs", dense_dim=8, model_name="/models/bge-m3/")


def test_upsert_is_idempotent(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    emb = fake_encoder.encode_documents(TEXTS)
    meta = [{"i": i, "tags": ["a", "b"]} for i in range(4)]
    assert manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=emb, metadata=meta, batch_size=3) == 4
    assert manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=emb, metadata=meta) == 4
    assert manager.count("docs") == 4
    rows = {r["id"]: r for r in manager.get("docs", IDS)}
    assert rows["d2"]["text"] == TEXTS[2]
    assert rows["d2"]["metadata"] == {"i": 2, "tags": ["a", "b"]}
    vec = manager.get("docs", ["d1"], output_fields=["dense", "sparse"])[0]
    np.testing.assert_allclose(np.asarray(vec["dense"], dtype=np.float32), emb.dense[1], atol=1e-6)
    assert {int(k): pytest.approx(v, rel=1e-6) for k, v in vec["sparse"].items()} == emb.sparse[1]


def test_bad_row_writes_nothing(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    emb = fake_encoder.encode_documents(TEXTS)
    dense = emb.dense.copy()
    dense[2, 3] = np.nan
    bad = M3Embeddings(dense=dense, sparse=emb.sparse)
    with pytest.raises(InputError, match="row 2: dense vector holds NaN") as err:
        manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=bad)
    assert err.value.field == "dense" and err.value.row == 2
    with pytest.raises(InputError, match="row 3: id 'd0' repeats row 0"):
        manager.upsert("docs", ids=["d0", "d1", "d2", "d0"], texts=TEXTS, embeddings=emb)
    sparse = list(emb.sparse)
    sparse[1] = {"12": 0.5}
    with pytest.raises(InputError, match="row 1: sparse id '12' is a str"):
        manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=M3Embeddings(dense=emb.dense, sparse=sparse))
    assert manager.count("docs") == 0


def test_empty_sparse_vector_is_stored(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    emb = fake_encoder.encode_documents(TEXTS[:1])
    empty = M3Embeddings(dense=emb.dense, sparse=[{}])
    manager.upsert("docs", ids=["e"], texts=TEXTS[:1], embeddings=empty)
    row = manager.get("docs", ["e"], output_fields=["sparse"])[0]
    assert dict(row["sparse"]) == {}


def test_wrong_dim_is_refused(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    other = FakeEncoder(dim=8).encode_documents(TEXTS)
    with pytest.raises(InputError, match="dim 8, the collection expects 16"):
        manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=other)


def test_lite_refuses_hnsw_and_nullable(manager: CollectionManager) -> None:
    with pytest.raises(ConfigError, match="not available on Milvus Lite"):
        manager.create_collection("h", spec=CollectionSpec(dense_dim=8, dense_index="HNSW"))
    with pytest.raises(ConfigError, match="nullable"):
        manager.create_collection(
            "n", spec=CollectionSpec(dense_dim=8, scalar_fields=(ScalarField(name="x", nullable=True),))
        )
    assert not manager.has_collection("h") and not manager.has_collection("n")
    manager.create_collection("f", spec=CollectionSpec(dense_dim=8, dense_index="FLAT"))
    assert manager.describe("f").indexes["dense"]["index_type"] == "FLAT"


def test_missing_collection_and_drop(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    with pytest.raises(CollectionNotFoundError, match="milvus-m3 create"):
        manager.count("nope")
    assert manager.drop("nope", missing_ok=True) is False
    _make(manager, fake_encoder)
    assert manager.list_collections() == ["docs"]
    assert manager.drop("docs") is True
    assert not manager.has_collection("docs")


def test_chunked_and_scalar_fields(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(
        manager,
        fake_encoder,
        chunked=True,
        scalar_fields=(ScalarField(name="year", dtype="int64", default=0),),
    )
    emb = fake_encoder.encode_documents(TEXTS)
    manager.upsert(
        "docs",
        ids=["p#0", "p#1", "q#0", "r#0"],
        texts=TEXTS,
        embeddings=emb,
        parent_ids=["p", "p", "q", "r"],
        chunk_indexes=[0, 1, 0, 0],
        fields={"year": [2020, 2021, None, 1999]},
    )
    rows = {r["id"]: r for r in manager.get("docs", ["p#1", "q#0"])}
    assert rows["p#1"]["parent_id"] == "p" and rows["p#1"]["chunk_index"] == 1 and rows["p#1"]["year"] == 2021
    assert rows["q#0"]["year"] == 0  # the declared default
    with pytest.raises(InputError, match="field 'year' must be an int"):
        manager.upsert(
            "docs",
            ids=["x#0"],
            texts=TEXTS[:1],
            embeddings=emb.select([0]),
            parent_ids=["x"],
            chunk_indexes=[0],
            fields={"year": ["nineteen"]},
        )
    with pytest.raises(InputError, match="not declared"):
        manager.upsert(
            "docs",
            ids=["x#0"],
            texts=TEXTS[:1],
            embeddings=emb.select([0]),
            parent_ids=["x"],
            chunk_indexes=[0],
            fields={"colour": ["red"]},
        )


def test_delete_by_id_and_filter(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    _make(manager, fake_encoder)
    manager.upsert("docs", ids=IDS, texts=TEXTS, embeddings=fake_encoder.encode_documents(TEXTS))
    manager.delete("docs", ids=["d0"])
    assert manager.count("docs") == 3
    manager.delete("docs", filter='id in ["d1", "d2"]')
    assert [r["id"] for r in manager.get("docs", IDS)] == ["d3"]


def test_auto_id_collection(manager: CollectionManager, fake_encoder: FakeEncoder) -> None:
    spec = CollectionSpec(dense_dim=16, model_name="fake/m3", id_type="int64", auto_id=True)
    manager.create_collection("auto", spec=spec)
    emb = fake_encoder.encode_documents(TEXTS)
    with pytest.raises(ConfigError, match="use insert"):
        manager.upsert("auto", ids=None, texts=TEXTS, embeddings=emb)
    assert manager.insert("auto", texts=TEXTS, embeddings=emb) == 4
    assert manager.count("auto") == 4


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="dense_dim"):
        CollectionSpec(dense_dim=0)
    with pytest.raises(ConfigError, match="auto_id needs"):
        CollectionSpec(dense_dim=8, auto_id=True)
    with pytest.raises(ConfigError, match="scalar field name"):
        ScalarField(name="text")
    with pytest.raises(ConfigError, match="not valid in Milvus"):
        CollectionManager.__new__(CollectionManager)  # no engine needed for name checks
        from milvus_m3.collection.schema import check_collection_name as _check_name

        _check_name("bad name; drop")

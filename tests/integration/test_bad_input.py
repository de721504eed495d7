"""The bad-input matrix (issue 6): every boring bad input is a clear, tested outcome with nothing lost.

Each case is its own test id. A case passes when:

- the Python API raises an exception from our tree (``MilvusM3Error``) whose message names the field,
  the row (or file and line) and the fix, with ``.field`` / ``.row`` set where a row is at fault; or
  the CLI exits non-zero with the message on stderr and no traceback;
- nothing already stored changed: the seeded collection's count and a checksum of its ids, texts and
  metadata are the same before and after (bad batches mix new ids and overwrites of stored ids with
  the bad row, so a partial write would show).

Sections: the collection manager (dense, sparse, ids, texts, metadata), collections (missing, not
built by milvus-m3), the searcher, the embedder, checkpoint directories, whole input files (Python
API), and the CLI as a real process: a bad-file ingest (one bad row per case in a JSONL and a CSV,
killed with SIGKILL three times and resumed) and commands refused before any model loads.

Cases other test files already cover are not repeated here: test_collection (NaN at row 2, duplicate
id, str sparse id, wrong dim, missing collection, other dim / model), test_embedder (None / int / bytes
/ empty rows, missing heads or files, truncated files, pickled heads), test_search (limit, offset,
mode, ranker, weights, candidate_limit, group_by, bad queries, filters the engine rejects), test_filters,
test_ingest (JSONL bad rows through the API) and test_cli (on-error fail, missing file, unknown format).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import (
    CollectionNotFoundError,
    ConfigError,
    InputError,
    MilvusM3Error,
    ModelLoadError,
    SchemaMismatchError,
    TextTooLongError,
)
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration

DIM = 16
COLL = "docs"
SEED_IDS = [f"s{i}" for i in range(6)]
SEED_TEXTS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "milvus stores dense and sparse vectors",
    "bge m3 gives dense and sparse vectors from one pass",
    "bread dough rises because yeast releases gas",
    'quotes " and backslashes \\ are stored as they are',
]
SEED_META = [{"i": i, "lang": "en", "tags": ["seed"]} for i in range(6)]

# A bad batch: row 0 overwrites a stored id with new text, rows 1-3 are new; the bad value goes into
# BAD_ROW. Anything written before the refusal would change the checksum.
BATCH_IDS = ["s0", "n1", "n2", "n3"]
BATCH_TEXTS = ["CHANGED text for s0", "new doc one", "new doc two", "new doc three"]
BAD_ROW = 2


# ----------------------------------------------------------------------------------- the store


def checksum(manager: CollectionManager, name: str = COLL) -> tuple[int, str]:
    """(count, sha256 of the sorted ids, texts and metadata) of a collection."""
    rows = manager.client.query(name, filter="", output_fields=["id", "text", "metadata"], limit=16_384)
    digest = hashlib.sha256()
    for r in sorted(rows, key=lambda r: str(r["id"])):
        digest.update(json.dumps([r["id"], r["text"], r["metadata"]], sort_keys=True).encode())
    return manager.count(name), digest.hexdigest()


@pytest.fixture(scope="module")
def enc() -> FakeEncoder:
    return FakeEncoder(dim=DIM)


def _seed(m: CollectionManager, enc: FakeEncoder) -> None:
    m.create_collection(COLL, spec=CollectionSpec(dense_dim=DIM, model_name=enc.model_name), recreate=True)
    m.upsert(
        COLL, ids=SEED_IDS, texts=SEED_TEXTS, embeddings=enc.encode_documents(SEED_TEXTS), metadata=SEED_META
    )
    m.create_collection(
        "ints", spec=CollectionSpec(dense_dim=DIM, model_name=enc.model_name, id_type="int64"), recreate=True
    )
    m.upsert("ints", ids=[1, 2], texts=SEED_TEXTS[:2], embeddings=enc.encode_documents(SEED_TEXTS[:2]))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, enc: FakeEncoder) -> Iterator[CollectionManager]:
    """One Milvus Lite file for the module: ``docs`` (varchar ids) and ``ints`` (int64 ids), seeded."""
    uri = str(tmp_path_factory.mktemp("bad-input") / "milvus.db")
    m = CollectionManager(uri)
    _seed(m, enc)
    try:
        yield m
    finally:
        m.close()


SEEDED: dict[str, tuple[int, str]] = {}


@pytest.fixture
def unchanged(store: CollectionManager, enc: FakeEncoder) -> Iterator[CollectionManager]:
    """The store, checked after the test: nothing stored changed in either collection.

    A test that did change it gets the seed back afterwards, so one failure does not spill into others.
    """
    before = {name: checksum(store, name) for name in (COLL, "ints")}
    SEEDED.setdefault("docs", before[COLL])
    assert before[COLL] == SEEDED["docs"] and before[COLL][0] == len(SEED_IDS)
    yield store
    after = {name: checksum(store, name) for name in (COLL, "ints")}
    if after != before:
        _seed(store, enc)
    assert after == before, f"a refused input changed what was stored: {before} -> {after}"


@dataclass(frozen=True)
class Case:
    """One bad input: ``call(manager, encoder)`` must raise ``exc`` with this field / row / fix."""

    call: Callable[[CollectionManager, FakeEncoder], object]
    exc: type[BaseException]
    field: str | None
    row: int | None
    fix: str
    """A regex the message must match: the fix (or the rule the caller must meet)."""
    names: tuple[str, ...] = field(default=())
    """Other words the message must contain (the offending value, the collection...)."""


def check_error(err: BaseException, case: Case) -> None:
    assert isinstance(err, MilvusM3Error), f"{type(err).__name__} is not from the milvus-m3 error tree: {err}"
    assert isinstance(err, case.exc), f"expected {case.exc.__name__}, got {type(err).__name__}: {err}"
    msg = str(err)
    if case.field is not None:
        assert getattr(err, "field", None) == case.field, f"field={getattr(err, 'field', None)!r}: {msg}"
        assert case.field in msg, f"message does not name the field {case.field!r}: {msg}"
    if case.row is not None:
        assert getattr(err, "row", None) == case.row, f"row={getattr(err, 'row', None)!r}: {msg}"
        assert re.search(rf"\b(row|query) {case.row}\b", msg), f"message does not name row {case.row}: {msg}"
    assert re.search(case.fix, msg, re.IGNORECASE), f"message does not say the fix /{case.fix}/: {msg}"
    for word in case.names:
        assert word in msg, f"message does not name {word!r}: {msg}"
    assert len(msg) < 2_000, "message is too long to read"


# ------------------------------------------------------------------------ manager: vectors, ids, texts


def _emb(enc: FakeEncoder, texts: list[str] = BATCH_TEXTS) -> M3Embeddings:
    return enc.encode_documents(texts)


def _dense_with(value: float, col: int = 3) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        e = _emb(enc)
        dense = e.dense.copy()
        dense[BAD_ROW, col] = value
        return m.upsert(
            COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=dense, sparse=e.sparse)
        )

    return call


def _zero_dense(m: CollectionManager, enc: FakeEncoder) -> object:
    e = _emb(enc)
    dense = e.dense.copy()
    dense[BAD_ROW] = 0.0
    return m.upsert(
        COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=dense, sparse=e.sparse)
    )


def _sparse_with(vec: dict[Any, Any]) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        e = _emb(enc)
        sparse = list(e.sparse)
        sparse[BAD_ROW] = {**sparse[BAD_ROW], **vec}
        return m.upsert(
            COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=e.dense, sparse=sparse)
        )

    return call


def _ids_with(bad: Any, coll: str = COLL) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        ids: list[Any] = list(BATCH_IDS) if coll == COLL else [1, 10, 11, 12]
        ids[BAD_ROW] = bad
        return m.upsert(coll, ids=ids, texts=BATCH_TEXTS, embeddings=_emb(enc))

    return call


def _text_with(bad: Any) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        texts: list[Any] = list(BATCH_TEXTS)
        texts[BAD_ROW] = bad
        return m.upsert(COLL, ids=BATCH_IDS, texts=texts, embeddings=_emb(enc))

    return call


def _meta_with(bad: Any) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        meta: list[Any] = [{"k": i} for i in range(4)]
        meta[BAD_ROW] = bad
        return m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=_emb(enc), metadata=meta)

    return call


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


MANAGER_CASES: dict[str, Case] = {
    # dense vectors (test_collection covers NaN at row 2, duplicate ids, a str sparse id and a wrong dim)
    "dense-inf": Case(_dense_with(float("inf")), InputError, "dense", BAD_ROW, r"re-encode|drop the row"),
    "dense-minus-inf": Case(
        _dense_with(float("-inf"), col=0), InputError, "dense", BAD_ROW, r"re-encode|drop the row"
    ),
    "dense-all-zero": Case(_zero_dense, InputError, "dense", BAD_ROW, r"re-encode|drop the row"),
    # sparse vectors
    "sparse-negative-id": Case(
        _sparse_with({-5: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]", ("-5",)
    ),
    "sparse-id-2^32": Case(
        _sparse_with({2**32: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]", (str(2**32),)
    ),
    "sparse-id-2^32-1": Case(
        _sparse_with({2**32 - 1: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]"
    ),
    "sparse-float-id": Case(_sparse_with({7.0: 0.3}), InputError, "sparse", BAD_ROW, r"ids must be ints"),
    "sparse-negative-weight": Case(
        _sparse_with({9: -0.1}), InputError, "sparse", BAD_ROW, r"finite and >= 0", ("id 9",)
    ),
    "sparse-nan-weight": Case(
        _sparse_with({9: float("nan")}), InputError, "sparse", BAD_ROW, r"finite and >= 0", ("nan",)
    ),
    "sparse-inf-weight": Case(
        _sparse_with({9: float("inf")}), InputError, "sparse", BAD_ROW, r"finite and >= 0"
    ),
    "sparse-string-weight": Case(_sparse_with({9: "heavy"}), InputError, "sparse", BAD_ROW, r"not a number"),
    "sparse-not-a-dict": Case(
        lambda m, enc: m.upsert(
            COLL,
            ids=BATCH_IDS,
            texts=BATCH_TEXTS,
            embeddings=M3Embeddings(dense=_emb(enc).dense, sparse=[{}, {}, [(1, 0.5)], {}]),
        ),  # type: ignore[list-item]
        InputError,
        "sparse",
        BAD_ROW,
        r"must be a dict of token id -> weight",
    ),
    # ids
    "id-empty": Case(_ids_with(""), InputError, "id", BAD_ROW, r"non-empty id"),
    "id-whitespace": Case(_ids_with("   "), InputError, "id", BAD_ROW, r"non-empty id"),
    "id-too-long-ascii": Case(
        _ids_with("x" * 513), InputError, "id", BAD_ROW, r"shorter ids|larger id_max_length", ("513 bytes",)
    ),
    "id-too-long-multibyte": Case(  # 200 characters, 600 bytes: the key limit is in bytes
        _ids_with("€" * 200), InputError, "id", BAD_ROW, r"shorter ids|larger id_max_length", ("600 bytes",)
    ),
    "id-int-for-varchar": Case(_ids_with(42), InputError, "id", BAD_ROW, r"convert with str\(\)"),
    "id-none": Case(_ids_with(None), InputError, "id", BAD_ROW, r"convert with str\(\)|non-empty id"),
    "id-nul-byte": Case(_ids_with("a\x00b"), InputError, "id", BAD_ROW, r"remove|strip|drop|fix"),
    "id-duplicate-of-last": Case(
        _ids_with("n3"), InputError, "id", 3, r"ids must be unique", ("repeats row 2",)
    ),
    "id-str-for-int64": Case(_ids_with("12", coll="ints"), InputError, "id", BAD_ROW, r"must be an int"),
    "id-beyond-int64": Case(_ids_with(2**63, coll="ints"), InputError, "id", BAD_ROW, r"int64"),
    "id-count-mismatch": Case(
        lambda m, enc: m.upsert(COLL, ids=BATCH_IDS[:3], texts=BATCH_TEXTS, embeddings=_emb(enc)),
        InputError,
        "id",
        None,
        r"one id per text",
    ),
    # texts
    "text-none": Case(_text_with(None), InputError, "text", BAD_ROW, r"must be a string"),
    "text-bytes": Case(_text_with(b"raw bytes"), InputError, "text", BAD_ROW, r"must be a string|decode"),
    "text-empty": Case(_text_with(""), InputError, "text", BAD_ROW, r"non-empty|drop the row|give it"),
    "text-whitespace-only": Case(
        _text_with(" \t\n "), InputError, "text", BAD_ROW, r"non-empty|drop the row|give it"
    ),
    "text-nul-byte": Case(
        _text_with("before\x00after"), InputError, "text", BAD_ROW, r"strip control characters"
    ),
    "text-lone-surrogate": Case(
        _text_with("bad \udcff byte"), InputError, "text", BAD_ROW, r"fix the input encoding"
    ),
    "text-beyond-varchar": Case(
        _text_with("é" * 40_000),
        InputError,
        "text",
        BAD_ROW,
        r"chunk long documents|larger text_max_length",
        ("80000 bytes",),
    ),
    "texts-one-string": Case(
        lambda m, enc: m.upsert(COLL, ids=["a"], texts="one string", embeddings=_emb(enc, ["one string"])),
        InputError,
        "text",
        None,
        r"wrap it",
    ),
    # metadata
    "metadata-set": Case(
        _meta_with({"tags": {"a", "b"}}), InputError, "metadata", BAD_ROW, r"JSON-serialisable"
    ),
    "metadata-object": Case(
        _meta_with({"obj": _Opaque()}), InputError, "metadata", BAD_ROW, r"JSON-serialisable"
    ),
    "metadata-nan": Case(_meta_with({"score": math.nan}), InputError, "metadata", BAD_ROW, r"without NaN"),
    "metadata-too-large": Case(
        _meta_with({"blob": "x" * 70_000}),
        InputError,
        "metadata",
        BAD_ROW,
        r"store large values elsewhere",
        ("65536",),
    ),
    "metadata-not-a-dict": Case(
        _meta_with(["a", "list"]), InputError, "metadata", BAD_ROW, r"must be a dict"
    ),
    "metadata-count-mismatch": Case(
        lambda m, enc: m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=_emb(enc), metadata=[{}]),
        InputError,
        "metadata",
        None,
        r"4 texts but 1 metadata",
    ),
}


@pytest.mark.parametrize("case_id", sorted(MANAGER_CASES))
def test_manager_refuses(case_id: str, unchanged: CollectionManager, enc: FakeEncoder) -> None:
    case = MANAGER_CASES[case_id]
    with pytest.raises(MilvusM3Error) as err:
        case.call(unchanged, enc)
    check_error(err.value, case)


# Legal inputs on the edge: accepted, stored as given, and read back.


def test_empty_sparse_vector_and_edge_ids_are_accepted(store: CollectionManager, enc: FakeEncoder) -> None:
    name = "edges"
    store.create_collection(
        name, spec=CollectionSpec(dense_dim=DIM, model_name=enc.model_name), recreate=True
    )
    texts = [
        "a doc with no sparse weights",
        "a doc whose sparse id is the largest legal one",
        "zero weights only",
    ]
    e = enc.encode_documents(texts)
    sparse = [{}, {2**32 - 2: 0.5, 0: 0.25}, {11: 0.0, 12: -0.0}]
    ids = ["é" * 170, "i" * 512, "z"]  # 510 and 512 bytes: at the key limit, not beyond
    assert (
        store.upsert(name, ids=ids, texts=texts, embeddings=M3Embeddings(dense=e.dense, sparse=sparse)) == 3
    )
    got = {
        r["id"]: {int(k): v for k, v in r["sparse"].items()}
        for r in store.get(name, ids, output_fields=["sparse"])
    }
    assert got == {ids[0]: {}, ids[1]: {2**32 - 2: 0.5, 0: 0.25}, ids[2]: {}}
    store.drop(name)


# ----------------------------------------------------------------------------------- collections


def _foreign_collection(m: CollectionManager, enc: FakeEncoder) -> object:
    """A collection created with pymilvus directly, not by milvus-m3."""
    from pymilvus import DataType, MilvusClient

    if not m.has_collection("foreign"):
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description="made by hand"
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIM)
        idx = MilvusClient.prepare_index_params()
        idx.add_index(field_name="dense", index_type="FLAT", metric_type="IP")
        m.client.create_collection("foreign", schema=schema, index_params=idx)
    return m.upsert("foreign", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"]))


COLLECTION_CASES: dict[str, Case] = {
    "collection-missing-upsert": Case(
        lambda m, enc: m.upsert("nope", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"])),
        CollectionNotFoundError,
        None,
        None,
        r"create it first",
        ("'nope'",),
    ),
    "collection-not-built-by-milvus-m3": Case(
        _foreign_collection,
        SchemaMismatchError,
        None,
        None,
        r"create a new collection with milvus-m3",
        ("'foreign'",),
    ),
}


@pytest.mark.parametrize("case_id", sorted(COLLECTION_CASES))
def test_collection_refuses(case_id: str, unchanged: CollectionManager, enc: FakeEncoder) -> None:
    case = COLLECTION_CASES[case_id]
    with pytest.raises(MilvusM3Error) as err:
        case.call(unchanged, enc)
    check_error(err.value, case)


# ----------------------------------------------------------------------------------- the searcher


def _search(**kwargs: Any) -> Callable[[CollectionManager, FakeEncoder], object]:
    query = kwargs.pop("query", "cat on the mat")

    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        from milvus_m3.search import HybridSearcher

        return HybridSearcher(m, COLL, enc).search(query, **kwargs)

    return call


def _searcher(
    collection: str = COLL, enc: FakeEncoder | None = None, **kwargs: Any
) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, default: FakeEncoder) -> object:
        from milvus_m3.search import HybridSearcher

        return HybridSearcher(m, collection, enc or default, **kwargs).search("cat")

    return call


def _search_batch(queries: Any) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        from milvus_m3.search import HybridSearcher

        return HybridSearcher(m, COLL, enc).search_batch(queries)

    return call


def _f(field: str, op: str, value: Any) -> Any:
    from milvus_m3.filters import Filter

    return Filter(field, op, value)


def _search_structured(
    field: str, op: str, value: Any, **kwargs: Any
) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        from milvus_m3.search import HybridSearcher

        return HybridSearcher(m, COLL, enc).search("cat", filter=_f(field, op, value), **kwargs)

    return call


SEARCH_CASES: dict[str, Case] = {
    # test_search covers limit/offset/mode/ranker/weights/candidate_limit/group_by, bad queries, filters
    # the engine rejects, another model or dim. These are the gaps.
    "limit-beyond-topk": Case(_search(limit=16_385), ConfigError, None, None, r"at most 16384", ("16385",)),
    "weights-three": Case(
        _search(ranker="weighted", weights=[0.5, 0.3, 0.2]),
        ConfigError,
        None,
        None,
        r"two numbers \(dense, sparse\)",
    ),
    "output-field-unknown": Case(_search(output_fields=["passwd"]), ConfigError, None, None, r"choose from"),
    "query-none": Case(_search(query=None), InputError, "query", None, r"must be a string"),
    "search-missing-collection": Case(
        _searcher(collection="nope"), CollectionNotFoundError, None, None, r"create it first", ("'nope'",)
    ),
    "search-foreign-collection": Case(  # the test creates it first (see _foreign_collection)
        _searcher(collection="foreign"),
        SchemaMismatchError,
        None,
        None,
        r"create a new collection with milvus-m3",
    ),
}


@pytest.mark.parametrize("case_id", sorted(SEARCH_CASES))
def test_search_refuses(case_id: str, unchanged: CollectionManager, enc: FakeEncoder) -> None:
    case = SEARCH_CASES[case_id]
    if case_id == "search-foreign-collection":
        with pytest.raises(SchemaMismatchError):
            _foreign_collection(unchanged, enc)  # makes sure it exists
    with pytest.raises(MilvusM3Error) as err:
        case.call(unchanged, enc)
    check_error(err.value, case)


def test_searcher_still_works_after_every_refusal(store: CollectionManager, enc: FakeEncoder) -> None:
    """After the refused searches (a bad filter can take Milvus Lite's embedded server down), the same
    store answers: every seeded document is found by its own text."""
    from milvus_m3.search import HybridSearcher

    s = HybridSearcher(store, COLL, enc)
    for doc_id, text in zip(SEED_IDS, SEED_TEXTS, strict=False):
        assert s.search(text, limit=1)[0].id == doc_id


# ---------------------------------------------------------------------------------- the embedder


@pytest.fixture(scope="module")
def strict_embedder(tiny_checkpoint: Path) -> Any:
    """The tiny model with short max lengths and overflow='error'."""
    from milvus_m3.embedder.model import M3Embedder

    return M3Embedder(
        tiny_checkpoint,
        device="cpu",
        precision="fp32",
        overflow="error",
        document_max_length=64,
        query_max_length=32,
    )


LONG = "retrieval " * 400  # far beyond 64 tokens

# test_embedder covers None / int / bytes / "" / whitespace rows, a bare string and a long document with
# overflow="error"; these are the gaps.
EMBEDDER_CASES: dict[str, tuple[str, Any, type[BaseException], int | None, str]] = {
    # case id: (documents|queries, texts, exception, row, fix regex)
    "embed-query-too-long": ("queries", ["ok", "fine", LONG], TextTooLongError, 2, r"raise query_max_length"),
    "embed-doc-too-long-last-row": (
        "documents",
        ["ok", "fine", "x", LONG],
        TextTooLongError,
        3,
        r"raise document_max_length|--chunk-tokens",
    ),
    "embed-lone-surrogate-document": (
        "documents",
        ["ok", "fine", "bad \udcff byte"],
        InputError,
        2,
        r"UTF-8|encoding",
    ),
    "embed-lone-surrogate-query": ("queries", ["ok", "\ud800"], InputError, 1, r"UTF-8|encoding"),
    "embed-list-row": ("documents", ["ok", ["a", "list"]], InputError, 1, r"non-empty str"),
    "embed-nbsp-only": (
        "queries",
        ["ok", "\u00a0\u2003\u3000"],
        InputError,
        1,
        r"drop the row or give it some text",
    ),
}


@pytest.mark.parametrize("case_id", sorted(EMBEDDER_CASES))
def test_embedder_refuses(case_id: str, strict_embedder: Any, unchanged: CollectionManager) -> None:
    kind, texts, exc, row, fix = EMBEDDER_CASES[case_id]
    fn = strict_embedder.encode_documents if kind == "documents" else strict_embedder.encode_queries
    with pytest.raises(MilvusM3Error) as err:
        fn(texts)
    check_error(err.value, Case(lambda m, e: None, exc, "text", row, fix))


# ------------------------------------------------------------------------------ checkpoint dirs


def _copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _corrupt(name: str, data: bytes) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        (d / name).write_bytes(data)

    return go


def _remove(*names: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        for n in names:
            (d / n).unlink(missing_ok=True)

    return go


def _head_with_wrong_keys(d: Path) -> None:
    import torch

    torch.save({"w": torch.zeros(1, 32), "b": torch.zeros(1)}, d / "sparse_linear.pt")


def _head_as_module(d: Path) -> None:
    """A whole nn.Module pickled (what torch.save(model) gives): not a plain tensor state dict."""
    import torch

    torch.save(torch.nn.Linear(32, 32), d / "colbert_linear.pt")


# test_embedder covers: each file missing, truncated heads and safetensors, a head of another model, a
# missing directory, pickled code in sparse_linear.pt. These are the gaps.
CHECKPOINT_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    # case id: (damage, regex the message must match: names the file and the fix)
    "ckpt-no-tokenizer-at-all": (
        _remove("tokenizer.json", "sentencepiece.bpe.model"),
        r"tokenizer files are missing.*tokenizer\.json",
    ),
    "ckpt-garbage-sparse_linear": (
        _corrupt("sparse_linear.pt", b"not a torch file at all"),
        r"sparse_linear\.pt .*corrupt.*re-download",
    ),
    "ckpt-empty-colbert_linear": (
        _corrupt("colbert_linear.pt", b""),
        r"colbert_linear\.pt .*corrupt.*re-download",
    ),
    "ckpt-head-wrong-keys": (_head_with_wrong_keys, r"sparse_linear\.pt .*not a plain tensor state dict"),
    "ckpt-head-is-a-pickled-module": (
        _head_as_module,
        r"colbert_linear\.pt .*(not a plain tensor state dict|corrupt)",
    ),
    "ckpt-corrupt-config": (_corrupt("config.json", b"{not json"), r"config\.json .*unreadable"),
    "ckpt-config-without-hidden-size": (
        _corrupt("config.json", b'{"model_type": "xlm-roberta"}'),
        r"config\.json .*hidden_size",
    ),
    "ckpt-corrupt-tokenizer": (
        _corrupt("tokenizer.json", b'{"version": "1.0", "model": 17}'),
        r"tokenizer|complete BGE-M3 checkpoint",
    ),
    "ckpt-safetensors-bad-header": (
        _corrupt("model.safetensors", b"\xff" * 8 + b"{}"),
        r"model\.safetensors .*corrupt or truncated.*re-download",
    ),
}


@pytest.mark.parametrize("case_id", sorted(CHECKPOINT_CASES))
def test_checkpoint_refused(case_id: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from milvus_m3.embedder.model import M3Embedder

    damage, pattern = CHECKPOINT_CASES[case_id]
    d = _copy_ckpt(tiny_checkpoint, tmp_path / "ckpt")
    damage(d)
    assert (tiny_checkpoint / "sparse_linear.pt").stat().st_size > 0  # the shared fixture is untouched
    with pytest.raises(ModelLoadError) as err:
        M3Embedder(d, device="cpu", precision="fp32")
    msg = str(err.value)
    assert re.search(pattern, msg, re.DOTALL), msg
    assert str(d) in msg, f"the message does not say which directory: {msg}"


# ----------------------------------------------------------------------------- input files, Python API


def _gz_cut(d: Path) -> Path:
    import gzip

    body = "".join(
        json.dumps({"id": f"g{i}", "text": f"gzip document {i} " * 20}) + "\n" for i in range(2000)
    )
    raw = gzip.compress(body.encode())
    (d / "cut.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    return d / "cut.jsonl.gz"


def _csv_bad_header(d: Path) -> Path:
    (d / "h.csv").write_bytes(b"id,t\xe9xt\n1,hello\n")
    return d / "h.csv"


def _a_directory(d: Path) -> Path:
    (d / "adir.jsonl").mkdir()
    return d / "adir.jsonl"


FILE_CASES: dict[str, tuple[Callable[[Path], Path], type[BaseException], str]] = {
    # case id: (make the input, exception, regex: names the file (and line) and the fix)
    "file-gzip-cut-short": (
        _gz_cut,
        InputError,
        r"cut\.jsonl\.gz: the gzip stream is corrupt or cut short.*re-create the file",
    ),
    "file-csv-header-not-utf8": (
        _csv_bad_header,
        InputError,
        r"h\.csv:1: the header row must hold distinct UTF-8",
    ),
    "file-is-a-directory": (_a_directory, ConfigError, r"adir\.jsonl does not exist or is not a file"),
}


@pytest.mark.parametrize("case_id", sorted(FILE_CASES))
def test_input_file_refused(
    case_id: str, unchanged: CollectionManager, enc: FakeEncoder, tmp_path: Path
) -> None:
    """Whole-file problems stop the job with the file named; what was stored stays (this job writes
    into the seeded collection)."""
    from milvus_m3.ingest import ingest

    make, exc, pattern = FILE_CASES[case_id]
    path = make(tmp_path)
    before = checksum(unchanged)
    with pytest.raises(MilvusM3Error) as err:
        ingest([path], manager=unchanged, collection=COLL, encoder=enc, batch_size=4096, progress=False)
    assert isinstance(err.value, exc), f"{type(err.value).__name__}: {err.value}"
    assert re.search(pattern, str(err.value), re.DOTALL), str(err.value)
    if case_id == "file-gzip-cut-short":  # one batch bigger than what the cut file holds: nothing written
        assert checksum(unchanged) == before


def test_utf16_file_is_named_as_such(unchanged: CollectionManager, enc: FakeEncoder, tmp_path: Path) -> None:
    """A UTF-16 export (Windows tools write them) is invalid UTF-8 on every line. Either the file is
    refused as UTF-16 with the fix, or every row is reported as an encoding problem: never as
    'malformed JSON', which sends the user looking for a syntax error that is not there."""
    from milvus_m3.ingest import ingest

    path = tmp_path / "utf16.jsonl"
    body = "".join(json.dumps({"id": f"u{i}", "text": f"utf16 text {i}"}) + "\n" for i in range(3))
    path.write_bytes(body.encode("utf-16"))
    try:
        rep = ingest(
            [path],
            manager=unchanged,
            collection=COLL,
            encoder=enc,
            errors_path=tmp_path / "e.jsonl",
            progress=False,
        )
    except InputError as exc:
        assert re.search(r"UTF-16|encoding", str(exc)) and "utf16.jsonl" in str(exc), str(exc)
        return
    assert rep.written == 0 and rep.failed == rep.read >= 3
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    bad = [
        f"line {e['line']}: {e['error']}"
        for e in lines
        if not re.search(r"UTF-8|UTF-16|encoding", e["error"])
    ]
    assert not bad, bad


# ------------------------------------------------------------------------------------- the CLI

_SCRIPT = Path(sys.executable).parent / "milvus-m3"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "milvus_m3"]
ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 300


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILVUS_")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return env


def _cli_ok(p: subprocess.CompletedProcess[str] | Any, *, code: int | None = None) -> None:
    assert p.returncode != 0, f"exit 0 for a bad input:\n{p.stdout[-2000:]}"
    if code is not None:
        assert p.returncode == code, f"exit {p.returncode}, expected {code}:\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-4000:]
    assert p.stderr.strip(), "no message on stderr"


# The bad-file ingest: a real `milvus-m3 ingest` over a JSONL and a CSV holding one bad row per case,
# killed with SIGKILL at three random points (one during start-up, two at random checkpoints) and
# resumed each time; the last --resume finishes. The errors file must hold each bad row exactly once
# (a resume cuts back what a killed run wrote past its checkpoint) and the collection exactly the good
# rows. These kills add to the three of test_cli's kill -9 test: six points in all.

GOOD_JSONL = 30
GOOD_CSV = 12
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # far beyond --max-length 32

JSONL_BAD: dict[str, tuple[bytes, str | None, str]] = {
    # case id: (the line, field, regex the error must match (the fix or the rule))
    "jsonl-raw-nul-byte": (
        b'{"id": "b-nul-raw", "text": "raw \x00 nul"}',
        None,
        r"malformed JSON.*control character",
    ),
    "jsonl-escaped-nul": (
        b'{"id": "b-nul-esc", "text": "escaped \\u0000 nul"}',
        "text",
        r"NUL byte; strip control characters",
    ),
    "jsonl-invalid-utf8": (
        b'{"id": "b-utf8", "text": "caf\xe9 au lait"}',
        None,
        r"invalid UTF-8 at byte \d+",
    ),
    "jsonl-lone-surrogate": (b'{"id": "b-sur", "text": "lone \\ud800 half"}', "text", r"not valid UTF-8"),
    "jsonl-id-too-long": (
        json.dumps({"id": "L" * 600, "text": "fine text"}).encode(),
        "id",
        r"600 bytes.*shorter ids",
    ),
    "jsonl-metadata-too-large": (
        json.dumps({"id": "b-big", "text": "fine text", "blob": "y" * 70_000}).encode(),
        "metadata",
        r"store large values elsewhere",
    ),
    "jsonl-text-too-long": (
        json.dumps({"id": "b-long", "text": LONG_TEXT}).encode(),
        "text",
        r"--chunk-tokens|--truncate",
    ),
    "jsonl-text-array": (b'{"id": "b-arr", "text": ["a", "b"]}', "text", r"must be a string, got an array"),
    "jsonl-text-null": (b'{"id": "b-null", "text": null}', "text", r"missing text"),
    "jsonl-text-whitespace": (b'{"id": "b-ws", "text": " \\t\\n "}', "text", r"empty text"),
    "jsonl-id-object": (b'{"id": {"k": 1}, "text": "fine text"}', "id", r"id must be a string or an integer"),
    "jsonl-id-empty": (b'{"id": "", "text": "fine text"}', "id", r"missing id"),
    "jsonl-not-an-object": (b'["id", "text"]', None, r"expected a JSON object"),
}
CSV_BAD: dict[str, tuple[bytes, str | None, str]] = {
    "csv-nul-byte": (b'c-nul,"nul \x00 in csv",en', "text", r"NUL byte; strip control characters"),
    "csv-invalid-utf8": (b"c-utf8,caf\xe9 in csv,en", "text", r"invalid UTF-8"),
    "csv-field-count": (b"c-cols,one,two,three", None, r"has 4 fields, the header has 3"),
    "csv-empty-text": (b"c-empty,,en", "text", r"empty text"),
}


def _write_bad_files(d: Path) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Writes a.jsonl and b.csv; returns case -> (file, line) and the good ids."""
    where: dict[str, tuple[str, int]] = {}
    good: set[str] = set()
    lines: list[bytes] = []
    bad = list(JSONL_BAD.items())
    for i in range(GOOD_JSONL):
        if i % 2 == 1 and bad:
            case, (raw, _, _) = bad.pop(0)
            lines.append(raw)
            where[case] = ("a.jsonl", len(lines))
        lines.append(
            json.dumps(
                {"id": f"a{i}", "text": f"alpha document {i} about topic {i % 5}", "lang": "en"}
            ).encode()
        )
        good.add(f"a{i}")
    assert not bad
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows = [b"id,text,lang"]
    cbad = list(CSV_BAD.items())
    for i in range(GOOD_CSV):
        if i % 3 == 2 and cbad:
            case, (raw, _, _) = cbad.pop(0)
            rows.append(raw)
            where[case] = ("b.csv", len(rows))
        rows.append(f"c{i},csv document {i} on topic {i % 3},de".encode())
        good.add(f"c{i}")
    assert not cbad
    (d / "b.csv").write_bytes(b"\n".join(rows) + b"\n")
    return where, good


def _done(state: Path) -> int:
    try:
        return sum(int(v.get("done", 0)) for v in json.loads(state.read_text())["inputs"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return 0


@dataclass
class BadIngest:
    where: dict[str, tuple[str, int]]
    good: set[str]
    errors: list[dict[str, Any]]
    summary: dict[str, Any]
    stored: dict[str, str]
    kills: list[int]
    total: int
    stderr: str


@pytest.fixture(scope="module")
def bad_ingest(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> BadIngest:
    import random
    import signal
    import time

    d = tmp_path_factory.mktemp("cli-bad-files")
    where, good = _write_bad_files(d)
    total = GOOD_JSONL + GOOD_CSV + len(JSONL_BAD) + len(CSV_BAD)
    db = str(d / "bad.db")
    state = d / "bad.docs.ingest-state.json"
    args = [
        *CLI,
        "ingest",
        "a.jsonl",
        "b.csv",
        "--collection",
        "docs",
        "--uri",
        db,
        "--model",
        str(tiny_checkpoint),
        "--batch-size",
        "4",
        "--max-length",
        "32",
        "--metadata-fields",
        "blob,lang",
        "--json",
        "-q",
    ]
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    first = rng.randint(4, total // 2)
    # kill 1: early, at a random moment of start-up (before or just after the first checkpoint);
    # kills 2 and 3: once the checkpoint covers a random number of records.
    plan: list[tuple[str, float]] = [
        ("seconds", rng.uniform(0.5, 4.0)),
        ("records", first),
        ("records", rng.randint(first + 4, total - 4)),
    ]
    kills: list[int] = []
    for i, (kind, at) in enumerate(plan):
        proc = subprocess.Popen(
            [*args, *(["--resume"] if i else [])],
            cwd=d,
            env=cli_env(),
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        start = time.monotonic()
        try:
            while proc.poll() is None:
                now = time.monotonic() - start
                assert now < CLI_TIMEOUT, f"ingest never reached {kind} {at} (seed {seed})"
                if (now >= at) if kind == "seconds" else (_done(state) >= at):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    kills.append(_done(state))
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=60)
    final = subprocess.run(
        [*args, "--resume"],
        check=False,
        cwd=d,
        env=cli_env(),
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=CLI_TIMEOUT,
    )
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-3000:]}"
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    errors = [
        json.loads(x) for x in (d / "bad.docs.ingest-errors.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    with CollectionManager(db) as m:
        rows = m.client.query("docs", filter='id != ""', output_fields=["id", "text"], limit=16_384)
        assert m.count("docs") == len(rows)
    stored: dict[str, str] = {}
    for r in rows:
        assert r["id"] not in stored, f"id {r['id']} stored twice (seed {seed})"
        stored[r["id"]] = r["text"]
    return BadIngest(where, good, errors, summary, stored, kills, total, final.stderr)


@pytest.mark.parametrize("case_id", sorted({**JSONL_BAD, **CSV_BAD}))
def test_cli_bad_row_is_reported_with_file_line_and_fix(case_id: str, bad_ingest: BadIngest) -> None:
    _, fld, pattern = {**JSONL_BAD, **CSV_BAD}[case_id]
    file, line = bad_ingest.where[case_id]
    mine = [e for e in bad_ingest.errors if (e["file"], e["line"]) == (file, line)]
    assert len(mine) == 1, f"{file}:{line} reported {len(mine)} times: {mine}"
    err = mine[0]
    assert err["field"] == fld, err
    assert re.search(pattern, err["error"], re.DOTALL), err["error"][:500]


def test_cli_bad_files_lose_and_duplicate_nothing_across_kills(bad_ingest: BadIngest) -> None:
    b = bad_ingest
    n_bad = len(JSONL_BAD) + len(CSV_BAD)
    assert len(b.kills) >= 2, f"the job was killed {len(b.kills)} times, not in the middle twice: {b.kills}"
    assert set(b.stored) == b.good, (
        f"missing {sorted(b.good - set(b.stored))[:5]}, extra {sorted(set(b.stored) - b.good)[:5]}"
    )
    assert sorted((e["file"], e["line"]) for e in b.errors) == sorted(b.where.values())  # each bad row once
    assert b.summary["skipped"] + b.summary["read"] == b.total
    assert b.summary["failed"] <= n_bad  # this run's share; the errors file holds them all
    assert all(t.startswith(("alpha document", "csv document")) for t in b.stored.values())
    assert "Traceback" not in b.stderr


# Light commands: they fail before any model is loaded (argparse, the collection check, the checkpoint
# check), so they run in parallel; each has its own copy of a seeded database.

LIGHT_CASES: dict[str, tuple[list[str], int, str]] = {
    # case id: (arguments after the command, exit code, regex on stderr)
    "cli-search-missing-collection": (
        ["search", "cat", "--collection", "nope"],
        1,
        r"'nope' does not exist.*milvus-m3 create",
    ),
    "cli-search-limit-zero": (
        ["search", "cat", "--collection", COLL, "--limit", "0"],
        2,
        r"--limit.*must be at least 1",
    ),
    "cli-search-limit-not-int": (
        ["search", "cat", "--collection", COLL, "--limit", "ten"],
        2,
        r"'ten' is not an integer",
    ),
    "cli-search-unknown-mode": (
        ["search", "cat", "--collection", COLL, "--mode", "semantic"],
        2,
        r"invalid choice: 'semantic'",
    ),
    "cli-search-unknown-ranker": (
        ["search", "cat", "--collection", COLL, "--ranker", "borda"],
        2,
        r"invalid choice: 'borda'",
    ),
    "cli-ingest-into-foreign-collection": (
        ["ingest", "{good}", "--collection", "foreign"],
        1,
        r"not built by milvus-m3.*create a new collection",
    ),
    "cli-ingest-a-directory": (
        ["ingest", "{dir}", "--collection", COLL],
        2,
        r"does not exist or is not a file",
    ),
    "cli-ingest-batch-size-zero": (
        ["ingest", "{good}", "--collection", COLL, "--batch-size", "0"],
        2,
        r"must be at least 1",
    ),
    "cli-ingest-checkpoint-without-sparse-head": (
        ["ingest", "{good}", "--collection", COLL, "--model", "{nohead}"],
        1,
        r"sparse_linear\.pt is missing.*complete BGE-M3 checkpoint",
    ),
    "cli-ingest-chunk-overlap-alone": (
        ["ingest", "{good}", "--collection", COLL, "--chunk-overlap", "4"],
        2,
        r"--chunk-overlap needs --chunk-tokens",
    ),
    # Milvus Lite lets one process open a .db file; this test process holds this one open.
    "cli-db-open-in-another-process": (
        ["info", "--collection", COLL],
        1,
        r"milvus-m3: error: [^\n]*\.db[^\n]*(another|other) (process|program)",
    ),
}


@pytest.fixture(scope="module")
def light_runs(
    tmp_path_factory: pytest.TempPathFactory,
    store: CollectionManager,
    enc: FakeEncoder,
    tiny_checkpoint: Path,
) -> dict[str, tuple[Any, tuple[int, str], tuple[int, str]]]:
    from concurrent.futures import ThreadPoolExecutor

    d = tmp_path_factory.mktemp("cli-light")
    seed_db = d / "seed.db"
    with CollectionManager(str(seed_db)) as m:
        _seed(m, enc)
        with pytest.raises(SchemaMismatchError):
            _foreign_collection(m, enc)
        seeded = checksum(m)
    # pymilvus keeps a Milvus Lite file open until the process ends (close() does not release it), so
    # the copies below are only opened here after the CLI has run, except the one meant to be locked.
    (d / "good.jsonl").write_text(
        json.dumps({"id": "g1", "text": "a good document"}) + "\n", encoding="utf-8"
    )
    (d / "adir").mkdir()
    nohead = d / "nohead"
    nohead.mkdir()
    for f in tiny_checkpoint.iterdir():
        if f.name != "sparse_linear.pt":
            (nohead / f.name).symlink_to(f.resolve())

    def one(case: str) -> tuple[Any, tuple[int, str], tuple[int, str]]:
        db = d / f"c{sorted(LIGHT_CASES).index(case)}.db"  # Milvus Lite wants file names under 36 characters
        shutil.copyfile(seed_db, db)
        before = seeded
        holder = None
        if case == "cli-db-open-in-another-process":
            holder = CollectionManager(str(db))  # kept open (the engine holds the file) while the CLI runs
            before = checksum(holder)
        args = [a.format(good=d / "good.jsonl", dir=d / "adir", nohead=nohead) for a in LIGHT_CASES[case][0]]
        if "--model" not in args and args[0] in ("ingest", "search"):
            args += ["--model", str(tiny_checkpoint)]
        try:
            p = subprocess.run(
                [*CLI, *args, "--uri", str(db)],
                check=False,
                cwd=d,
                env=cli_env(),
                text=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=CLI_TIMEOUT,
            )
        finally:
            if holder is not None:
                holder.close()  # the last user in this process stops the engine and frees the file
        with CollectionManager(str(db)) as m:
            after = checksum(m)
        return p, before, after

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(LIGHT_CASES, pool.map(one, LIGHT_CASES), strict=False))


@pytest.mark.parametrize("case_id", sorted(LIGHT_CASES))
def test_cli_refuses(case_id: str, light_runs: dict[str, Any]) -> None:
    _, code, pattern = LIGHT_CASES[case_id]
    p, before, after = light_runs[case_id]
    _cli_ok(p, code=code)
    assert re.search(pattern, p.stderr, re.DOTALL), p.stderr[-2000:]
    assert after == before, "a refused command changed what was stored"

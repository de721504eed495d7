"""The bad-input matrix (issue 6): every boring bad input is a clear, tested outcome with nothing lost.

Each case is its own test id. A case passes when:

- the Python API raises an exception from our tree (``MilvusM3Error``) whose message names the field,
  the row (or file and line) and the fix, with ``.field`` / ``.row`` set where a row is at fault; or
  the CLI exits non-zero with the message on stderr and no traceback;
- nothing already stored changed: the seeded collection's count and a checksum of its ids, texts and
  metadata are the same before and after (bad batches mix new ids and overwrites of stored ids with
  the bad row, so a partial write would show).

Sections: the collection manager (vectors, ids, texts, metadata), the embedder (texts), the searcher
(limit, mode, ranker, weights, filters), collections (missing, other dim, other model, foreign),
checkpoint directories (missing or corrupt files), input files and the CLI.
Cases already covered elsewhere are not repeated here: test_collection (NaN at row 2, duplicate id,
str sparse id, wrong dim), test_embedder, test_search, test_filters, test_ingest, test_cli.
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

import numpy as np
import pytest

from milvus_m3.collection import CollectionManager, CollectionSpec
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
    "quotes \" and backslashes \\ are stored as they are",
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
    m.upsert(COLL, ids=SEED_IDS, texts=SEED_TEXTS, embeddings=enc.encode_documents(SEED_TEXTS), metadata=SEED_META)
    m.create_collection("ints", spec=CollectionSpec(dense_dim=DIM, model_name=enc.model_name, id_type="int64"),
                        recreate=True)
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
        return m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=dense, sparse=e.sparse))
    return call


def _zero_dense(m: CollectionManager, enc: FakeEncoder) -> object:
    e = _emb(enc)
    dense = e.dense.copy()
    dense[BAD_ROW] = 0.0
    return m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=dense, sparse=e.sparse))


def _sparse_with(vec: dict[Any, Any]) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        e = _emb(enc)
        sparse = list(e.sparse)
        sparse[BAD_ROW] = {**sparse[BAD_ROW], **vec}
        return m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(dense=e.dense, sparse=sparse))
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
    "dense-minus-inf": Case(_dense_with(float("-inf"), col=0), InputError, "dense", BAD_ROW, r"re-encode|drop the row"),
    "dense-all-zero": Case(_zero_dense, InputError, "dense", BAD_ROW, r"re-encode|drop the row"),
    # sparse vectors
    "sparse-negative-id": Case(_sparse_with({-5: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]", ("-5",)),
    "sparse-id-2^32": Case(_sparse_with({2**32: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]", (str(2**32),)),
    "sparse-id-2^32-1": Case(_sparse_with({2**32 - 1: 0.3}), InputError, "sparse", BAD_ROW, r"\[0, 2\^32-2\]"),
    "sparse-float-id": Case(_sparse_with({7.0: 0.3}), InputError, "sparse", BAD_ROW, r"ids must be ints"),
    "sparse-negative-weight": Case(_sparse_with({9: -0.1}), InputError, "sparse", BAD_ROW, r"finite and >= 0", ("id 9",)),
    "sparse-nan-weight": Case(_sparse_with({9: float("nan")}), InputError, "sparse", BAD_ROW, r"finite and >= 0", ("nan",)),
    "sparse-inf-weight": Case(_sparse_with({9: float("inf")}), InputError, "sparse", BAD_ROW, r"finite and >= 0"),
    "sparse-string-weight": Case(_sparse_with({9: "heavy"}), InputError, "sparse", BAD_ROW, r"not a number"),
    "sparse-not-a-dict": Case(
        lambda m, enc: m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=M3Embeddings(
            dense=_emb(enc).dense, sparse=[{}, {}, [(1, 0.5)], {}])),  # type: ignore[list-item]
        InputError, "sparse", BAD_ROW, r"must be a dict of token id -> weight",
    ),
    # ids
    "id-empty": Case(_ids_with(""), InputError, "id", BAD_ROW, r"non-empty id"),
    "id-whitespace": Case(_ids_with("   "), InputError, "id", BAD_ROW, r"non-empty id"),
    "id-too-long-ascii": Case(_ids_with("x" * 513), InputError, "id", BAD_ROW, r"shorter ids|larger id_max_length", ("513 bytes",)),
    "id-too-long-multibyte": Case(  # 200 characters, 600 bytes: the key limit is in bytes
        _ids_with("€" * 200), InputError, "id", BAD_ROW, r"shorter ids|larger id_max_length", ("600 bytes",)),
    "id-int-for-varchar": Case(_ids_with(42), InputError, "id", BAD_ROW, r"convert with str\(\)"),
    "id-none": Case(_ids_with(None), InputError, "id", BAD_ROW, r"convert with str\(\)|non-empty id"),
    "id-nul-byte": Case(_ids_with("a\x00b"), InputError, "id", BAD_ROW, r"remove|strip|drop|fix"),
    "id-duplicate-of-last": Case(_ids_with("n3"), InputError, "id", 3, r"ids must be unique", ("repeats row 2",)),
    "id-str-for-int64": Case(_ids_with("12", coll="ints"), InputError, "id", BAD_ROW, r"must be an int"),
    "id-beyond-int64": Case(_ids_with(2**63, coll="ints"), InputError, "id", BAD_ROW, r"int64"),
    "id-count-mismatch": Case(
        lambda m, enc: m.upsert(COLL, ids=BATCH_IDS[:3], texts=BATCH_TEXTS, embeddings=_emb(enc)),
        InputError, "id", None, r"one id per text",
    ),
    # texts
    "text-none": Case(_text_with(None), InputError, "text", BAD_ROW, r"must be a string"),
    "text-bytes": Case(_text_with(b"raw bytes"), InputError, "text", BAD_ROW, r"must be a string|decode"),
    "text-empty": Case(_text_with(""), InputError, "text", BAD_ROW, r"non-empty|drop the row|give it"),
    "text-whitespace-only": Case(_text_with(" \t\n "), InputError, "text", BAD_ROW, r"non-empty|drop the row|give it"),
    "text-nul-byte": Case(_text_with("before\x00after"), InputError, "text", BAD_ROW, r"strip control characters"),
    "text-lone-surrogate": Case(_text_with("bad \udcff byte"), InputError, "text", BAD_ROW, r"fix the input encoding"),
    "text-beyond-varchar": Case(
        _text_with("é" * 40_000), InputError, "text", BAD_ROW, r"chunk long documents|larger text_max_length", ("80000 bytes",)),
    "texts-one-string": Case(
        lambda m, enc: m.upsert(COLL, ids=["a"], texts="one string", embeddings=_emb(enc, ["one string"])),
        InputError, "text", None, r"wrap it",
    ),
    # metadata
    "metadata-set": Case(_meta_with({"tags": {"a", "b"}}), InputError, "metadata", BAD_ROW, r"JSON-serialisable"),
    "metadata-object": Case(_meta_with({"obj": _Opaque()}), InputError, "metadata", BAD_ROW, r"JSON-serialisable"),
    "metadata-nan": Case(_meta_with({"score": math.nan}), InputError, "metadata", BAD_ROW, r"without NaN"),
    "metadata-too-large": Case(
        _meta_with({"blob": "x" * 70_000}), InputError, "metadata", BAD_ROW, r"store large values elsewhere", ("65536",)),
    "metadata-not-a-dict": Case(_meta_with(["a", "list"]), InputError, "metadata", BAD_ROW, r"must be a dict"),
    "metadata-count-mismatch": Case(
        lambda m, enc: m.upsert(COLL, ids=BATCH_IDS, texts=BATCH_TEXTS, embeddings=_emb(enc), metadata=[{}]),
        InputError, "metadata", None, r"4 texts but 1 metadata",
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
    store.create_collection(name, spec=CollectionSpec(dense_dim=DIM, model_name=enc.model_name), recreate=True)
    texts = ["a doc with no sparse weights", "a doc whose sparse id is the largest legal one", "zero weights only"]
    e = enc.encode_documents(texts)
    sparse = [{}, {2**32 - 2: 0.5, 0: 0.25}, {11: 0.0, 12: -0.0}]
    ids = ["é" * 170, "i" * 512, "z"]  # 510 and 512 bytes: at the key limit, not beyond
    assert store.upsert(name, ids=ids, texts=texts, embeddings=M3Embeddings(dense=e.dense, sparse=sparse)) == 3
    got = {r["id"]: {int(k): v for k, v in r["sparse"].items()} for r in store.get(name, ids, output_fields=["sparse"])}
    assert got == {ids[0]: {}, ids[1]: {2**32 - 2: 0.5, 0: 0.25}, ids[2]: {}}
    store.drop(name)


# ----------------------------------------------------------------------------------- collections


def _foreign_collection(m: CollectionManager, enc: FakeEncoder) -> object:
    """A collection created with pymilvus directly, not by milvus-m3."""
    from pymilvus import DataType, MilvusClient

    if not m.has_collection("foreign"):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="made by hand")
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIM)
        idx = MilvusClient.prepare_index_params()
        idx.add_index(field_name="dense", index_type="FLAT", metric_type="IP")
        m.client.create_collection("foreign", schema=schema, index_params=idx)
    return m.upsert("foreign", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"]))


COLLECTION_CASES: dict[str, Case] = {
    "collection-missing-upsert": Case(
        lambda m, enc: m.upsert("nope", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"])),
        CollectionNotFoundError, None, None, r"create it first", ("'nope'",),
    ),
    "collection-not-built-by-milvus-m3": Case(
        _foreign_collection, SchemaMismatchError, None, None, r"create a new collection with milvus-m3", ("'foreign'",)),
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


def _searcher(collection: str = COLL, enc: FakeEncoder | None = None, **kwargs: Any
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


def _search_structured(field: str, op: str, value: Any, **kwargs: Any
                       ) -> Callable[[CollectionManager, FakeEncoder], object]:
    def call(m: CollectionManager, enc: FakeEncoder) -> object:
        from milvus_m3.search import HybridSearcher

        return HybridSearcher(m, COLL, enc).search("cat", filter=_f(field, op, value), **kwargs)
    return call


SEARCH_CASES: dict[str, Case] = {
    # test_search covers limit/offset/mode/ranker/weights/candidate_limit/group_by, bad queries, filters
    # the engine rejects, another model or dim. These are the gaps.
    "limit-beyond-topk": Case(_search(limit=16_385), ConfigError, None, None, r"at most 16384", ("16385",)),
    "weights-three": Case(_search(ranker="weighted", weights=[0.5, 0.3, 0.2]), ConfigError, None, None,
                          r"two numbers \(dense, sparse\)"),
    "output-field-unknown": Case(_search(output_fields=["passwd"]), ConfigError, None, None, r"choose from"),
    "query-none": Case(_search(query=None), InputError, "query", None, r"must be a string"),
    "search-missing-collection": Case(_searcher(collection="nope"), CollectionNotFoundError, None, None,
                                      r"create it first", ("'nope'",)),
    "search-foreign-collection": Case(  # the test creates it first (see _foreign_collection)
        _searcher(collection="foreign"), SchemaMismatchError, None, None, r"create a new collection with milvus-m3"),
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
    for doc_id, text in zip(SEED_IDS, SEED_TEXTS):
        assert s.search(text, limit=1)[0].id == doc_id


# ---------------------------------------------------------------------------------- the embedder


@pytest.fixture(scope="module")
def strict_embedder(tiny_checkpoint: Path) -> Any:
    """The tiny model with short max lengths and overflow='error'."""
    from milvus_m3.embedder import M3Embedder

    return M3Embedder(tiny_checkpoint, device="cpu", precision="fp32", overflow="error",
                      document_max_length=64, query_max_length=32)


LONG = "retrieval " * 400  # far beyond 64 tokens

# test_embedder covers None / int / bytes / "" / whitespace rows, a bare string and a long document with
# overflow="error"; these are the gaps.
EMBEDDER_CASES: dict[str, tuple[str, Any, type[BaseException], int | None, str]] = {
    # case id: (documents|queries, texts, exception, row, fix regex)
    "embed-query-too-long": ("queries", ["ok", "fine", LONG], TextTooLongError, 2, r"raise query_max_length"),
    "embed-doc-too-long-last-row": ("documents", ["ok", "fine", "x", LONG], TextTooLongError, 3,
                                    r"raise document_max_length|--chunk-tokens"),
    "embed-lone-surrogate-document": ("documents", ["ok", "fine", "bad \udcff byte"], InputError, 2,
                                      r"UTF-8|encoding"),
    "embed-lone-surrogate-query": ("queries", ["ok", "\ud800"], InputError, 1, r"UTF-8|encoding"),
    "embed-list-row": ("documents", ["ok", ["a", "list"]], InputError, 1, r"non-empty str"),
    "embed-nbsp-only": ("queries", ["ok", "\u00a0\u2003\u3000"], InputError, 1, r"drop the row or give it some text"),
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
        _remove("tokenizer.json", "sentencepiece.bpe.model"), r"tokenizer files are missing.*tokenizer\.json"),
    "ckpt-garbage-sparse_linear": (_corrupt("sparse_linear.pt", b"not a torch file at all"),
                                   r"sparse_linear\.pt .*corrupt.*re-download"),
    "ckpt-empty-colbert_linear": (_corrupt("colbert_linear.pt", b""), r"colbert_linear\.pt .*corrupt.*re-download"),
    "ckpt-head-wrong-keys": (_head_with_wrong_keys, r"sparse_linear\.pt .*not a plain tensor state dict"),
    "ckpt-head-is-a-pickled-module": (_head_as_module, r"colbert_linear\.pt .*(not a plain tensor state dict|corrupt)"),
    "ckpt-corrupt-config": (_corrupt("config.json", b"{not json"), r"config\.json .*unreadable"),
    "ckpt-config-without-hidden-size": (_corrupt("config.json", b'{"model_type": "xlm-roberta"}'),
                                        r"config\.json .*hidden_size"),
    "ckpt-corrupt-tokenizer": (_corrupt("tokenizer.json", b'{"version": "1.0", "model": 17}'),
                               r"tokenizer|complete BGE-M3 checkpoint"),
    "ckpt-safetensors-bad-header": (_corrupt("model.safetensors", b"\xff" * 8 + b"{}"),
                                    r"model\.safetensors .*corrupt or truncated.*re-download"),
}


@pytest.mark.parametrize("case_id", sorted(CHECKPOINT_CASES))
def test_checkpoint_refused(case_id: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from milvus_m3.embedder import M3Embedder

    damage, pattern = CHECKPOINT_CASES[case_id]
    d = _copy_ckpt(tiny_checkpoint, tmp_path / "ckpt")
    damage(d)
    assert (tiny_checkpoint / "sparse_linear.pt").stat().st_size > 0  # the shared fixture is untouched
    with pytest.raises(ModelLoadError) as err:
        M3Embedder(d, device="cpu", precision="fp32")
    msg = str(err.value)
    assert re.search(pattern, msg, re.DOTALL), msg
    assert str(d) in msg, f"the message does not say which directory: {msg}"

"""Reliability, round two (issue 16): inputs, paths and concurrent jobs that must not lose rows or leak.

Every test here failed on the code before the fix it names (item numbers of the issue). Counted for the
closing note: bad-input cases (``BAD_INPUT``), fault cases (``FAULT``) and security cases
(``SECURITY``) are marked in each test's docstring; rows lost in all of them: 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.errors import (
    ConfigError,
    FilterError,
    InputError,
    MilvusM3Error,
    SchemaMismatchError,
)
from milvus_m3.ingest import ingest, read_records
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder
from tests.integration.test_ingest import WordEncoder

pytestmark = pytest.mark.integration

DIM = 16


# ------------------------------------------------------------------------------------------ helpers


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    with open(path, "wb") as fh:
        for row in rows:
            text = row if isinstance(row, str) else json.dumps(row)
            fh.write(text.encode("utf-8", "surrogatepass") + b"\n")
    return path


def docs(n: int, prefix: str = "d") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "text": f"document {i} about topic {i % 7} word{i}"} for i in range(n)]


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path / "rel.db"))
    try:
        yield m
    finally:
        m.close()


_n = iter(range(10**6))


def make(m: CollectionManager, **kw: Any) -> str:
    name = f"r{next(_n)}"
    m.create_collection(name, spec=CollectionSpec(dense_dim=DIM, model_name="fake/m3", **kw))
    return name


def texts_of(m: CollectionManager, name: str) -> dict[Any, str]:
    rows = m.client.query(collection_name=name, filter="", output_fields=["id", "text"], limit=16_384)
    return {r["id"]: r["text"] for r in rows}


def run(m: CollectionManager, name: str, files: Sequence[Path], **kw: Any) -> Any:
    kw.setdefault("progress", False)
    return ingest(
        [str(f) for f in files], manager=m, collection=name, encoder=kw.pop("encoder", FakeEncoder(DIM)), **kw
    )


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ 1. CSV with one unclosed quote


def test_csv_unclosed_quote_loses_only_its_row(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT x2. 500 rows, row 100 opens a quote it never closes: 499 stored, one bad row that
    says how many lines it would have spanned; past ``MAX_CSV_ROW_LINES`` the row is bad by itself."""
    lines = ["id,text"] + [f"c{i},plain row number {i}" for i in range(500)]
    lines[101] = 'c100,"this quote is never closed'
    f = tmp_path / "q.csv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    name = make(lite)
    errors = tmp_path / "q.errors.jsonl"
    rep = run(lite, name, [f], errors_path=errors)
    stored = texts_of(lite, name)
    assert len(stored) == 499 and "c100" not in stored and stored["c101"] == "plain row number 101"
    assert (rep.read, rep.written, rep.failed) == (500, 499, 1)
    (err,) = errors_of(errors)
    assert err["line"] == 102 and "never closed" in err["error"] and "400 lines" in err["error"]

    from milvus_m3.ingest.readers import MAX_CSV_ROW_LINES

    big = ["id,text"] + [f"b{i},row {i}" for i in range(MAX_CSV_ROW_LINES + 500)]
    big[11] = 'b10,"open'
    g = tmp_path / "big.csv"
    g.write_text("\n".join(big) + "\n", encoding="utf-8")
    recs = list(read_records(str(g)))
    bad = [r for r in recs if r.data is None]
    assert len(recs) == MAX_CSV_ROW_LINES + 500 and len(bad) == 1
    assert bad[0].line == 12 and f"more than {MAX_CSV_ROW_LINES} lines" in (bad[0].error or "")
    assert [r.data["id"] for r in recs if r.data][10:12] == ["b11", "b12"]
    # a legitimately quoted multi-line field at the end of the file is still one good row
    h = tmp_path / "ok.csv"
    h.write_text('id,text\n1,"two\nlines"\n', encoding="utf-8")
    assert [r.data for r in read_records(str(h))] == [{"id": "1", "text": "two\nlines"}]


# ------------------------------------------------------------------ 2. errors / state paths


def test_errors_and_state_paths_that_would_destroy_a_file_are_refused(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """BAD_INPUT x8: the errors or state file given as an input, as the database, as each other, or
    an existing file that is not ours: refused before anything is written; every file intact."""
    name = make(lite)
    f = write_jsonl(tmp_path / "docs.jsonl", [*docs(5), {"id": "bad"}])
    original = f.read_bytes()
    db = Path(lite.connection.uri)
    other = tmp_path / "notes.txt"
    other.write_text("my own notes\n", encoding="utf-8")
    cases: list[dict[str, Any]] = [
        {"errors_path": f},
        {"state_path": f},
        {"errors_path": db},
        {"state_path": db},
        {"errors_path": tmp_path / "s.json", "state_path": tmp_path / "s.json"},
        {"errors_path": other},
        {"state_path": other},
        {"errors_path": other, "state_path": tmp_path / "st.json", "resume": True},
    ]
    for kw in cases:
        with pytest.raises(ConfigError) as exc:
            run(lite, name, [f], **kw)
        assert any(w in str(exc.value) for w in ("input", "database", "same file", "not a milvus-m3")), kw
        assert f.read_bytes() == original and other.read_text(encoding="utf-8") == "my own notes\n"
        assert lite.count(name) == 0
    # our own files are reused: a second run replaces its own errors file
    errors = tmp_path / "e.jsonl"
    state = tmp_path / "st2.json"
    for _ in range(2):
        rep = run(lite, name, [f], errors_path=errors, state_path=state)
        assert rep.failed == 1 and len(errors_of(errors)) == 1
    assert lite.count(name) == 5


def test_cli_errors_path_on_the_database_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """BAD_INPUT. ``--errors x.db`` used to delete the database and report the rows as written."""
    from tests.integration.test_cli import count_of, env_for
    from tests.integration.test_cli import run as cli

    write_jsonl(tmp_path / "a.jsonl", [*docs(4), {"id": "nope"}])
    model = ["--model", str(tiny_checkpoint)]
    first = cli(["ingest", "a.jsonl", "--collection", "docs", "--uri", "x.db", *model, "-q"], tmp_path)
    assert first.returncode == 0, first.stderr
    size = (tmp_path / "x.db").stat().st_size
    proc = cli(
        ["ingest", "a.jsonl", "--collection", "docs", "--uri", "x.db", "--errors", "x.db", *model, "-q"],
        tmp_path,
        env=env_for(tmp_path),
    )
    assert proc.returncode == 2 and "database" in proc.stderr, proc.stderr
    assert (tmp_path / "x.db").stat().st_size >= size
    assert count_of(str(tmp_path / "x.db"), "docs") == 4


# ------------------------------------------------------------------ 3. hostile rows


def test_hostile_rows_are_bad_rows_and_resume_gets_past_them(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT x6: a lone surrogate in a metadata value, a metadata key and a title; JSON nested
    5,000 deep; an int beyond int64 in metadata and in an int64 field. Neighbours are written."""
    name = make(lite, scalar_fields=(ScalarField(name="n", dtype="int64", default=0),))
    deep = '{"id": "deep", "text": "deep", "m": ' + "[" * 5000 + "]" * 5000 + "}"
    rows: list[Any] = [
        {"id": "ok0", "text": "fine zero"},
        '{"id": "sv", "text": "surrogate value", "m": "\\ud800"}',
        '{"id": "sk", "text": "surrogate key", "m": {"\\udc00": 1}}',
        '{"id": "st", "text": "surrogate title", "title": "\\ud83d"}',
        deep,
        {"id": "big", "text": "big int", "m": 2**70},
        {"id": "bigf", "text": "big int field", "n": 2**64},
        {"id": "ok1", "text": "fine one"},
    ]
    f = write_jsonl(tmp_path / "h.jsonl", rows)
    errors = tmp_path / "h.err.jsonl"
    state = tmp_path / "h.state.json"
    rep = run(
        lite,
        name,
        [f],
        metadata_fields=["m"],
        title_field="title",
        errors_path=errors,
        state_path=state,
        batch_size=3,
    )
    assert set(texts_of(lite, name)) == {"ok0", "ok1"}
    assert (rep.written, rep.failed) == (2, 6)
    got = {e["line"]: e for e in errors_of(errors)}
    assert sorted(got) == [2, 3, 4, 5, 6, 7]
    assert "nested" in got[5]["error"] and "int64" in got[6]["error"] and got[7]["field"] == "n"
    rep2 = run(
        lite,
        name,
        [f],
        metadata_fields=["m"],
        title_field="title",
        errors_path=errors,
        state_path=state,
        resume=True,
    )
    assert rep2.skipped == 8 and lite.count(name) == 2


@pytest.mark.parametrize(
    "bad",
    [{"k": "\ud800"}, {"\udfff": 1}, {"k": 2**63}, {"k": -(2**63) - 1}, {1: "a", "1": "b"}],
    ids=["surrogate-value", "surrogate-key", "int-above-int64", "int-below-int64", "key-collision"],
)
def test_upsert_validates_every_row_before_writing(lite: CollectionManager, bad: dict[Any, Any]) -> None:
    """BAD_INPUT x5 (items 3 and 12): a bad metadata cell in row 280 of 300 (two write batches of
    256): nothing written, an InputError naming the row and field."""
    name = make(lite)
    enc = FakeEncoder(DIM)
    n = 300
    texts = [f"text {i}" for i in range(n)]
    meta: list[dict[Any, Any]] = [{"i": i} for i in range(n)]
    meta[280] = bad
    with pytest.raises(InputError) as exc:
        lite.upsert(
            name,
            ids=[f"u{i}" for i in range(n)],
            texts=texts,
            embeddings=enc.encode_documents(texts),
            metadata=meta,
        )
    assert exc.value.row == 280 and exc.value.field == "metadata"
    assert lite.count(name) == 0


def test_upsert_refuses_bad_declared_field_values(lite: CollectionManager) -> None:
    """BAD_INPUT x2: an int64 field beyond int64, a varchar field with a lone surrogate."""
    name = make(
        lite,
        scalar_fields=(
            ScalarField(name="n", dtype="int64", default=0),
            ScalarField(name="s", dtype="varchar", default=""),
        ),
    )
    enc = FakeEncoder(DIM)
    for fields in ({"n": [1, 2**63]}, {"s": ["ok", "\ud800"]}):
        with pytest.raises(InputError) as exc:
            lite.upsert(
                name,
                ids=["a", "b"],
                texts=["x", "y"],
                embeddings=enc.encode_documents(["x", "y"]),
                fields=fields,
            )
        assert exc.value.row == 1
    assert lite.count(name) == 0


# ------------------------------------------------------------------ 4. checkpoint keyed by target


def test_resume_into_another_target_is_refused(tmp_path: Path) -> None:
    """FAULT: a state file written for one target is not resumed into another (it skipped rows)."""
    f = write_jsonl(tmp_path / "a.jsonl", docs(20))
    state = tmp_path / "a.state.json"
    with CollectionManager(str(tmp_path / "one.db")) as one:
        name = make(one)
        run(one, name, [f], state_path=state)
    with CollectionManager(str(tmp_path / "two.db")) as two:
        two.create_collection(name, spec=CollectionSpec(dense_dim=DIM, model_name="fake/m3"))
        with pytest.raises(ConfigError, match="another target|target"):
            run(two, name, [f], state_path=state, resume=True)
        assert two.count(name) == 0
        rep = run(two, name, [f], state_path=state)  # without --resume it starts over
        assert rep.written == 20 and two.count(name) == 20


def test_default_state_path_is_keyed_by_target_and_inputs() -> None:
    """FAULT: two servers (or two input sets) from one directory got the same state file."""
    from milvus_m3.ingest import default_state_path

    a = default_state_path("http://h1:19530", "docs", inputs=["x.jsonl"])
    b = default_state_path("http://h2:19530", "docs", inputs=["x.jsonl"])
    c = default_state_path("http://h1:19530", "docs", inputs=["y.jsonl"])
    d = default_state_path("http://user:pw@h1:19530", "docs", inputs=["x.jsonl"])
    assert len({a, b, c}) == 3 and a == d and "pw" not in str(d)
    assert a.name.startswith("docs.") and a.name.endswith(".ingest-state.json")
    assert default_state_path("./data/x.db", "docs", inputs=["x.jsonl"]) == Path(
        "data/x.docs.ingest-state.json"
    )


def test_state_tmp_name_is_unique(tmp_path: Path) -> None:
    """FAULT: the state's temporary file had a fixed name another job (or a user's file) shared."""
    from milvus_m3.ingest.checkpoint import atomic_write_json

    target = tmp_path / "s.json"
    fixed = tmp_path / ".s.json.tmp"
    fixed.write_text("someone else's file", encoding="utf-8")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert fixed.read_text(encoding="utf-8") == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.json.tmp", "s.json"]


def test_a_state_or_errors_file_held_by_a_live_job_is_refused(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT x2: a second job on the same state file, or the same errors file, while the first runs."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(40))
    g = write_jsonl(tmp_path / "b.jsonl", docs(5, "g"))
    state, errors = tmp_path / "s.json", tmp_path / "e.jsonl"
    started = threading.Event()
    result: list[Any] = []

    class Slow(WordEncoder):
        def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
            started.set()
            time.sleep(0.2)
            return super().encode_documents(texts)

    def first() -> None:
        result.append(
            run(lite, name, [f], encoder=Slow(), state_path=state, errors_path=errors, batch_size=4)
        )

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(30)
        with pytest.raises(ConfigError, match="another ingest job"):
            run(lite, name, [g], state_path=state, errors_path=tmp_path / "e2.jsonl")
        with pytest.raises(ConfigError, match="another ingest job"):
            run(lite, name, [g], state_path=tmp_path / "s2.json", errors_path=errors)
    finally:
        t.join(60)
    assert result and result[0].written == 40
    assert set(texts_of(lite, name)) == {f"d{i}" for i in range(40)}
    rep = run(lite, name, [g], state_path=state, errors_path=errors)  # free again once it ended
    assert rep.written == 5


# ------------------------------------------------------------------ 5. --resume after the input changed


def test_resume_after_the_input_changed_is_refused_unless_forced(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: a changed input was resumed with only a log warning (its first records were skipped)."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(10))
    state = tmp_path / "s.json"
    run(lite, name, [f], state_path=state)
    write_jsonl(f, docs(10, "new"))
    with pytest.raises(ConfigError, match="changed"):
        run(lite, name, [f], state_path=state, resume=True)
    assert lite.count(name) == 10
    rep = run(lite, name, [f], state_path=state, resume=True, force_resume=True)
    assert rep.skipped == 10 and rep.read == 0


def test_resume_checks_the_settled_part_of_a_csv_by_its_digest(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT x2: a CSV changed before the checkpoint's point is refused; one fixed after it resumes."""
    name = make(lite)
    rows = [f"c{i},row number {i}" for i in range(20)]
    rows[15] = 'c15,"unclosed'
    f = tmp_path / "a.csv"
    f.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    state, errors = tmp_path / "s.json", tmp_path / "e.jsonl"
    kw: dict[str, Any] = {"state_path": state, "errors_path": errors, "batch_size": 5}
    with pytest.raises(Exception, match="a.csv:17"):
        run(lite, name, [f], on_error="fail", **kw)
    assert lite.count(name) == 15
    rows[15] = "c15,fixed"  # a fix after the settled point: resumes
    f.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    rep = run(lite, name, [f], resume=True, **kw)
    assert (rep.skipped, rep.written, rep.failed) == (15, 5, 0)
    rows[3] = "c3,edited before the settled point"
    f.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not the ones the checkpoint settled"):
        run(lite, name, [f], resume=True, **kw)
    assert texts_of(lite, name)["c3"] == "row number 3"


# ------------------------------------------------------------------ 6. chunked document re-ingested shorter


def test_chunked_document_reingested_shorter_drops_its_old_chunks(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: P had 5 chunks, then 2: P#2..P#4 stayed searchable."""
    name = make(lite, chunked=True)
    long = " ".join(f"w{i}" for i in range(50))
    short = " ".join(f"v{i}" for i in range(20))
    f = write_jsonl(tmp_path / "a.jsonl", [{"id": "P", "text": long}, {"id": "Q", "text": short}])
    run(lite, name, [f], encoder=WordEncoder(), chunk_tokens=10)
    assert sorted(texts_of(lite, name)) == [f"P#{i}" for i in range(5)] + ["Q#0", "Q#1"]
    write_jsonl(f, [{"id": "P", "text": short}, {"id": "Q", "text": short}])
    run(lite, name, [f], encoder=WordEncoder(), chunk_tokens=10)
    assert sorted(texts_of(lite, name)) == ["P#0", "P#1", "Q#0", "Q#1"]


# ------------------------------------------------------------------ 9. Lite gRPC server: readers during rewrites


def test_readers_never_see_rewritten_rows_vanish_on_a_lite_server(lite_server: Any) -> None:
    """FAULT: on a Milvus Lite gRPC server, get() during an upsert of the same ids returned 0 rows."""
    from milvus_m3.engine.connection import RetryPolicy

    retry = RetryPolicy(attempts=3, initial_backoff=0.05, total_seconds=5)
    writer = CollectionManager(lite_server.uri, retry=retry)
    reader = CollectionManager(lite_server.uri, retry=retry)
    enc = FakeEncoder(DIM)
    name = make(writer)
    ids = [f"h{i}" for i in range(50)]
    texts = [f"hot row {i}" for i in range(50)]
    emb = enc.encode_documents(texts)
    writer.upsert(name, ids=ids, texts=texts, embeddings=emb)
    stop = threading.Event()
    seen: list[int] = []

    def rewrite() -> None:
        while not stop.is_set():
            writer.upsert(name, ids=ids, texts=texts, embeddings=emb)

    t = threading.Thread(target=rewrite)
    t.start()
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            seen.append(len(reader.get(name, ids)))
    finally:
        stop.set()
        t.join(30)
        writer.close()
        reader.close()
    assert len(seen) > 20 and set(seen) == {50}, sorted(set(seen))


# ------------------------------------------------------------------ 10. LF / CR in ids on Lite


@pytest.mark.parametrize("bad_id", ["a\nb", "a\rb"], ids=["LF", "CR"])
def test_ids_with_line_breaks_are_refused_on_lite(lite: CollectionManager, bad_id: str) -> None:
    """BAD_INPUT x2: accepted, then every hybrid_search, get and delete reaching them broke."""
    name = make(lite)
    enc = FakeEncoder(DIM)
    with pytest.raises(InputError) as exc:
        lite.upsert(name, ids=["ok", bad_id], texts=["x", "y"], embeddings=enc.encode_documents(["x", "y"]))
    assert exc.value.row == 1 and exc.value.field == "id"
    assert ("line feed" if "\n" in bad_id else "carriage return") in str(exc.value)
    assert lite.count(name) == 0


# ------------------------------------------------------------------ 11. duplicate ids and the batch size


def test_duplicate_id_winner_does_not_depend_on_the_batch_size(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """BAD_INPUT: the first record of an id wins, inside a batch and across batches; reported alike."""
    rows = [*docs(6), {"id": "d2", "text": "a later record with the id d2"}, *docs(3, "e")]
    f = write_jsonl(tmp_path / "dup.jsonl", rows)
    outcomes = []
    for batch_size in (100, 2, 1):
        name = make(lite)
        errors = tmp_path / f"dup{batch_size}.jsonl"
        rep = run(lite, name, [f], batch_size=batch_size, errors_path=errors)
        stored = texts_of(lite, name)
        outcomes.append((stored, rep.written, rep.failed, [(e["line"], e["id"]) for e in errors_of(errors)]))
        assert stored["d2"] == "document 2 about topic 2 word2"
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][1:] == (9, 1, [(7, "d2")])


# ------------------------------------------------------------------ 12. clear errors instead of silence


def test_search_embeddings_refuses_nan_vectors_and_str_sparse_keys(lite: CollectionManager) -> None:
    """BAD_INPUT x3."""
    from milvus_m3.search import HybridSearcher

    name = make(lite)
    enc = FakeEncoder(DIM)
    lite.upsert(name, ids=["a"], texts=["alpha"], embeddings=enc.encode_documents(["alpha"]))
    s = HybridSearcher(lite, name)
    q = enc.encode_queries(["alpha"])
    nan = q.dense.copy()
    nan[0, 3] = math.nan
    for bad, fld in (
        (M3Embeddings(dense=nan, sparse=q.sparse), "dense"),
        (M3Embeddings(dense=q.dense, sparse=[{"12": 0.5}]), "sparse"),
        (M3Embeddings(dense=q.dense, sparse=[{12: math.inf}]), "sparse"),
    ):
        with pytest.raises(InputError) as exc:
            s.search_embeddings(bad, mode="hybrid")
        assert exc.value.field == fld
    assert [h.id for h in s.search_embeddings(q)[0]] == ["a"]


def test_a_collection_whose_record_disagrees_with_its_schema_is_refused(lite: CollectionManager) -> None:
    """BAD_INPUT: a milvus-m3 record saying dim 16 on a collection whose dense field has dim 8."""
    from pymilvus import DataType

    good = make(lite)
    record = lite.client.describe_collection(good)["description"]
    schema = lite.client.create_schema(auto_id=False, description=record)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("metadata", DataType.JSON)
    idx = lite.client.prepare_index_params()
    idx.add_index("dense", index_type="FLAT", metric_type="IP")
    idx.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    lite.client.create_collection("liar", schema=schema, index_params=idx)
    enc = FakeEncoder(DIM)
    with pytest.raises(SchemaMismatchError, match="dense"):
        lite.upsert("liar", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"]))
    assert lite.client.query("liar", filter="", output_fields=["count(*)"])[0]["count(*)"] == 0


# ------------------------------------------------------------------ 15. sizes checked before the encoder


def test_an_oversized_line_never_reaches_the_encoder(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT: a 2 MB text (the issue's 32 MB line peaked at 5 GB in the tokenizer) is a bad row
    decided from its size; the encoder only ever sees texts the collection can store."""
    name = make(lite)
    huge = "word " * 400_000
    f = write_jsonl(
        tmp_path / "big.jsonl",
        [{"id": "a", "text": "small"}, {"id": "huge", "text": huge}, {"id": "b", "text": "also small"}],
    )
    enc = WordEncoder()
    errors = tmp_path / "e.jsonl"
    rep = run(lite, name, [f], encoder=enc, errors_path=errors)
    assert set(texts_of(lite, name)) == {"a", "b"} and rep.failed == 1
    assert max(len(t.encode()) for t in enc.encoded) <= 65_535
    (err,) = errors_of(errors)
    assert err["id"] == "huge" and "2000000 bytes" in err["error"] and "--chunk-tokens" in err["error"]


# ------------------------------------------------------------------ clarity


def test_clear_errors_for_lite_paths(tmp_path: Path) -> None:
    """BAD_INPUT x3: a folder that does not exist, names milvus-lite refuses."""
    with pytest.raises(ConfigError) as exc:
        CollectionManager(str(tmp_path / "missing" / "x.db"))
    assert "does not exist" in str(exc.value) and "another process" not in str(exc.value)
    for bad in ("my docs.db", "x" * 40 + ".db"):
        with pytest.raises(ConfigError) as exc:
            CollectionManager(str(tmp_path / bad))
        assert "file name" in str(exc.value)


def test_checkpoint_with_a_bad_done_value_is_a_clear_error(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT: ``"done": "abc"`` gave a raw ValueError."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(3))
    state = tmp_path / "s.json"
    run(lite, name, [f], state_path=state)
    data = json.loads(state.read_text(encoding="utf-8"))
    for entry in data["inputs"].values():
        entry["done"] = "abc"
    state.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="done"):
        run(lite, name, [f], state_path=state, resume=True)


def test_resume_after_the_collection_was_recreated_starts_over(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: create --recreate then ingest --resume wrote 0 rows and exited 0."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(8))
    state = tmp_path / "s.json"
    run(lite, name, [f], state_path=state)
    lite.create_collection(name, spec=CollectionSpec(dense_dim=DIM, model_name="fake/m3"), recreate=True)
    rep = run(lite, name, [f], state_path=state, resume=True)
    assert rep.written == 8 and rep.skipped == 0 and lite.count(name) == 8


def test_malformed_raw_filters_are_filter_errors_and_the_engine_lives(lite: CollectionManager) -> None:
    """BAD_INPUT x3: ``text like 3`` killed Lite's engine and blamed connectivity; m3 mode let the raw
    pymilvus exception out."""
    from milvus_m3.search import HybridSearcher

    name = make(lite)
    enc = FakeEncoder(DIM)
    lite.upsert(
        name, ids=["a", "b"], texts=["alpha", "beta"], embeddings=enc.encode_documents(["alpha", "beta"])
    )
    s = HybridSearcher(lite, name, enc)
    with pytest.raises(FilterError, match="like"):
        s.search("alpha", filter="text like 3")
    with pytest.raises(FilterError):
        s.search("alpha", filter='(text == "a"')
    with pytest.raises(MilvusM3Error):
        s.search("alpha", mode="m3", filter="nosuchfield == 1")
    assert [h.id for h in s.search("alpha", limit=1)] == ["a"]


def test_raw_filter_cannot_break_out_of_its_parentheses(lite: CollectionManager) -> None:
    """SECURITY: ``id != "" ) or ( id != ""`` and a structured tenant filter returned other tenants' rows."""
    from milvus_m3.filters import F
    from milvus_m3.search import HybridSearcher

    name = make(lite, scalar_fields=(ScalarField(name="tenant", dtype="varchar", default=""),))
    enc = FakeEncoder(DIM)
    texts = ["alpha one", "alpha two"]
    lite.upsert(
        name,
        ids=["a", "b"],
        texts=texts,
        embeddings=enc.encode_documents(texts),
        fields={"tenant": ["t1", "t2"]},
    )
    s = HybridSearcher(lite, name, enc)
    with pytest.raises(FilterError, match="parenthes"):
        s.search("alpha", filter=['id != "" ) or ( id != ""', F.eq("tenant", "t1")])
    assert [h.id for h in s.search("alpha", filter=['text != ")"', F.eq("tenant", "t1")])] == ["a"]


# ------------------------------------------------------------------ 14 and 16, the CLI


def test_cli_output_escapes_terminal_controls_and_json_line_breaks(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SECURITY x2: an ANSI escape in stored text reached the terminal; U+2028 / U+0085 split --json lines."""
    from milvus_m3.cli import main
    from tests.integration.test_cli import release

    text = "evil \x1b[2J\x1b[1;1H cleared \u2028 next\x85line \u202e rtl \x9b31m"
    write_jsonl(
        tmp_path / "a.jsonl", [{"id": "e\x1b[31m", "text": text}, {"id": "plain", "text": "plain words"}]
    )
    db = str(tmp_path / "t.db")
    common = ["--collection", "docs", "--uri", db, "--model", str(tiny_checkpoint)]
    assert main(["ingest", str(tmp_path / "a.jsonl"), *common, "-q"]) == 0
    capsys.readouterr()
    try:
        assert main(["search", "evil cleared", *common, "--limit", "2"]) == 0
        plain = capsys.readouterr().out
        assert main(["search", "evil cleared", *common, "--limit", "2", "--json"]) == 0
        as_json = capsys.readouterr().out
    finally:
        release(db)
    for ch in ("\x1b", "\x9b", "\u2028", "\x85", "\u202e"):
        assert ch not in plain and ch not in as_json
    assert "\\x1b[2J" in plain
    lines = as_json.splitlines()
    assert len(lines) == 2
    got = {d["id"]: d["text"] for d in map(json.loads, lines)}
    assert got["e\x1b[31m"] == text  # escaped on the wire, the same text once parsed


def test_cli_engine_errors_are_one_line_without_pymilvus_or_engine_logs(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """BAD_INPUT (clarity): a bad filter gave 49 lines of pymilvus tracebacks and Lite C++ logs on stderr."""
    from tests.integration.test_cli import run as cli

    write_jsonl(tmp_path / "a.jsonl", docs(3))
    common = ["--collection", "docs", "--uri", "t.db", "--model", str(tiny_checkpoint)]
    assert cli(["ingest", "a.jsonl", *common, "-q"], tmp_path).returncode == 0
    proc = cli(["search", "document", *common, "--mode", "dense", "--filter", "nosuch == 1"], tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("milvus-m3: error:"), proc.stderr


def test_credentials_with_hash_slash_or_question_mark_never_show(tmp_path: Path) -> None:
    """SECURITY x3: ``http://root:2024#Spring@host`` was not seen as credentials: printed verbatim,
    and the client connected to the wrong host."""
    from milvus_m3.engine.connection import Connection, RetryPolicy
    from tests.fixtures_server import free_port

    port = free_port()
    for password in ("2024#Spring", "ab/cd/ef", "why?not=1"):
        uri = f"http://root:{password}@127.0.0.1:{port}"
        with pytest.raises(MilvusM3Error) as exc:
            Connection(uri, retry=RetryPolicy(attempts=1, total_seconds=5), connect_timeout=2)
        text = f"{exc.value} {exc.value!r} {exc.value.__cause__!r}"
        for part in (password, password.split("#")[-1], password.split("/")[-1], password.split("?")[-1]):
            assert part not in text, text
        assert f"127.0.0.1:{port}" in str(exc.value)


def test_library_logs_hold_no_credentials_with_odd_characters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SECURITY: the warnings logged on retries showed the password."""
    from milvus_m3.engine.connection import Connection, RetryPolicy
    from tests.fixtures_server import free_port

    uri = f"http://root:2024#Spring@127.0.0.1:{free_port()}"
    with caplog.at_level(logging.DEBUG, logger="milvus_m3"), pytest.raises(MilvusM3Error):
        Connection(
            uri, retry=RetryPolicy(attempts=2, initial_backoff=0.01, total_seconds=5), connect_timeout=2
        )
    assert "retrying" in caplog.text
    assert "Spring" not in caplog.text and "2024" not in caplog.text


_ = (np, os)

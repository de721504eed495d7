"""The ingestion pipeline: readers (unit), then ingest() on Milvus Lite with fake encoders, then with the
tiny BGE-M3-shaped checkpoint. The real CLI process (kill -9, re-runs, all formats) is in test_cli.py."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.errors import (
    ConfigError,
    InputError,
    MissingDependencyError,
    SchemaMismatchError,
    TextTooLongError,
)
from milvus_m3.ingest import (
    IngestAborted,
    IngestReport,
    content_id,
    default_state_path,
    detect_format,
    ingest,
    read_records,
)
from milvus_m3.types import M3Embeddings
from tests.fakes import FakeEncoder

_WORD = re.compile(r"\S+")


# ------------------------------------------------------------------------------------------ helpers


class WordEncoder(FakeEncoder):
    """FakeEncoder with word "tokens": chunk_spans over words and a document max length that cuts."""

    def __init__(
        self,
        dim: int = 16,
        document_max_length: int = 10_000,
        overflow: str = "truncate",
        delay: float = 0.0,
        fail_on: str | None = None,
    ) -> None:
        super().__init__(dim=dim)
        self.document_max_length = document_max_length
        self.overflow = overflow
        self.delay = delay
        self.fail_on = fail_on
        self.encoded: list[str] = []

    def chunk_spans(self, text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]:
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        spans: list[tuple[int, int]] = []
        start = 0
        while start < len(words):
            end = min(start + max_tokens, len(words))
            spans.append((words[start][0], words[end - 1][1]))
            if end == len(words):
                break
            start = end - overlap
        return spans

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"encoder exploded on {self.fail_on!r}")
        long = [i for i, t in enumerate(texts) if len(_WORD.findall(t)) + 2 > self.document_max_length]
        if long and self.overflow == "error":
            raise TextTooLongError("too long", field="text", row=long[0])
        emb = super().encode_documents(texts)
        self.encoded.extend(texts)
        return dataclasses.replace(emb, truncated=tuple(long))


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row))
            fh.write("\n")
    return path


def docs(n: int, prefix: str = "d") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "text": f"document {i} talks about topic {i % 5} and word{i}", "n": i}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path_factory.mktemp("ingest") / "ingest.db"))
    try:
        yield m
    finally:
        m.close()


_counter = iter(range(10**6))


@pytest.fixture
def coll(lite: CollectionManager) -> str:
    name = f"c{next(_counter)}"
    lite.create_collection(name, spec=CollectionSpec(dense_dim=16, model_name="fake/m3"))
    return name


def make(lite: CollectionManager, **kw: Any) -> str:
    name = f"c{next(_counter)}"
    lite.create_collection(name, spec=CollectionSpec(dense_dim=16, model_name="fake/m3", **kw))
    return name


def all_rows(lite: CollectionManager, name: str) -> dict[str, dict[str, Any]]:
    res = lite.client.query(collection_name=name, filter="", output_fields=["*"], limit=16_384)
    out = {}
    for r in res:
        r = dict(r)
        r["dense"] = [round(float(x), 5) for x in r["dense"]]
        sparse = r["sparse"]
        r["sparse"] = sorted((int(k), round(float(v), 5)) for k, v in dict(sparse).items())
        out[r["id"]] = r
    return out


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------- readers (no Milvus)


def test_jsonl_lines_blank_lines_and_bad_records(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(
        b'\xef\xbb\xbf{"id": 1, "text": "a"}\n'
        b"\n"
        b"   \n"
        b'{"id": 2, "text": "b"}\r\n'
        b"{not json\n"
        b"[1, 2]\n"
        b'{"id": 3, "text": "caf\xe9"}\n'
        b'{"id": 4, "text": "d"}'
    )
    recs = list(read_records(str(p)))
    assert [(r.line, r.index) for r in recs] == [(1, 0), (4, 1), (5, 2), (6, 3), (7, 4), (8, 5)]
    assert recs[0].data == {"id": 1, "text": "a"}  # the BOM is dropped
    assert recs[2].data is None and recs[2].error is not None and recs[2].error.startswith("malformed JSON")
    assert recs[3].error == "expected a JSON object, got an array"
    assert recs[4].error is not None and "invalid UTF-8" in recs[4].error
    assert recs[5].data == {"id": 4, "text": "d"}  # no final newline
    # skip counts records (not lines) and does not parse them
    assert [(r.line, r.index) for r in read_records(str(p), skip=3)] == [(6, 3), (7, 4), (8, 5)]


def test_csv_and_tsv_line_numbers_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(
        b"id,text,lang\n"
        b'1,"multi\nline, with comma",en\n'
        b"2,short,de\n"
        b"\n"
        b"3,too,many,fields\n"
        b"4,caf\xe9,fr\n"
        b'5,"quoted ""x""",en\n'
    )
    recs = list(read_records(str(p)))
    assert [(r.line, r.index) for r in recs] == [(2, 0), (4, 1), (6, 2), (7, 3), (8, 4)]
    assert recs[0].data == {"id": "1", "text": "multi\nline, with comma", "lang": "en"}
    assert recs[2].error == "has 4 fields, the header has 3"
    assert recs[3].error == "invalid UTF-8" and recs[3].field == "text"
    assert recs[4].data is not None and recs[4].data["text"] == 'quoted "x"'
    assert [r.index for r in read_records(str(p), skip=2)] == [2, 3, 4]

    t = tmp_path / "a.tsv"
    t.write_text("id\ttext\n1\thello, world\n2\tsecond\n", encoding="utf-8")
    assert [r.data for r in read_records(str(t))] == [
        {"id": "1", "text": "hello, world"},
        {"id": "2", "text": "second"},
    ]

    long = tmp_path / "long.csv"  # beyond csv's default 128 KiB field limit
    long.write_text("id,text\n1," + "x" * 200_000 + "\n", encoding="utf-8")
    assert len(next(read_records(str(long))).data["text"]) == 200_000  # type: ignore[index]

    dup = tmp_path / "dup.csv"
    dup.write_text("id,id\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="distinct"):
        list(read_records(str(dup)))


def test_parquet_rows_and_skip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    table = pa.table({"id": [f"p{i}" for i in range(2500)], "text": [f"text {i}" for i in range(2500)]})
    pq.write_table(table, p, row_group_size=700)
    recs = list(read_records(str(p)))
    assert len(recs) == 2500
    assert (recs[0].line, recs[0].index, recs[0].data) == (1, 0, {"id": "p0", "text": "text 0"})
    tail = list(read_records(str(p), skip=2100))
    assert [r.index for r in tail] == list(range(2100, 2500))
    assert tail[0].data == {"id": "p2100", "text": "text 2100"}


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.parquet"
    p.write_bytes(b"PAR1....PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match=r"milvus-m3\[parquet\]"):
        list(read_records(str(p)))


def test_gzip_by_magic_bytes_and_format_detection(tmp_path: Path) -> None:
    rows = [{"_id": "x1", "title": "T", "text": "body"}]
    plain = write_jsonl(tmp_path / "data.jsonl", rows)
    gz = tmp_path / "data.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    sneaky = tmp_path / "data.jsonl"  # gzip content behind a plain name
    sneaky2 = tmp_path / "other.jsonl"
    sneaky2.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.data for r in read_records(str(gz))] == rows
    assert [r.data for r in read_records(str(sneaky2))] == rows
    assert detect_format(str(sneaky)) == "jsonl"
    corpus = tmp_path / "corpus.jsonl.gz"
    corpus.write_bytes(gz.read_bytes())
    assert detect_format(str(corpus)) == "beir"
    noext = tmp_path / "data"
    noext.write_bytes(gzip.compress(plain.read_bytes()))
    assert detect_format(str(noext)) == "jsonl"
    weird = tmp_path / "data.bin"
    weird.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--format"):
        detect_format(str(weird))
    assert detect_format(str(weird), "csv") == "csv"
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b'{"id": 1, "text": "a"}\n' * 1000)[:-30])
    with pytest.raises(InputError, match="gzip"):
        list(read_records(str(cut)))


class _Endless(io.RawIOBase):
    """An endless JSONL stream: reading it whole would never finish."""

    def __init__(self) -> None:
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        line = json.dumps({"id": f"s{self.n}", "text": f"line {self.n}"}).encode() + b"\n"
        self.n += 1
        buf[: len(line)] = line
        return len(line)


def test_stdin_is_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.BufferedReader(_Endless())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    it = read_records("-")
    first = [next(it) for _ in range(5)]
    assert [r.data["id"] for r in first] == ["s0", "s1", "s2", "s3", "s4"]  # type: ignore[index]
    assert [r.line for r in first] == [1, 2, 3, 4, 5]


def test_content_id_is_documented_blake2b() -> None:
    import hashlib

    assert content_id("hello") == hashlib.blake2b(b"hello", digest_size=16).hexdigest()
    assert content_id("hello") == content_id("hello") and len(str(content_id("hello"))) == 32
    assert isinstance(content_id("hello", id_type="int64"), int)


def test_default_state_path() -> None:
    assert default_state_path("./data/x.db", "docs") == Path("data/x.docs.ingest-state.json")
    assert default_state_path("http://h:19530", "docs") == Path("docs.ingest-state.json")


def test_report_is_frozen_and_serialises() -> None:
    r = IngestReport(
        read=1,
        written=1,
        skipped=0,
        failed=0,
        chunks=1,
        elapsed_s=1.0,
        docs_per_s=1.0,
        tokens_per_s=3.0,
        truncated=0,
        errors_path=None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.read = 2  # type: ignore[misc]
    assert json.loads(json.dumps(r.to_json()))["docs_per_s"] == 1.0
    assert "docs/s" in r.summary()


# ------------------------------------------------------------------ ingest() on Milvus Lite, fake model


@pytest.mark.integration
def test_ingest_ids_metadata_title_and_rerun_is_identical(
    lite: CollectionManager, coll: str, tmp_path: Path
) -> None:
    rows = [dict(d, title=f"Title {d['n']}", lang="en") for d in docs(30)]
    f = write_jsonl(tmp_path / "a.jsonl", rows)
    enc = FakeEncoder(16)
    kw: dict[str, Any] = {
        "manager": lite,
        "collection": coll,
        "encoder": enc,
        "title_field": "title",
        "metadata_fields": ["lang", "n"],
        "batch_size": 7,
        "progress": False,
    }
    rep = ingest([f], **kw)
    assert (rep.read, rep.written, rep.failed, rep.skipped, rep.chunks) == (30, 30, 0, 0, 30)
    assert rep.tokens > 0 and rep.docs_per_s > 0 and rep.tokens_per_s > 0
    first = all_rows(lite, coll)
    assert set(first) == {f"d{i}" for i in range(30)}
    assert first["d3"]["text"] == "Title 3 document 3 talks about topic 3 and word3"
    assert first["d3"]["metadata"] == {"lang": "en", "n": 3, "title": "Title 3"}
    again = ingest([f], **kw)
    assert again.written == 30
    assert lite.count(coll) == 30
    assert all_rows(lite, coll) == first


@pytest.mark.integration
def test_content_hash_ids_when_there_is_no_id(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [{"text": f"text number {i}"} for i in range(5)])
    ingest([f], manager=lite, collection=coll, encoder=FakeEncoder(16), progress=False)
    ingest([f], manager=lite, collection=coll, encoder=FakeEncoder(16), progress=False)
    assert set(all_rows(lite, coll)) == {content_id(f"text number {i}") for i in range(5)}
    # explicit hash_ids ignores an id column
    g = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "text": "other text"}])
    ingest([g], manager=lite, collection=coll, encoder=FakeEncoder(16), hash_ids=True, progress=False)
    assert content_id("other text") in all_rows(lite, coll)


@pytest.mark.integration
def test_beir_csv_tsv_parquet_and_scalar_fields(lite: CollectionManager, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    name = make(lite, scalar_fields=(ScalarField(name="year", dtype="int64", default=0),))
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "b1", "title": "Beir title", "text": "beir body", "metadata": {"src": "x"}},
            {"_id": "b2", "title": "", "text": "no title here"},
        ],
    )
    csvf = tmp_path / "c.csv"
    csvf.write_text("doc,body,year\nc1,csv body,1999\nc2,csv two,\nc3,bad year,nineteen\n", encoding="utf-8")
    tsvf = tmp_path / "t.tsv"
    tsvf.write_text("doc\tbody\tyear\nt1\ttsv body\t2001\n", encoding="utf-8")
    pqf = tmp_path / "p.parquet"
    pq.write_table(pa.table({"doc": ["q1"], "body": ["parquet body"], "year": [2020]}), pqf)
    rep = ingest([corpus], manager=lite, collection=name, encoder=FakeEncoder(16), progress=False)
    assert rep.written == 2
    rep = ingest(
        [csvf, tsvf, pqf],
        manager=lite,
        collection=name,
        encoder=FakeEncoder(16),
        id_field="doc",
        text_field="body",
        progress=False,
    )
    assert (rep.written, rep.failed) == (4, 1)
    assert rep.errors[0].field == "year" and rep.errors[0].line == 4
    got = all_rows(lite, name)
    assert got["b1"]["text"] == "Beir title beir body"
    assert got["b1"]["metadata"] == {"src": "x", "title": "Beir title"}
    assert got["b2"]["text"] == "no title here"
    assert (got["c1"]["year"], got["c2"]["year"], got["t1"]["year"], got["q1"]["year"]) == (
        1999,
        0,
        2001,
        2020,
    )


@pytest.mark.integration
def test_bad_rows_reported_and_neighbours_kept(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    lines: list[Any] = [
        {"id": "ok1", "text": "fine one"},
        "{broken json",
        {"text": "no id here"},
        {"id": "e1"},
        {"id": "e2", "text": "   "},
        {"id": "e3", "text": 42},
        {"id": "e4", "text": "nul \u0000 byte"},
        {"id": "ok1", "text": "duplicate of the first"},
        {"id": "e5", "text": "lone \ud800 surrogate"},
        '{"id": "e6", "text": "nan metadata", "m": NaN}',
        {"id": "e7", "text": " ".join(["w"] * 50)},
        {"id": 7.5, "text": "float id"},
        {"id": "ok2", "text": "fine two"},
    ]
    f = tmp_path / "bad.jsonl"
    with open(f, "wb") as fh:
        for row in lines:
            text = row if isinstance(row, str) else json.dumps(row)
            fh.write(text.encode("utf-8") + b"\n")
        fh.write(b'{"id": "e8", "text": "bad \xff utf8"}\n')
    errors = tmp_path / "errors.jsonl"
    enc = WordEncoder(document_max_length=20)
    rep = ingest(
        [f],
        manager=lite,
        collection=coll,
        encoder=enc,
        id_field="id",
        metadata_fields=["m"],
        errors_path=errors,
        batch_size=100,
        progress=False,
    )
    assert set(all_rows(lite, coll)) == {"ok1", "ok2"}
    assert all_rows(lite, coll)["ok1"]["text"] == "fine one"  # the first of a duplicate pair wins
    assert (rep.read, rep.written, rep.failed) == (14, 2, 12)
    got = errors_of(errors)
    assert [e["line"] for e in got] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14]
    assert all(e["file"] == str(f) for e in got)
    by_line = {e["line"]: e for e in got}
    assert by_line[2]["error"].startswith("malformed JSON") and by_line[2]["id"] is None
    assert by_line[3]["field"] == "id" and "missing id" in by_line[3]["error"]
    assert by_line[4]["field"] == "text" and "missing text" in by_line[4]["error"]
    assert by_line[5]["error"] == "empty text"
    assert "must be a string" in by_line[6]["error"]
    assert "NUL" in by_line[7]["error"]
    assert (
        by_line[8]["field"] == "id"
        and "duplicate id" in by_line[8]["error"]
        and "bad.jsonl:1" in by_line[8]["error"]
    )
    assert "UTF-8" in by_line[9]["error"]
    assert by_line[10]["field"] == "metadata" and by_line[10]["id"] == "e6"
    assert by_line[11]["id"] == "e7" and "longer than 10000" not in by_line[11]["error"]
    assert "--chunk-tokens" in by_line[11]["error"]
    assert "string or an integer" in by_line[12]["error"]
    assert "UTF-8" in by_line[14]["error"]
    assert rep.errors[0].line == 2 and str(rep.errors[0]).startswith(f"{f}:2")
    assert "bad rows (12" in rep.summary()


@pytest.mark.integration
def test_encoder_row_errors_and_truncation(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "short"},
        {"id": "b", "text": " ".join(["w"] * 30)},
        {"id": "c", "text": "fine"},
    ]
    f = write_jsonl(tmp_path / "a.jsonl", rows)
    # an encoder that raises TextTooLongError for one row: the row is dropped, the rest re-encoded
    rep = ingest(
        [f],
        manager=lite,
        collection=coll,
        encoder=WordEncoder(document_max_length=10, overflow="error"),
        progress=False,
    )
    assert (rep.written, rep.failed, rep.errors[0].id) == (2, 1, "b")
    # truncate=True keeps cut texts and counts them
    rep = ingest(
        [f],
        manager=lite,
        collection=coll,
        encoder=WordEncoder(document_max_length=10),
        truncate=True,
        progress=False,
    )
    assert (rep.written, rep.failed, rep.truncated) == (3, 0, 1)


@pytest.mark.integration
def test_on_error_fail_stops_before_the_bad_batch(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    rows: list[Any] = list(docs(25))
    rows[23] = "{oops"
    f = write_jsonl(tmp_path / "a.jsonl", rows)
    errors, state = tmp_path / "errors.jsonl", tmp_path / "state.json"
    enc = FakeEncoder(16)
    kw: dict[str, Any] = {
        "manager": lite,
        "collection": coll,
        "encoder": enc,
        "batch_size": 10,
        "errors_path": errors,
        "state_path": state,
        "progress": False,
    }
    with pytest.raises(IngestAborted, match=r"a.jsonl:24") as info:
        ingest([f], on_error="fail", **kw)
    assert lite.count(coll) == 20
    assert (info.value.report.written, info.value.report.failed) == (20, 1)
    assert info.value.error.line == 24
    assert [e["line"] for e in errors_of(errors)] == [24]
    # fix the row and resume: only the last batch is written, the errors file starts clean
    rows[23] = {"id": "d23", "text": "fixed"}
    write_jsonl(f, rows)
    rep = ingest([f], on_error="fail", resume=True, **kw)
    assert (rep.skipped, rep.read, rep.written, rep.failed) == (20, 5, 5, 0)
    assert lite.count(coll) == 25
    assert errors.read_text() == ""


@pytest.mark.integration
def test_resume_after_a_crash_between_write_and_checkpoint(
    lite: CollectionManager, coll: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from milvus_m3.ingest import checkpoint as ingest_mod

    rows: list[Any] = list(docs(40))
    rows[5] = "{bad"
    f = write_jsonl(tmp_path / "a.jsonl", rows)
    errors, state = tmp_path / "errors.jsonl", tmp_path / "state.json"
    kw: dict[str, Any] = {
        "manager": lite,
        "collection": coll,
        "batch_size": 8,
        "errors_path": errors,
        "state_path": state,
        "progress": False,
    }
    real_commit = ingest_mod.Checkpoint.commit
    calls = {"n": 0}

    def crashing_commit(self: Any, *a: Any, **k: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # the initial commit, batches 1 and 2 pass; batch 3 is written, not checkpointed
            raise KeyboardInterrupt
        real_commit(self, *a, **k)

    monkeypatch.setattr(ingest_mod.Checkpoint, "commit", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        ingest([f], encoder=FakeEncoder(16), **kw)
    monkeypatch.setattr(ingest_mod.Checkpoint, "commit", real_commit)
    assert lite.count(coll) == 23  # batch 3 reached Milvus but not the checkpoint
    assert json.loads(state.read_text())["inputs"][str(f.resolve())]["done"] == 16
    enc = WordEncoder()
    rep = ingest([f], encoder=enc, resume=True, **kw)
    assert rep.skipped == 16 and rep.read == 24 and rep.written == 24
    assert enc.encoded[0].startswith("document 16 ")  # nothing before the checkpoint was embedded again
    assert set(all_rows(lite, coll)) == {f"d{i}" for i in range(40) if i != 5}
    assert [e["line"] for e in errors_of(errors)] == [6]  # not repeated by the resumed run
    # resuming a finished job does nothing
    rep = ingest([f], encoder=enc, resume=True, **kw)
    assert (rep.read, rep.skipped, rep.written) == (0, 40, 0)


@pytest.mark.integration
def test_resume_checks(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(5))
    state = tmp_path / "state.json"
    enc = FakeEncoder(16)
    with pytest.raises(ConfigError, match="state_path"):
        ingest([f], manager=lite, collection=coll, encoder=enc, resume=True)
    # no state yet: starts from the beginning
    rep = ingest(
        [f], manager=lite, collection=coll, encoder=enc, state_path=state, resume=True, progress=False
    )
    assert rep.written == 5
    with pytest.raises(ConfigError, match="options changed.*text_field"):
        ingest(
            [f], manager=lite, collection=coll, encoder=enc, state_path=state, resume=True, text_field="body"
        )
    state.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        ingest([f], manager=lite, collection=coll, encoder=enc, state_path=state, resume=True)


@pytest.mark.integration
def test_option_and_collection_checks(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(2))
    enc = WordEncoder()
    with pytest.raises(ConfigError, match="chunked"):
        ingest([f], manager=lite, collection=coll, encoder=enc, chunk_tokens=5)
    with pytest.raises(ConfigError, match="twice"):
        ingest([f, f], manager=lite, collection=coll, encoder=enc)
    with pytest.raises(ConfigError, match="does not exist"):
        ingest([tmp_path / "nope.jsonl"], manager=lite, collection=coll, encoder=enc)
    with pytest.raises(ConfigError, match="on_error"):
        ingest([f], manager=lite, collection=coll, encoder=enc, on_error="ignore")
    with pytest.raises(SchemaMismatchError):
        ingest([f], manager=lite, collection=coll, encoder=FakeEncoder(16, model_name="other/model"))
    with pytest.raises(ConfigError, match="chunk_spans"):
        ingest(
            [f], manager=lite, collection=make(lite, chunked=True), encoder=FakeEncoder(16), chunk_tokens=4
        )


@pytest.mark.integration
def test_chunking_ids_parents_and_positions(lite: CollectionManager, tmp_path: Path) -> None:
    name = make(lite, chunked=True)
    text = " ".join(f"w{i}" for i in range(10))
    f = write_jsonl(tmp_path / "a.jsonl", [{"id": "p1", "text": text}, {"id": "p2", "text": "tiny doc"}])
    rep = ingest(
        [f],
        manager=lite,
        collection=name,
        encoder=WordEncoder(),
        chunk_tokens=4,
        chunk_overlap=1,
        progress=False,
    )
    assert (rep.written, rep.chunks) == (2, 4)
    got = all_rows(lite, name)
    assert sorted(got) == ["p1#0", "p1#1", "p1#2", "p2#0"]
    assert [got[f"p1#{i}"]["text"] for i in range(3)] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert {(r["parent_id"], r["chunk_index"]) for r in got.values()} == {
        ("p1", 0),
        ("p1", 1),
        ("p1", 2),
        ("p2", 0),
    }


@pytest.mark.integration
def test_writes_overlap_with_encoding(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(60))
    delay = 0.15
    enc = WordEncoder(delay=delay)
    spans: dict[str, list[tuple[float, float]]] = {"write": []}
    real = lite.write_rows

    def slow_write(name: str, rows: Any, **kw: Any) -> int:
        t0 = time.perf_counter()
        time.sleep(delay)
        n = real(name, rows, **kw)
        spans["write"].append((t0, time.perf_counter()))
        return n

    real_encode = enc.encode_documents
    spans["encode"] = []

    def timed_encode(texts: Any) -> Any:
        t0 = time.perf_counter()
        out = real_encode(texts)
        spans["encode"].append((t0, time.perf_counter()))
        return out

    enc.encode_documents = timed_encode  # type: ignore[method-assign]
    lite.write_rows = slow_write  # type: ignore[method-assign]
    try:
        rep = ingest([f], manager=lite, collection=coll, encoder=enc, batch_size=10, progress=False)
    finally:
        del lite.write_rows
    assert rep.written == 60
    # No speed assert (shared machines are noisy): a serial pipeline never encodes while it writes, an
    # overlapped one does, whatever the machine's speed.
    overlaps = [(w, e) for w in spans["write"] for e in spans["encode"] if e[0] < w[1] and w[0] < e[1]]
    assert overlaps, spans


@pytest.mark.integration
def test_producer_and_writer_errors_propagate(lite: CollectionManager, coll: str, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(30))
    state = tmp_path / "state.json"
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="exploded"):
        ingest(
            [f],
            manager=lite,
            collection=coll,
            encoder=WordEncoder(fail_on="document 25 "),
            batch_size=10,
            state_path=state,
            progress=False,
        )
    assert lite.count(coll) == 20  # the batches before the failing one were written and checkpointed
    assert json.loads(state.read_text())["inputs"][str(f.resolve())]["done"] == 20

    def broken_write(name: str, rows: Any, **kw: Any) -> int:
        raise ConnectionError("milvus went away")

    lite.write_rows = broken_write  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionError, match="went away"):
            ingest(
                [f],
                manager=lite,
                collection=coll,
                encoder=WordEncoder(delay=0.05),
                batch_size=5,
                progress=False,
            )
    finally:
        del lite.write_rows
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before  # the producer thread stopped


@pytest.mark.integration
def test_ctrl_c_stops_cleanly_and_keeps_the_checkpoint(
    lite: CollectionManager, coll: str, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(50))
    state = tmp_path / "state.json"
    seen: list[IngestReport] = []

    def interrupt(report: IngestReport) -> None:
        seen.append(report)
        if len(seen) == 2:
            raise KeyboardInterrupt

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        ingest(
            [f],
            manager=lite,
            collection=coll,
            encoder=FakeEncoder(16),
            batch_size=10,
            state_path=state,
            progress=False,
            on_batch=interrupt,
        )
    time.sleep(0.3)
    assert threading.active_count() == before
    assert json.loads(state.read_text())["inputs"][str(f.resolve())]["done"] == 20
    rep = ingest(
        [f],
        manager=lite,
        collection=coll,
        encoder=FakeEncoder(16),
        batch_size=10,
        state_path=state,
        resume=True,
        progress=False,
    )
    assert (rep.skipped, rep.written) == (20, 30)
    assert lite.count(coll) == 50


@pytest.mark.integration
def test_progress_bar_only_when_asked(
    lite: CollectionManager, coll: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", docs(5))
    ingest([f], manager=lite, collection=coll, encoder=FakeEncoder(16), progress=True)
    err = capsys.readouterr().err
    assert "doc/s" in err or "s/doc" in err
    ingest([f], manager=lite, collection=coll, encoder=FakeEncoder(16))  # stderr is not a TTY here
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------- the tiny BGE-M3-shaped checkpoint


@pytest.mark.integration
def test_real_embedder_chunking_and_too_long(
    lite: CollectionManager, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from milvus_m3.embedder.model import M3Embedder

    emb = M3Embedder(
        tiny_checkpoint, device="cpu", precision="fp32", document_max_length=24, overflow="truncate"
    )
    long_text = " ".join(f"token{i}" for i in range(60))
    f = write_jsonl(
        tmp_path / "a.jsonl", [{"id": "long", "text": long_text}, {"id": "short", "text": "hello"}]
    )
    name = f"t{next(_counter)}"
    lite.create_collection(name, spec=CollectionSpec(dense_dim=emb.dense_dim, model_name=emb.model_name))
    rep = ingest([f], manager=lite, collection=name, encoder=emb, progress=False)
    assert (rep.written, rep.failed) == (1, 1)
    assert rep.errors[0].id == "long" and "24 tokens" in rep.errors[0].error
    chunked = f"t{next(_counter)}"
    lite.create_collection(
        chunked, spec=CollectionSpec(dense_dim=emb.dense_dim, model_name=emb.model_name, chunked=True)
    )
    rep = ingest(
        [f], manager=lite, collection=chunked, encoder=emb, chunk_tokens=20, chunk_overlap=4, progress=False
    )
    assert (rep.written, rep.failed, rep.truncated) == (2, 0, 0)
    rows = all_rows(lite, chunked)
    long_chunks = sorted(
        (r for r in rows.values() if r["parent_id"] == "long"), key=lambda r: r["chunk_index"]
    )
    assert len(long_chunks) == rep.chunks - 1 >= 3
    counts = emb.count_tokens([r["text"] for r in long_chunks])
    assert max(counts) <= 20
    assert long_chunks[0]["text"].startswith("token0") and long_chunks[-1]["text"].endswith("token59")
    with pytest.raises(ConfigError, match="at most 22"):
        ingest([f], manager=lite, collection=chunked, encoder=emb, chunk_tokens=23)


@pytest.mark.integration
def test_a_document_text_is_checked_once_on_the_ingest_path(
    lite: CollectionManager, tmp_path: Path, tiny_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validate once (issue 21): the job checks each text where it enters (file and line in the errors
    file); the embedder and the manager's row check trust the ``CheckedTexts`` it hands on."""
    import milvus_m3._checks as text_checks

    texts = [f"document {i} about vectors and search, number {i}" for i in range(6)]
    f = write_jsonl(tmp_path / "a.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    seen: dict[str, int] = {}
    real = text_checks.utf8_error

    def counting(text: str) -> UnicodeEncodeError | None:
        seen[text] = seen.get(text, 0) + 1
        return real(text)

    lite.create_collection(
        "checked_once", dense_dim=tiny_embedder.dense_dim, model_name=tiny_embedder.model_name, recreate=True
    )
    monkeypatch.setattr(text_checks, "utf8_error", counting)
    rep = ingest([f], manager=lite, collection="checked_once", encoder=tiny_embedder, progress=False)
    assert rep.written == 6
    assert {t: seen.get(t, 0) for t in texts} == dict.fromkeys(texts, 1)
    # and a direct write, with no job in front, still checks its texts
    emb = tiny_embedder.encode_documents([texts[0]])
    seen.clear()
    lite.prepare_rows(lite.spec("checked_once"), ids=["x"], texts=[texts[0]], embeddings=emb)
    assert seen.get(texts[0]) == 1


def test_checked_texts_are_trusted_by_check_texts() -> None:
    from milvus_m3._checks import CheckedTexts, check_texts

    bad = "lone \ud800 surrogate"
    with pytest.raises(InputError, match="UTF-8"):
        check_texts([bad])
    assert check_texts(CheckedTexts([bad])) == [bad]  # trusted: the caller checked it once already

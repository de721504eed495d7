"""The multi-language BM25 analyzer (``CollectionSpec(bm25_languages=...)``) on Milvus Lite.

Lite cannot run it (``Capabilities.multi_language_analyzer``): creating such a collection is refused
before anything is made, and a test pins the measured quirk behind the refusal (Lite accepts the raw
collection and analyses everything as standard), so it fails the day Lite honours the analyzer.
What milvus-m3 does around it (the record, the language field, ingest, the checks, ``language=``) runs
here on a collection built from milvus-m3's server schema, created on Lite past the refusal on
purpose. What a server >= 2.5.11 does with it is not tested here: no such server runs in the tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.async_manager import AsyncCollectionManager
from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.collection.schema import build_index_params, build_schema
from milvus_m3.engine.capabilities import LITE_CAPABILITIES, server_capabilities
from milvus_m3.errors import ConfigError, InputError, SchemaMismatchError
from milvus_m3.ingest import ingest
from milvus_m3.search import HybridSearcher
from milvus_m3.search._steps import Call, drive
from milvus_m3.search.async_searcher import AsyncHybridSearcher
from milvus_m3.search.execute import PlanRunner
from milvus_m3.search.options import SearchOptions
from tests.fakes import FakeEncoder
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

LANGUAGES = {"en": "english", "zh": "chinese", "default": "standard"}
ROWS = [
    ("r1", "en", "the runners were running quickly"),
    ("r2", "zh", "我喜欢机器学习和自然语言处理"),
    ("r3", "en", "cats sleep all day"),
]


def _spec(**kw: Any) -> CollectionSpec:
    return CollectionSpec(dense_dim=16, model_name="fake/m3", bm25=True, bm25_languages=LANGUAGES, **kw)


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path_factory.mktemp("multilang") / "ml.db"))
    try:
        yield m
    finally:
        m.close()


def test_create_is_refused_on_lite_with_the_fix_and_leaves_nothing(lite: CollectionManager) -> None:
    for kw in ({}, {"exists_ok": True}, {"recreate": True}):
        with pytest.raises(
            ConfigError, match=r"multi-language analyzer.*Milvus Lite.*chinese for Chinese.*>= 2\.5\.11"
        ):
            lite.create_collection("ml_refused", spec=_spec(), **kw)
        assert not lite.has_collection("ml_refused")


def _search(m: CollectionManager, name: str, query: str, analyzer: str | None = None) -> list[str]:
    params: dict[str, Any] = {"metric_type": "BM25"}
    if analyzer is not None:
        params["analyzer_name"] = analyzer
    res = m.client.search(name, data=[query], anns_field="sparse", limit=3, search_params=params)
    return [h["id"] for h in res[0]]


def test_lite_ignores_the_multi_language_analyzer_quirk_is_real(lite: CollectionManager) -> None:
    """Raw pymilvus, Milvus's documented shape: Lite 2.5.1 analyses every row and query as standard.
    Fails the day Lite honours it; then Capabilities.multi_language_analyzer can be True there."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    client = lite.client
    for name, analyzer in (("raw_multi", None), ("raw_english", {"type": "english"})):
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=8)
        schema.add_field("language", DataType.VARCHAR, max_length=8)
        text: dict[str, Any] = {"analyzer_params": analyzer}
        if analyzer is None:
            analyzers = {code: {"type": a} for code, a in LANGUAGES.items()}
            text = {"multi_analyzer_params": {"analyzers": analyzers, "by_field": "language"}}
        schema.add_field("text", DataType.VARCHAR, max_length=256, enable_analyzer=True, **text)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=["sparse"]))  # fmt: skip
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        client.insert(name, [{"id": i, "language": lang, "text": t} for i, lang, t in ROWS])
    assert _search(lite, "raw_english", "run") == ["r1"]  # an English analyzer stems
    assert _search(lite, "raw_multi", "run", "en") == []  # the multi one, told "en", does not
    assert _search(lite, "raw_multi", "running", "en") == ["r1"]  # ... it matches whole words only
    assert _search(lite, "raw_multi", "cats", "en") == ["r3"]
    assert _search(lite, "raw_multi", "学习", "zh") == []  # no Chinese segmentation
    assert _search(lite, "raw_multi", ROWS[1][2], "zh") == ["r2"]  # the whole sentence is one token


@pytest.fixture(scope="module")
def built(lite: CollectionManager) -> str:
    """milvus-m3's schema for a server >= 2.5.11, created on Lite past the refusal (on purpose), filled
    through the manager: the record, the language field and the searcher run on it; the analysis does not."""
    spec = _spec()
    schema = build_schema(spec, server_capabilities((2, 5, 11)))
    index = build_index_params(spec, "FLAT", caps=LITE_CAPABILITIES)
    lite.client.create_collection("ml", schema=schema, index_params=index, consistency_level="Strong")
    texts = [t for _, _, t in ROWS]
    lite.upsert(
        "ml",
        ids=[i for i, _, _ in ROWS],
        texts=texts,
        embeddings=FakeEncoder(16).encode_documents(texts),
        fields={"language": [lang for _, lang, _ in ROWS]},
    )
    return "ml"


def test_the_record_and_language_field_round_trip_through_milvus(lite: CollectionManager, built: str) -> None:
    stored = lite.spec(built)
    assert stored == _spec() and dict(stored.bm25_languages or {}) == LANGUAGES
    assert stored.bm25_language_field == "language"
    assert "language" in lite.describe(built).fields
    rows = lite.client.query(built, filter="", output_fields=["language"], limit=10)
    assert sorted((r["id"], r["language"]) for r in rows) == [("r1", "en"), ("r2", "zh"), ("r3", "en")]


def test_reuse_checks_the_languages(lite: CollectionManager, built: str) -> None:
    assert lite.check_collection(built, spec=_spec()) == _spec()
    other = replace(_spec(), bm25_languages={**LANGUAGES, "zh": "jieba"})
    with pytest.raises(
        SchemaMismatchError, match="bm25_languages=.*'zh': 'chinese'.*'zh': 'jieba'.*recreate"
    ):
        lite.check_collection(built, spec=other)
    single = CollectionSpec(dense_dim=16, model_name="fake/m3", bm25=True, bm25_analyzer="english")
    with pytest.raises(SchemaMismatchError, match="scalar_fields|bm25_languages"):
        lite.check_collection(built, spec=single)


def test_a_row_without_its_language_is_a_bad_row(lite: CollectionManager, built: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'language'") as exc:
        lite.upsert("ml", ids=["x"], texts=["hello"], embeddings=FakeEncoder(16).encode_documents(["hello"]))
    assert exc.value.field == "language"
    docs = tmp_path / "docs.jsonl"
    recs = [{"id": "i1", "text": "dogs bark", "language": "en"}, {"id": "i2", "text": "猫在睡觉"}]
    docs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    rep = ingest([docs], manager=lite, collection=built, encoder=FakeEncoder(16), progress=False)
    assert (rep.written, rep.failed) == (1, 1)
    assert rep.errors[0].id == "i2" and rep.errors[0].field == "language"
    row = lite.client.get(built, ids=["i1"], output_fields=["language"])
    assert row[0]["language"] == "en"
    lite.client.delete(built, ids=["i1"])


def test_search_takes_the_query_language(lite: CollectionManager, built: str) -> None:
    searcher = HybridSearcher(lite, built, FakeEncoder(16))
    assert searcher.plan(SearchOptions(language="zh")).language == "zh"
    assert searcher.plan(SearchOptions()).language is None
    # Lite analyses as standard whatever the language (the quirk above): whole words match
    assert [h.id for h in searcher.search("running", legs=("bm25",), language="en")] == ["r1"]
    assert [h.id for h in searcher.search("cats", language="en", limit=1)] == ["r3"]
    with pytest.raises(
        ConfigError, match="'fr' is not one of collection 'ml'.s bm25_languages: default, en, zh"
    ):
        searcher.search("cats", language="fr")


def test_the_async_searcher_takes_the_query_language(lite: CollectionManager, built: str) -> None:
    async def main() -> list[list[str]]:
        async with AsyncCollectionManager(manager=lite) as am:
            searcher = AsyncHybridSearcher(am, built, FakeEncoder(16))
            with pytest.raises(ConfigError, match="'fr' is not one of"):
                await searcher.search("cats", language="fr")
            one = await searcher.search("running", legs=("bm25",), language="en")
            batch = await searcher.search_batch(["cats", "running"], limit=1, language="en")
            return [[h.id for h in one], *[[h.id for h in hits] for hits in batch]]

    assert asyncio.run(main()) == [["r1"], ["r3"], ["r1"]]


@pytest.mark.parametrize("fusion", ["server", "client"])
def test_every_bm25_request_carries_the_query_language(
    lite: CollectionManager, built: str, fusion: str
) -> None:
    """Through the runner's call seam (``_steps.drive``, as the async runner sends them): each BM25
    request, plain or inside a hybrid one, names the analyzer; the other legs' requests do not."""
    searcher = HybridSearcher(lite, built, FakeEncoder(16))
    runner = PlanRunner(lite, built, lite.spec(built), LITE_CAPABILITIES, fusion=fusion)  # type: ignore[arg-type]
    sent: list[Call] = []

    def send(calls: list[Call]) -> list[Any]:
        sent.extend(calls)
        return [getattr(lite.client, c.method)(**c.kwargs) for c in calls]

    query = ["cats sleep"]
    emb = FakeEncoder(16).encode_queries(query)
    for language in ("zh", None):
        sent.clear()
        hits = drive(runner.steps(emb, query, searcher.plan(SearchOptions(language=language))), send)
        assert hits[0][0].id == "r3"
        assert {c.method for c in sent} == {"hybrid_search" if fusion == "server" else "search"}
        params = []
        for call in sent:
            if call.method == "hybrid_search":
                params += [(r.anns_field, r.param) for r in call.kwargs["reqs"]]
            else:
                params.append((call.kwargs["anns_field"], call.kwargs["search_params"]))
        assert sorted(f for f, _ in params) == ["bm25", "dense", "sparse"]
        assert {f: p.get("analyzer_name") for f, p in params} == {
            "bm25": language,
            "dense": None,
            "sparse": None,
        }


def test_language_on_a_collection_without_languages_is_refused(lite: CollectionManager) -> None:
    lite.create_collection("plain", spec=CollectionSpec(dense_dim=16, model_name="fake/m3", bm25=True))
    searcher = HybridSearcher(lite, "plain", FakeEncoder(16))
    with pytest.raises(ConfigError, match="no per-language BM25 analyzers.*--bm25-languages"):
        searcher.search("cats", language="en")


def test_cli_create_with_languages_is_refused_on_lite(tmp_path: Path, tiny_checkpoint: Path) -> None:
    db = tmp_path / "cli.db"
    args = ["create", "--collection", "ml", "--uri", str(db), "--model", str(tiny_checkpoint), "--bm25"]
    proc = run([*args, "--bm25-languages", "en=english,zh=chinese,default=standard"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "multi-language analyzer" in proc.stderr and "Milvus server >= 2.5.11" in proc.stderr
    assert not db.exists()  # the new file held no collection: removed
    proc = run([*args, "--bm25-languages", "en=english"], tmp_path)
    assert proc.returncode == 2 and "needs a 'default' analyzer" in proc.stderr

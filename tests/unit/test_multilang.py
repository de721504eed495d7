"""The multi-language BM25 analyzer without Milvus: the spec's checks and record, the schema built for a
server >= 2.5.11 (Milvus's documented ``multi_analyzer_params``), the refusal below it and on Lite, the
BM25 request's ``analyzer_name`` down to the gRPC request pymilvus builds, and the CLI flags."""

from __future__ import annotations

import json
from typing import Any

import pytest

from milvus_m3.cli._argtypes import from_args
from milvus_m3.cli.parser import build_parser
from milvus_m3.collection.schema import (
    BM25_FIELD,
    TEXT_FIELD,
    CollectionSpec,
    ScalarField,
    build_record,
    build_schema,
    parse_build_record,
)
from milvus_m3.engine.capabilities import LITE_CAPABILITIES, capabilities_for_version, server_capabilities
from milvus_m3.errors import ConfigError
from milvus_m3.search.requests import bm25_request

LANGUAGES = {"en": "english", "zh": "chinese", "default": "standard"}


def _spec(**kw: Any) -> CollectionSpec:
    return CollectionSpec(dense_dim=8, bm25=True, bm25_languages=LANGUAGES, **kw)


def _fields(schema: Any) -> dict[str, dict[str, Any]]:
    return {f.name: f.to_dict() for f in schema.fields}


def test_the_server_schema_has_the_documented_multi_analyzer_and_the_language_field() -> None:
    caps = server_capabilities((2, 5, 11))
    assert caps.multi_language_analyzer
    _spec().check_engine(caps)
    fields = _fields(build_schema(_spec(), caps))
    text = fields[TEXT_FIELD]["params"]
    assert text["enable_analyzer"] is True and "analyzer_params" not in text
    assert json.loads(text["multi_analyzer_params"]) == {
        "analyzers": {"en": {"type": "english"}, "zh": {"type": "chinese"}, "default": {"type": "standard"}},
        "by_field": "language",
    }
    assert fields["language"]["type"].name == "VARCHAR" and fields["language"]["params"]["max_length"] == 64
    assert fields[BM25_FIELD].get("is_function_output") is True
    # a collection with one analyzer keeps analyzer_params
    plain = _fields(build_schema(CollectionSpec(dense_dim=8, bm25=True, bm25_analyzer="chinese"), caps))
    assert json.loads(plain[TEXT_FIELD]["params"]["analyzer_params"]) == {"type": "chinese"}
    assert "multi_analyzer_params" not in plain[TEXT_FIELD]["params"] and "language" not in plain


def test_a_declared_language_field_is_used_and_checked() -> None:
    spec = _spec(bm25_language_field="lang", scalar_fields=(ScalarField(name="lang", max_length=8),))
    assert [f.name for f in spec.scalar_fields] == ["lang"]
    params = _fields(build_schema(spec, server_capabilities((2, 6, 0))))[TEXT_FIELD]["params"]
    assert json.loads(params["multi_analyzer_params"])["by_field"] == "lang"
    for bad in (ScalarField(name="lang", dtype="int64"), ScalarField(name="lang", default="en")):
        with pytest.raises(ConfigError, match="bm25_language_field 'lang' must be a varchar.*every row"):
            _spec(bm25_language_field="lang", scalar_fields=(bad,))


@pytest.mark.parametrize("caps", [server_capabilities((2, 5, 10)), LITE_CAPABILITIES])
def test_engines_without_it_are_refused_with_the_fix(caps: Any) -> None:
    assert not caps.multi_language_analyzer
    with pytest.raises(
        ConfigError, match=r"multi-language analyzer.*chinese for Chinese.*README.*>= 2\.5\.11"
    ):
        _spec().check_engine(caps)
    assert capabilities_for_version("v2.5.11").multi_language_analyzer
    assert not capabilities_for_version("v2.5.10").multi_language_analyzer


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bm25_languages": {"en": "english"}}, "needs a 'default' analyzer"),
        ({"bm25_languages": {**LANGUAGES, "fr": "french"}}, r"bm25_languages\['fr'\] is 'french'"),
        ({"bm25_languages": {**LANGUAGES, "e n": "english"}}, "language code 'e n' must be letters"),
        ({"bm25_languages": {**LANGUAGES, "": "english"}}, "language code '' must be letters"),
        ({"bm25_languages": {}}, "must map language codes to analyzer names"),
        ({"bm25_languages": [("default", "standard")]}, "must map language codes to analyzer names"),
        ({"bm25_languages": LANGUAGES, "bm25": False}, r"bm25_languages needs bm25=True"),
        ({"bm25_languages": LANGUAGES, "bm25_analyzer": "chinese"}, "not used with bm25_languages"),
        ({"bm25_language_field": "lang"}, "bm25_language_field='lang' needs bm25_languages"),
        ({"bm25_languages": LANGUAGES, "bm25_language_field": "text"}, "must be an identifier and not one"),
    ],
)
def test_spec_errors_say_the_fix(kw: dict[str, Any], match: str) -> None:
    kw = {"bm25": True, **kw}
    with pytest.raises(ConfigError, match=match):
        CollectionSpec(dense_dim=8, **kw)


def test_the_languages_are_stored_read_only_and_round_trip() -> None:
    spec = _spec()
    assert spec.bm25_languages == LANGUAGES and list(spec.bm25_languages or {}) == ["default", "en", "zh"]
    with pytest.raises(TypeError):
        spec.bm25_languages["fr"] = "standard"  # type: ignore[index]
    again = CollectionSpec(dense_dim=8, bm25=True, bm25_languages=dict(reversed(LANGUAGES.items())))
    assert again == spec and hash(again) == hash(spec)
    data = json.loads(json.dumps(spec.to_json()))
    assert data["bm25_languages"] == LANGUAGES and data["bm25_language_field"] == "language"
    assert CollectionSpec.from_json(data) == spec
    assert parse_build_record(build_record(spec))[0] == spec
    old = CollectionSpec(dense_dim=8, bm25=True).to_json()
    del old["bm25_languages"], old["bm25_language_field"]  # a record written before this field
    assert CollectionSpec.from_json(old) == CollectionSpec(dense_dim=8, bm25=True)


def test_the_bm25_request_carries_the_analyzer_name_to_the_grpc_request() -> None:
    from pymilvus.client.prepare import Prepare

    with_lang = bm25_request(["学习"], field=BM25_FIELD, limit=5, analyzer_name="zh")
    without = bm25_request(["学习"], field=BM25_FIELD, limit=5)
    assert with_lang.search_params == {"metric_type": "BM25", "analyzer_name": "zh"}
    assert without.search_params == {"metric_type": "BM25"}

    def wire(req: Any) -> dict[str, str]:
        kw = req.search_kwargs()
        grpc = Prepare.search_requests_with_expr(
            "c", kw["anns_field"], kw["search_params"], kw["limit"], data=kw["data"]
        )
        return {p.key: p.value for p in grpc.search_params}

    assert wire(with_lang)["analyzer_name"] == "zh"
    assert "analyzer_name" not in wire(without)
    ann = with_lang.ann_request()
    assert ann.param["analyzer_name"] == "zh"


def test_cli_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "create",
            "--collection",
            "c",
            "--bm25",
            "--bm25-languages",
            "en=english, zh=chinese,default=standard",
        ]
    )
    spec = from_args(CollectionSpec, args, dense_dim=8)
    assert spec.bm25_languages == LANGUAGES and spec.bm25_language_field == "language"
    args = parser.parse_args(["create", "--collection", "c", "--bm25"])
    assert from_args(CollectionSpec, args, dense_dim=8).bm25_languages is None
    args = parser.parse_args(
        [
            "create",
            "--collection",
            "c",
            "--bm25",
            "--bm25-languages",
            "default=jieba",
            "--bm25-language-field",
            "lang",
        ]
    )
    assert from_args(CollectionSpec, args, dense_dim=8).scalar_fields[0].name == "lang"
    for bad in ("en", "en=english,en=standard", "=english", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["create", "--collection", "c", "--bm25-languages", bad])
    assert parser.parse_args(["search", "q", "--collection", "c", "--language", "zh"]).language == "zh"
    assert parser.parse_args(["search", "q", "--collection", "c"]).language is None

"""filters.py: rendering, escaping per engine, validation, and hostile values against Milvus Lite."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.errors import FilterError, MilvusM3Error
from milvus_m3.filters import OPERATORS, F, Filter, literal, path_expr, render
from tests.fakes import FakeEncoder

# --------------------------------------------------------------------- rendering


def test_templates_and_literals() -> None:
    assert render(F.eq("lang", "en"), templates=True) == ("lang == {p0}", {"p0": "en"})
    assert render(F.eq("lang", "en"), templates=False) == ('lang == "en"', {})
    assert render(F.gt("year", 2020), templates=False) == ("year > 2020", {})
    assert render(F.le("score", 0.5), templates=False) == ("score <= 0.5", {})
    assert render(F.ne("draft", True), templates=False) == ("draft != true", {})
    assert render(F.in_("lang", ["en", "de"]), templates=False) == ('lang in ["en", "de"]', {})
    assert render(F.not_in("year", (1, 2)), templates=True) == ("year not in {p0}", {"p0": [1, 2]})
    assert render(None, templates=True) == ("", {})
    assert render([], templates=False) == ("", {})


def test_json_paths() -> None:
    assert path_expr("metadata.lang") == 'metadata["lang"]'
    assert path_expr("metadata.tags.0") == 'metadata["tags"][0]'
    assert path_expr("metadata.a.b_2") == 'metadata["a"]["b_2"]'
    assert render(F.eq("metadata.lang", "en"), templates=False) == ('metadata["lang"] == "en"', {})


def test_several_filters_and_raw_are_anded_in_parentheses() -> None:
    expr, params = render(
        ["year > 2000 or year < 10", F.eq("lang", "en"), F.in_("tag", ["a"])], templates=True
    )
    assert expr == "(year > 2000 or year < 10) and (lang == {p0}) and (tag in {p1})"
    assert params == {"p0": "en", "p1": ["a"]}


def test_raw_expression_passes_through_unchanged() -> None:
    raw = 'metadata["x"] like "a%" && id in ["a", "b"]'
    assert render(raw, templates=False) == (raw, {})
    assert render(raw, templates=True) == (raw, {})
    assert render("   ", templates=False) == ("", {})


def test_prefix_uses_like_or_a_range_when_the_value_holds_wildcards() -> None:
    assert render(F.prefix("tag", "ab"), templates=False) == ('tag like "ab%"', {})
    assert render(F.prefix("tag", "ab"), templates=True) == ('tag like "ab%"', {})
    assert render(F.prefix("tag", "a%b"), templates=False) == ('(tag >= "a%b" and tag < "a%c")', {})
    assert render(F.prefix("tag", "a_"), templates=True) == (
        "(tag >= {p0} and tag < {p1})",
        {"p0": "a_", "p1": "a`"},
    )
    assert render(F.prefix("tag", "\\"), templates=False) == ('(tag >= "\\\\" and tag < "]")', {})
    assert (
        render(F.prefix("tag", "x\U0010ffff%"), templates=False)[0]
        == '(tag >= "x\U0010ffff%" and tag < "x\U0010ffff&")'
    )
    assert (
        render(F.prefix("tag", "%\U0010ffff"), templates=False)[0] == '(tag >= "%\U0010ffff" and tag < "&")'
    )
    assert (
        render(F.prefix("tag", "\U0010ffff_"), templates=False)[0]
        == '(tag >= "\U0010ffff_" and tag < "\U0010ffff`")'
    )
    assert render(F.prefix("tag", ""), templates=False) == ('tag >= ""', {})  # Lite reads like "%" as == "%"


def test_literals() -> None:
    assert literal(True) == "true"
    assert literal(-5) == "-5"
    assert literal(1e300) == "1e+300"
    assert literal(2.5) == "2.5"
    assert literal('a"b\\c') == '"a\\"b\\\\c"'
    assert literal("a\nb\tc\r\x01\x7f") == '"a\\nb\\tc\\r\\u0001\\u007f"'
    assert literal("a\nb", dialect="lite") == '"a\\\nb"'
    assert literal("a\r\nb\tc\x01", dialect="lite") == '"a\\\r\nb\tc\x01"'


def test_double_fields_get_float_literals() -> None:
    fields = {"score": "double", "year": "int64"}
    assert render(F.in_("score", [1, 2]), templates=False, fields=fields) == ("score in [1.0, 2.0]", {})
    assert render(F.gt("score", 1), templates=True, fields=fields) == ("score > {p0}", {"p0": 1.0})


def _go_unquote(lit: str) -> str:
    """What a Milvus server reads: the escapes we write are a subset of JSON's, with the same meaning."""
    result: str = json.loads(lit)
    return result


def _lite_unquote(lit: str) -> str:
    """What Milvus Lite reads: its lexer rules for a "..." token, then std::quoted (a backslash keeps the
    next character, whatever it is)."""
    assert lit[0] == lit[-1] == '"'
    body = lit[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        assert ch not in '"\r\n', f"raw {ch!r} at {i} would end or break the token"
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "\r":
                assert body[i + 2] == "\n", "backslash CR must be followed by LF"
                out.append("\r\n")
                i += 3
                continue
            assert nxt in '\\"\n', f"escape \\{nxt!r} would lose its backslash on Lite"
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_server_literal_round_trips(value: str) -> None:
    lit = literal(value, dialect="server")
    assert "\n" not in lit and "\r" not in lit
    assert _go_unquote(lit) == value


@settings(max_examples=200, deadline=None)
@given(texts)
def test_lite_literal_round_trips_or_refuses_a_lone_cr(value: str) -> None:
    if re.search(r"\r(?!\n)", value):
        with pytest.raises(FilterError, match="carriage return"):
            literal(value, dialect="lite")
        return
    assert _lite_unquote(literal(value, dialect="lite")) == value


# --------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field, match",
    [
        ("", "non-empty"),
        ("1abc", "not a field name"),
        ('lang == "x" or id', "not a field name"),
        ("a b", "not a field name"),
        ("lang;", "not a field name"),
        ("metadata.a-b", "JSON path part"),
        ("metadata.", "JSON path part"),
        ('metadata."x"', "JSON path part"),
        ("metadata.01", "JSON path part"),
        ("and", "word of the Milvus expression language"),
        ("like", "word of the Milvus expression language"),
        ("TRUE", "word of the Milvus expression language"),
    ],
)
def test_field_names_are_never_spliced_raw(field: str, match: str) -> None:
    with pytest.raises(FilterError, match=match):
        F.eq(field, "x")


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Filter("lang", "~=", "x"), "unknown operator"),
        (lambda: F.eq("x", float("nan")), "not finite"),
        (lambda: F.gt("x", float("inf")), "not finite"),
        (lambda: F.eq("x", "a\x00b"), "NUL"),
        (lambda: F.eq("x", "a\ud800b"), "lone surrogate"),
        (lambda: F.eq("x", None), "use str, int, float or bool"),  # type: ignore[arg-type]
        (lambda: F.eq("x", b"bytes"), "use str, int, float or bool"),  # type: ignore[arg-type]
        (lambda: F.eq("x", {"a": 1}), "use str, int, float or bool"),  # type: ignore[arg-type]
        (lambda: F.eq("x", ["a"]), "use str, int, float or bool"),  # type: ignore[arg-type]
        (lambda: F.eq("x", 2**63), "int64"),
        (lambda: F.lt("x", True), "not a bool"),
        (lambda: F.prefix("x", 3), "string value"),  # type: ignore[arg-type]
        (lambda: F.in_("x", []), "empty 'in' matches nothing"),
        (lambda: F.not_in("x", []), "drop the filter"),
        (lambda: F.in_("x", "abc"), "wrap it"),
        (lambda: Filter("x", "in", "abc"), "needs a list"),
        (lambda: F.in_("x", [1, "a"]), "mixes int, str"),
        (lambda: F.in_("x", [1, 2.5]), "all ints or all floats"),
        (lambda: F.in_("x", [True, 1]), "mixes bool, int"),
        (lambda: F.in_("x", [float("nan")]), "not finite"),
    ],
)
def test_values_are_checked(build: Any, match: str) -> None:
    with pytest.raises(FilterError, match=match):
        build()


def test_filter_is_frozen_hashable_and_normalises_lists() -> None:
    f = F.in_("tag", {"b", "a"})
    assert f.value == ("a", "b")
    assert f == Filter("tag", "in", ("a", "b"))
    assert hash(f) == hash(Filter("tag", "in", ["a", "b"]))  # type: ignore[arg-type]
    assert f.root == "tag" and F.eq("metadata.x.y", 1).path == ("metadata", "x", "y")
    with pytest.raises(AttributeError):
        f.value = ("c",)  # type: ignore[misc]
    assert set(OPERATORS) == {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "prefix"}


FIELDS = {
    "id": "varchar",
    "text": "varchar",
    "metadata": "json",
    "year": "int64",
    "score": "double",
    "draft": "bool",
}


@pytest.mark.parametrize(
    "flt, match",
    [
        (F.eq("nosuch", "x"), r"no filterable field 'nosuch'.*metadata\.nosuch"),
        (F.eq("metadata", "x"), "give a key path"),
        (F.eq("year.x", 1), "not JSON"),
        (F.eq("year", "2020"), "field is int64 but the value '2020' is a str"),
        (F.eq("year", 2020.0), "give an int"),
        (F.in_("year", ["a"]), "int64"),
        (F.eq("text", 3), "give a string"),
        (F.eq("draft", 1), "give a bool"),
        (F.eq("score", True), "give a number"),
        (F.prefix("year", "1"), "int64"),
        (F.eq("id", 5), "give a string"),
    ],
)
def test_filters_are_checked_against_the_collection_fields(flt: Filter, match: str) -> None:
    with pytest.raises(FilterError, match=match):
        render(flt, templates=False, fields=FIELDS)


def test_lite_refusals() -> None:
    with pytest.raises(FilterError, match="no filter templates"):
        render(F.eq("a", "b"), templates=True, dialect="lite")
    with pytest.raises(FilterError, match="brace"):
        render('text == "{draft}"', templates=False, dialect="lite")
    with pytest.raises(FilterError, match="carriage return"):
        render(F.eq("text", "a\rb"), templates=False, dialect="lite")
    assert render(F.eq("text", "{draft}"), templates=False, dialect="lite") == ('text == "{draft}"', {})
    with pytest.raises(FilterError, match="template placeholder"):
        render("lang == {p0}", templates=True)
    assert render('lang == "{p0}"', templates=True) == ('lang == "{p0}"', {})
    with pytest.raises(FilterError, match="dialect"):
        render(None, templates=False, dialect="sqlite")  # type: ignore[arg-type]
    with pytest.raises(FilterError, match="raw expression strings or Filter objects"):
        render([F.eq("a", 1), 3], templates=False)  # type: ignore[list-item]
    with pytest.raises(FilterError, match="raw expression string, a Filter"):
        render(3, templates=False)  # type: ignore[arg-type]


def test_filter_error_is_a_milvus_m3_error_and_value_error() -> None:
    with pytest.raises(MilvusM3Error):
        F.eq("1", 1)
    with pytest.raises(ValueError):
        F.eq("1", 1)


# --------------------------------------------------------------------- hostile values on Milvus Lite

HOSTILE = [
    "plain",
    "",
    " ",
    '" or id != "',
    "' or id != '",
    '" || "1" == "1',
    ") or (1 == 1",
    '"',
    "'",
    "\\",
    "\\\\",
    '\\"',
    "back\\slash",
    "ends with backslash\\",
    "new\nline",
    "crlf\r\nline",
    "\n",
    "tab\there",
    "ctl\x01\x1f\x7fx",
    "{p0}",
    "{}",
    "}{",
    "%",
    "_",
    "a%b_c",
    "\\%",
    "ü日本語🎉",
    "\u2028sep",
    "x" * 10_000,
    "é" * 3000 + '"',
    "a",
    "ab",
    "b",
]
LONE_CR = "lone\rcr"


@pytest.fixture(scope="module")
def hostile_collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectionManager, str]]:
    path: Path = tmp_path_factory.mktemp("filters") / "hostile.db"
    manager = CollectionManager(str(path))
    enc = FakeEncoder(dim=8)
    spec = CollectionSpec(
        dense_dim=8,
        model_name=enc.model_name,
        scalar_fields=(ScalarField(name="tag", max_length=65_535, default=""),),
    )
    manager.create_collection("hostile", spec=spec)
    values = [*HOSTILE, LONE_CR]
    texts = [f"row {i}" for i in range(len(values))]
    manager.upsert(
        "hostile",
        ids=[f"r{i}" for i in range(len(values))],
        texts=texts,
        embeddings=enc.encode_documents(texts),
        metadata=[{"tag": v} for v in values],
        fields={"tag": values},
    )
    try:
        yield manager, "hostile"
    finally:
        manager.close()


def _query(manager: CollectionManager, name: str, flt: Any) -> set[str]:
    expr, params = render(flt, templates=False, dialect="lite", fields=FIELDS | {"tag": "varchar"})
    assert params == {}
    rows = manager.client.query(name, filter=expr, output_fields=["id"], limit=1000)
    return {r["id"] for r in rows}


def _expected(op: str, value: Any) -> set[str]:
    stored = {f"r{i}": v for i, v in enumerate([*HOSTILE, LONE_CR])}
    checks = {
        "==": lambda s: s == value,
        "!=": lambda s: s != value,
        "<": lambda s: s < value,
        ">=": lambda s: s >= value,
        "prefix": lambda s: s.startswith(value),
        "in": lambda s: s in value,
        "not in": lambda s: s not in value,
    }
    return {rid for rid, s in stored.items() if checks[op](s)}


@pytest.mark.integration
@pytest.mark.parametrize("field", ["tag", "metadata.tag"])
def test_hostile_values_match_exactly_what_the_honest_filter_gives(
    hostile_collection: tuple[CollectionManager, str], field: str
) -> None:
    manager, name = hostile_collection
    for value in HOSTILE:
        for op in ("==", "!=", "<", ">=", "prefix"):
            got = _query(manager, name, Filter(field, op, value))
            assert got == _expected(op, value), (field, op, value[:40])
        members = (value, "plain")
        assert _query(manager, name, F.in_(field, members)) == _expected("in", members), value[:40]
        assert _query(manager, name, F.not_in(field, [value])) == _expected("not in", (value,)), value[:40]
        combined = _query(manager, name, ['id != "nobody"', F.eq(field, value)])
        assert combined == _expected("==", value)


@pytest.mark.integration
def test_lone_carriage_return_is_refused_for_lite_not_mismatched(
    hostile_collection: tuple[CollectionManager, str],
) -> None:
    manager, name = hostile_collection
    with pytest.raises(FilterError, match="carriage return"):
        _query(manager, name, F.eq("tag", LONE_CR))
    # rows holding one are still filtered correctly by other values
    assert f"r{len(HOSTILE)}" in _query(manager, name, F.prefix("tag", "lone"))

"""The search options are declared once and planned by a pure function (no Milvus, no model).

* the TypedDicts the public methods take as ``**options`` mirror the option dataclasses (same names,
  same types), so IDEs and mypy see exactly the options the searchers accept;
* every method's docstring lists its options, written from the dataclasses (it cannot drift);
* an unknown keyword is a ConfigError listing the valid names;
* ``plan.plan`` is a function of its arguments: options + defaults + target, no searcher, no manager.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from milvus_m3.collection.schema import CollectionSpec, ScalarField
from milvus_m3.engine.capabilities import LITE_CAPABILITIES, server_capabilities
from milvus_m3.errors import ConfigError
from milvus_m3.filters import F
from milvus_m3.search import HybridSearcher
from milvus_m3.search import options as opts
from milvus_m3.search.async_searcher import AsyncHybridSearcher
from milvus_m3.search.plan import (
    SearchTarget,
    check_searcher_options,
    plan,
    search_defaults,
)


def hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls, vars(opts))


@pytest.mark.parametrize(
    ("kwargs", "declarations"),
    [
        (opts.SearchKwargs, (opts.SearchOptions,)),
        (opts.TextSearchKwargs, (opts.SearchOptions, opts.RerankOptions)),
        (opts.SearcherKwargs, (opts.SearcherOptions,)),
    ],
)
def test_the_typed_dicts_mirror_the_option_dataclasses(kwargs: type, declarations: tuple[type, ...]) -> None:
    want: dict[str, object] = {}
    for d in declarations:
        want |= hints(d)
    got = hints(kwargs)
    assert list(got) == list(want) == list(opts.option_names(*declarations))
    assert got == want
    assert not kwargs.__required_keys__  # type: ignore[attr-defined]  # every option may be left out


def test_every_option_has_a_default_and_a_doc() -> None:
    for d in (opts.SearchOptions, opts.RerankOptions, opts.SearcherOptions):
        for f in dataclasses.fields(d):
            assert f.default is not dataclasses.MISSING, f.name
            assert f.metadata.get("doc"), f"{d.__name__}.{f.name} has no doc"
    assert opts.SearcherOptions().rerank_depth == opts.DEFAULT_RERANK_DEPTH


@pytest.mark.parametrize("cls", [HybridSearcher, AsyncHybridSearcher])
def test_the_docstrings_list_every_option(cls: type) -> None:
    methods = {
        "search": (opts.SearchOptions, opts.RerankOptions),
        "search_batch": (opts.SearchOptions, opts.RerankOptions),
        "search_embeddings": (opts.SearchOptions,),
    }
    for name, declarations in methods.items():
        doc = inspect.getdoc(getattr(cls, name)) or ""
        for f in (f for d in declarations for f in dataclasses.fields(d)):
            assert f"    {f.name}: {f.type} = {f.default!r}\n        {f.metadata['doc']}" in doc, (
                name,
                f.name,
            )
        if name == "search_embeddings":
            assert "reranker:" not in doc
    doc = inspect.getdoc(cls) or ""
    for f in dataclasses.fields(opts.SearcherOptions):
        assert f"    {f.name}: {f.type} = {f.default!r}" in doc, f.name


def test_the_methods_take_the_declared_options() -> None:
    """The options are typed once, as ``**options: Unpack[...]``: no method spells them out."""
    for cls in (HybridSearcher, AsyncHybridSearcher):
        for name, kwargs in (
            ("search", "TextSearchKwargs"),
            ("search_batch", "TextSearchKwargs"),
            ("search_embeddings", "SearchKwargs"),
            ("__init__", "SearcherKwargs"),
        ):
            params = inspect.signature(getattr(cls, name)).parameters
            assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
            assert params["options"].annotation == f"Unpack[{kwargs}]"
            spelled = set(params) & set(opts.option_names(opts.SearchOptions, opts.SearcherOptions))
            assert not spelled, (cls.__name__, name, spelled)


def test_an_unknown_option_is_a_config_error_listing_the_valid_names() -> None:
    with pytest.raises(
        ConfigError, match="unknown search option limt; the options are: limit, offset, mode"
    ) as e:
        opts.call_options({"limt": 3})
    assert "rerank_depth" in str(e.value)
    with pytest.raises(ConfigError, match="unknown search options reranker, typo") as e:
        opts.call_options({"reranker": None, "typo": 1, "limit": 2}, rerank=False)
    assert "rerank_depth" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown searcher option moed; the options are: mode, ranker"):
        opts.searcher_options({"moed": "dense"})
    search, stage = opts.call_options({"limit": 3, "rerank_depth": 7, "filter": "x"})
    assert (search.limit, search.filter, search.offset, stage.rerank_depth, stage.reranker) == (
        3,
        "x",
        0,
        7,
        None,
    )


SPEC = CollectionSpec(
    dense_dim=8,
    bm25=True,
    partition_key="tenant",
    scalar_fields=(ScalarField(name="topic", default="misc"),),
)


def test_plan_is_a_pure_function_of_options_defaults_and_target() -> None:
    defaults = search_defaults(
        check_searcher_options(opts.searcher_options({"ranker": "weighted", "weights": (1.0, 0.5, 0.25)})),
        SPEC,
    )
    assert defaults.legs == ("dense", "sparse", "bm25")
    server = SearchTarget.of("docs", SPEC, server_capabilities((2, 5, 4)))
    lite = SearchTarget.of("docs", SPEC, LITE_CAPABILITIES)

    p = plan(
        opts.SearchOptions(limit=3, legs=("dense", "bm25"), filter=F.eq("topic", "db")), defaults, server
    )
    assert (p.mode, p.ranker, p.legs, p.weights, p.limit, p.candidates) == (
        "hybrid",
        "weighted",
        ("dense", "bm25"),
        (1.0, 0.25),
        3,
        100,
    )
    assert p.params and "{" in p.expr  # templates on a server >= 2.5
    q = plan(opts.SearchOptions(limit=3, legs=("dense", "bm25"), filter=F.eq("topic", "db")), defaults, lite)
    assert not q.params and '"db"' in q.expr  # literals on Lite
    assert (
        plan(
            opts.SearchOptions(limit=3, legs=("dense", "bm25"), filter=F.eq("topic", "db")), defaults, server
        )
        == p
    )
    t = plan(opts.SearchOptions(tenant="acme", mode="dense", ranker="rrf"), defaults, lite)
    assert t.tenant == "acme" and "tenant" in t.output_fields and t.legs == ("dense",) and t.ranker == "rrf"
    with pytest.raises(ConfigError, match="partitions"):
        plan(opts.SearchOptions(partition_names=["p"]), defaults, lite)


def test_the_searcher_options_are_checked_before_any_round_trip() -> None:
    for bad, match in (
        ({"mode": "fast"}, "mode must be one of"),
        ({"rrf_k": 0}, "rrf_k must be an int"),
        ({"fusion": "server", "ranker": "dbsf"}, "fusion='server' cannot run ranker"),
        ({"rerank_depth": -1}, "rerank_depth must be an int"),
        ({"dense_params": {"metric_type": "IP"}}, "give only the inner parameters"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_searcher_options(opts.searcher_options(bad))
    with pytest.raises(ConfigError, match="leg 'bm25' is not in this collection"):
        search_defaults(
            check_searcher_options(opts.searcher_options({"legs": ["bm25"]})), CollectionSpec(dense_dim=8)
        )


def test_the_searchers_inherit_nothing() -> None:
    assert HybridSearcher.__mro__ == (HybridSearcher, object)
    assert AsyncHybridSearcher.__mro__ == (AsyncHybridSearcher, object)

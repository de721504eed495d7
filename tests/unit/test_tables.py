"""The variation points are tables every layer reads (issue 21): legs, their request builders, rankers,
evaluation modes. These tests keep each table whole and its readers in step with it."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from milvus_m3.cli.parser import build_parser
from milvus_m3.collection.legs import LEG_TABLE, legs_of, query_data, searchable_rows
from milvus_m3.collection.schema import CollectionSpec
from milvus_m3.evaluate.report import ALL_MODES, EVAL_MODES, FUSED_LEGS, SINGLE_MODES, RunnerKind
from milvus_m3.evaluate.runner import _RUNNERS
from milvus_m3.fusion import Normalize
from milvus_m3.search.options import LEGS, Leg, check_legs
from milvus_m3.search.rankers import REGISTRY
from milvus_m3.search.requests import LEG_REQUESTS, LegRequestContext, leg_request
from milvus_m3.types import M3Embeddings


def test_every_leg_has_one_entry_that_every_reader_shares() -> None:
    assert tuple(LEG_TABLE) == LEGS == typing.get_args(Leg)
    assert set(LEG_REQUESTS) == set(LEG_TABLE)
    for name, leg in LEG_TABLE.items():
        assert leg.name == name
        assert leg.normalize in typing.get_args(Normalize)
        assert leg.metric in ("IP", "BM25")


def test_a_collection_has_the_legs_its_spec_declares() -> None:
    assert legs_of(CollectionSpec(dense_dim=8)) == ("dense", "sparse")
    assert legs_of(CollectionSpec(dense_dim=8, bm25=True)) == ("dense", "sparse", "bm25")
    assert CollectionSpec(dense_dim=8, bm25=True).legs == ("dense", "sparse", "bm25")
    with pytest.raises(Exception, match="create it with bm25=True"):
        check_legs(["bm25"], legs_of(CollectionSpec(dense_dim=8)))


def test_query_data_and_searchable_rows_follow_each_legs_query_input() -> None:
    emb = M3Embeddings(dense=np.eye(3, 4, dtype=np.float32), sparse=[{1: 0.5}, {}, {2: 1.0}])
    texts = ["a", "b", "c"]
    assert [list(v) for v in query_data("dense", emb, texts, [0, 2])] == [[1, 0, 0, 0], [0, 0, 1, 0]]
    assert query_data("sparse", emb, texts, [0, 2]) == [{1: 0.5}, {2: 1.0}]
    assert query_data("bm25", emb, texts, [1]) == ["b"]
    with pytest.raises(ValueError, match="query text"):
        query_data("bm25", emb, None, [0])
    assert searchable_rows("sparse", emb) == [0, 2]  # an empty sparse query is never sent
    assert searchable_rows("dense", emb) == searchable_rows("bm25", emb) == [0, 1, 2]


def test_each_legs_request_searches_its_field_with_its_metric() -> None:
    ctx = LegRequestContext(dense_index_kind="FLAT", expr="x > 1", analyzer_name="en")
    dense = leg_request("dense", [[0.1, 0.2]], 5, ctx)
    sparse = leg_request("sparse", [{1: 0.5}], 5, ctx)
    bm25 = leg_request("bm25", ["query"], 5, ctx)
    for req, name in ((dense, "dense"), (sparse, "sparse"), (bm25, "bm25")):
        assert req.field == LEG_TABLE[name].field and req.limit == 5 and req.expr == "x > 1"
        assert req.search_params["metric_type"] == LEG_TABLE[name].metric
    assert bm25.search_params["analyzer_name"] == "en"


def test_every_eval_mode_is_one_entry_with_a_runner_and_known_legs_and_ranker() -> None:
    assert ALL_MODES == tuple(EVAL_MODES)
    assert set(_RUNNERS) == set(typing.get_args(RunnerKind))
    for name, mode in EVAL_MODES.items():
        assert set(mode.legs) <= set(LEG_TABLE), name
        assert mode.help, name
        if mode.runner == "fuse":
            assert mode.ranker in REGISTRY, name
    assert set(SINGLE_MODES) | set(FUSED_LEGS) == set(ALL_MODES)
    assert all(len(EVAL_MODES[m].legs) == 1 for m in SINGLE_MODES)


def test_the_cli_names_every_leg_with_its_help() -> None:
    parser = build_parser()
    search = next(
        a
        for a in parser._subparsers._group_actions[0].choices["search"]._actions
        if "--legs" in a.option_strings
    )
    for name, leg in LEG_TABLE.items():
        assert f"{name}: {leg.help}" in (search.help or "")

"""search/rankers.py: the ranker table is what every layer reads (names, weight rules, Milvus or not)."""

from __future__ import annotations

import typing

import pytest

from milvus_m3.cli import build_parser
from milvus_m3.engine.capabilities import LITE_CAPABILITIES
from milvus_m3.errors import ConfigError
from milvus_m3.fusion import dbsf, rrf
from milvus_m3.search.options import RANKERS, RankerName, check_ranker, check_rrf_k, check_weights
from milvus_m3.search.rankers import REGISTRY, check_server_fusion, ranker_spec


def test_the_literal_the_table_and_the_cli_name_the_same_rankers() -> None:
    assert typing.get_args(RankerName) == tuple(REGISTRY) == RANKERS == ("rrf", "weighted", "dbsf")
    search = build_parser()._subparsers._group_actions[0].choices["search"]  # type: ignore[union-attr]
    ranker = next(a for a in search._actions if a.dest == "ranker")
    assert tuple(ranker.choices) == RANKERS
    assert all(spec.help in ranker.help for spec in REGISTRY.values())


def test_an_unknown_ranker_is_one_line_naming_every_ranker() -> None:
    for bad in ("max", None, 3):
        with pytest.raises(ConfigError, match="ranker must be one of rrf, weighted, dbsf") as info:
            check_ranker(bad)
        assert "\n" not in str(info.value)
    assert check_ranker("dbsf") == "dbsf"


def test_weight_rules_per_ranker() -> None:
    legs = ("dense", "sparse")
    for name in ("rrf", "weighted"):
        with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
            check_weights((1.0, 2.0), legs, name)
    assert check_weights((1.0, 2.5), legs, "dbsf") == (1.0, 2.5)
    for ranker in RANKERS:
        with pytest.raises(ConfigError, match="both 0"):
            check_weights((0, 0), legs, ranker)
        with pytest.raises(ConfigError, match="two numbers"):
            check_weights((1.0,), legs, ranker)
    with pytest.raises(ConfigError, match="finite numbers >= 0"):
        check_weights((-0.5, 1.0), legs, "dbsf")
    with pytest.raises(ConfigError, match="dense weight"):
        check_weights((float("inf"), 1.0), legs, "dbsf")


def test_dbsf_has_no_milvus_ranker_and_server_fusion_refuses_it() -> None:
    assert ranker_spec("dbsf").milvus is None
    assert all(ranker_spec(n).milvus is not None for n in ("rrf", "weighted"))
    with pytest.raises(ConfigError, match="fusion='server' cannot run ranker 'dbsf'.*'auto' or 'client'"):
        check_server_fusion("server", "dbsf")
    for fusion in ("auto", "client"):
        check_server_fusion(fusion, "dbsf")
    check_server_fusion("server", "rrf")


class _Params:
    legs = ("dense", "sparse")
    weights = (1.0, 0.5)
    rrf_k = 10
    norm_score = True


def test_each_entry_fuses_with_its_fusion_function() -> None:
    lists = [[("a", 3.0), ("b", 2.0), ("c", 0.5)], [("b", 9.0), ("d", 1.0)]]
    assert ranker_spec("rrf").fuse(lists, _Params()) == rrf(lists, k=10, weights=(1.0, 0.5))
    assert ranker_spec("dbsf").fuse(lists, _Params()) == dbsf(lists, weights=(1.0, 0.5))
    # RRF with unequal weights is not Milvus's RRFRanker: fused here
    assert not ranker_spec("rrf").milvus.fits(_Params(), LITE_CAPABILITIES)  # type: ignore[union-attr]


def test_rrf_k_is_an_int_in_milvus_range() -> None:
    assert check_rrf_k(60) == 60 and check_rrf_k(16383) == 16383
    for bad in (0, 16384, 60.0, 2.5, True, "60", float("nan")):
        with pytest.raises(ConfigError, match="rrf_k must be an int"):
            check_rrf_k(bad)

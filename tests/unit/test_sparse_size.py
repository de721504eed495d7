"""Sparse size (issue 14, item 6): CollectionSpec's pruning fields and the sparse index's algorithm."""

from __future__ import annotations

import json

import pytest

from milvus_m3.collection.schema import CollectionSpec, build_index_params, build_record, parse_build_record
from milvus_m3.engine.capabilities import LITE_CAPABILITIES, capabilities_for_version
from milvus_m3.errors import ConfigError
from milvus_m3.sparse import prune

SERVER_25 = capabilities_for_version("v2.5.4")
SERVER_24 = capabilities_for_version("v2.4.9")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sparse_top_k": 0}, "sparse_top_k"),
        ({"sparse_top_k": 2.5}, "sparse_top_k"),
        ({"sparse_top_k": True}, "sparse_top_k"),
        ({"sparse_mass": 0.0}, "sparse_mass"),
        ({"sparse_mass": 1.5}, "sparse_mass"),
        ({"sparse_mass": "0.9"}, "sparse_mass"),
        ({"sparse_inverted_index_algo": "WAND"}, "sparse_inverted_index_algo"),
        ({"sparse_inverted_index_algo": "DAAT_WAND", "sparse_index": "SPARSE_WAND"}, "SPARSE_INVERTED_INDEX"),
    ],
)
def test_bad_sparse_size_options_name_the_field(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        CollectionSpec(dense_dim=8, **kwargs)  # type: ignore[arg-type]


def test_the_build_record_keeps_the_pruning_and_old_records_read_as_unpruned() -> None:
    spec = CollectionSpec(
        dense_dim=8, sparse_top_k=64, sparse_mass=0.9, sparse_inverted_index_algo="DAAT_WAND"
    )
    back, _ = parse_build_record(build_record(spec))
    assert back == spec
    record = build_record(CollectionSpec(dense_dim=8))
    meta = json.loads(record[record.index("{") :])
    for name in ("sparse_top_k", "sparse_mass", "sparse_inverted_index_algo"):
        del meta["spec"][name]  # a record written before these fields existed
    old, _ = parse_build_record(record[: record.index("{")] + json.dumps(meta))
    assert (
        old is not None and (old.sparse_top_k, old.sparse_mass, old.sparse_inverted_index_algo) == (None,) * 3
    )


def test_prune_sparse_is_sparse_prune_and_a_no_op_when_unset() -> None:
    vecs = [{5: 0.5, 1: 0.1, 9: 0.3, 2: 0.05}, {}, {7: 1.0}]
    assert CollectionSpec(dense_dim=8).prune_sparse(vecs) == vecs
    spec = CollectionSpec(dense_dim=8, sparse_top_k=2, sparse_mass=0.9)
    assert spec.prune_sparse(vecs) == [prune(v, top_k=2, mass=0.9) for v in vecs]
    assert spec.prune_sparse(vecs)[0] == {5: 0.5, 9: 0.3}


def test_lite_and_unset_keep_todays_sparse_index_params() -> None:
    spec = CollectionSpec(dense_dim=8, sparse_drop_ratio_build=0.1)
    for caps in (LITE_CAPABILITIES, SERVER_24, SERVER_25):
        assert spec.sparse_index_params(caps) == {"drop_ratio_build": 0.1}
    assert LITE_CAPABILITIES.sparse_index_algos == () == SERVER_24.sparse_index_algos
    with pytest.raises(
        ConfigError, match="sparse_inverted_index_algo 'DAAT_MAXSCORE' is not available on Milvus Lite"
    ):
        CollectionSpec(dense_dim=8, sparse_inverted_index_algo="DAAT_MAXSCORE").sparse_index_params(
            LITE_CAPABILITIES
        )
    with pytest.raises(ConfigError, match="this Milvus server"):
        CollectionSpec(dense_dim=8, sparse_inverted_index_algo="DAAT_WAND").sparse_index_params(SERVER_24)


def test_a_server_gets_inverted_index_algo_in_the_index_params() -> None:
    spec = CollectionSpec(dense_dim=8, sparse_inverted_index_algo="DAAT_WAND")
    assert spec.sparse_index_params(SERVER_25) == {"inverted_index_algo": "DAAT_WAND"}
    ratio = CollectionSpec(dense_dim=8, sparse_inverted_index_algo="TAAT_NAIVE", sparse_drop_ratio_build=0.2)
    assert ratio.sparse_index_params(SERVER_25) == {
        "drop_ratio_build": 0.2,
        "inverted_index_algo": "TAAT_NAIVE",
    }
    params = build_index_params(spec, "HNSW", caps=SERVER_25)
    sparse = next(p.to_dict() for p in params if p.field_name == "sparse")
    assert sparse["index_type"] == "SPARSE_INVERTED_INDEX" and sparse["metric_type"] == "IP"
    assert sparse["inverted_index_algo"] == "DAAT_WAND" and "drop_ratio_build" not in sparse


def test_sparse_wand_is_refused_where_the_server_deprecates_it() -> None:
    """Servers >= 2.5 replace SPARSE_WAND by SPARSE_INVERTED_INDEX + inverted_index_algo; 2.4 keeps it."""
    spec = CollectionSpec(dense_dim=8, sparse_index="SPARSE_WAND")
    with pytest.raises(ConfigError, match="SPARSE_WAND.*deprecated.*DAAT_WAND"):
        spec.check_engine(capabilities_for_version("v2.5.4"))
    spec.check_engine(SERVER_24)
    spec.check_engine(LITE_CAPABILITIES)
    CollectionSpec(dense_dim=8, sparse_inverted_index_algo="DAAT_WAND").check_engine(
        capabilities_for_version("v2.6.0")
    )

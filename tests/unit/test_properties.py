"""Property tests (hypothesis): sparse conversion, fusion, content-hash ids.

Budgets are modest (``max_examples`` 60-150 per property, no deadline) so this file stays a few
seconds. Each property is a contract other modules rely on:

- ``sparse.to_milvus_sparse``: int keys, float values > 0, zero weights dropped, negative / NaN /
  infinite weights and out-of-range ids refused, idempotent, and equal to what FlagEmbedding's
  str-keyed ``lexical_weights`` give after ``int(k)``.
- ``fusion``: scores do not depend on the order the ranked lists are given in (nor on the order of
  equal candidates), ties are broken deterministically, and a better rank never gets a lower score.
- content-hash ids: the same text gives the same id in every process and on every platform (pinned
  literals, plus a subprocess with another ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from milvus_m3 import fusion
from milvus_m3.errors import ConfigError, InputError
from milvus_m3.ingest import content_id
from milvus_m3.sparse import MAX_SPARSE_ID, lexical_score, prune, to_milvus_sparse, validate_sparse_rows

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

token_ids = st.integers(min_value=0, max_value=MAX_SPARSE_ID)
pos_weights = st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False)
any_weights = st.one_of(pos_weights, st.just(0.0), st.just(-0.0))
sparse_vecs = st.dictionaries(token_ids, any_weights, max_size=40)
positive_vecs = st.dictionaries(token_ids, pos_weights, max_size=40)


# ------------------------------------------------------------------------------------ sparse


@FAST
@given(sparse_vecs)
def test_sparse_keys_are_int_values_float_and_positive(vec: dict[int, float]) -> None:
    out = to_milvus_sparse(vec)
    assert all(type(k) is int for k in out)  # exactly int: no numpy ints, no bools, no str
    assert all(type(v) is float for v in out.values())
    assert all(v > 0.0 and math.isfinite(v) for v in out.values())
    assert all(0 <= k <= MAX_SPARSE_ID for k in out)
    # every positive weight is kept unchanged; every zero weight is dropped
    assert out == {k: float(w) for k, w in vec.items() if w > 0.0}


@FAST
@given(sparse_vecs)
def test_sparse_conversion_is_idempotent(vec: dict[int, float]) -> None:
    once = to_milvus_sparse(vec)
    assert to_milvus_sparse(once) == once
    assert to_milvus_sparse(once) is not once  # a new dict: the caller's value is never aliased


@FAST
@given(positive_vecs)
def test_sparse_round_trip_from_flagembedding_lexical_weights(vec: dict[int, float]) -> None:
    """FlagEmbedding gives {"12345": np.float32(w)}; int(k) + to_milvus_sparse gives the same vector back."""
    flag_style = {str(k): np.float32(w) for k, w in vec.items()}
    if flag_style:  # str ids are refused with the fix in the message, never passed through to Milvus
        with pytest.raises(InputError, match="convert with int"):
            to_milvus_sparse(flag_style)
    back = to_milvus_sparse({int(k): w for k, w in flag_style.items()})
    expected = {k: float(np.float32(w)) for k, w in vec.items() if float(np.float32(w)) > 0.0}
    assert back == expected


@FAST
@given(
    positive_vecs,
    st.sampled_from([np.int32, np.int64, np.uint32, np.uint64]),
    st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_sparse_accepts_numpy_scalars_and_returns_python_ones(
    vec: dict[int, float], kt: type, vt: type
) -> None:
    vec = {k: min(w, 60000.0) for k, w in vec.items()}  # float16 tops out at 65504
    keys = [k for k in vec if k <= np.iinfo(kt).max]
    np_vec = {kt(k): vt(vec[k]) for k in keys}
    out = to_milvus_sparse(np_vec)
    assert all(type(k) is int for k in out) and all(type(v) is float for v in out.values())
    assert set(out) <= set(keys)
    assert all(out[k] == float(vt(vec[k])) for k in out)


@FAST
@given(
    positive_vecs,
    token_ids,
    st.one_of(
        st.floats(max_value=-1e-300, allow_nan=False),
        st.just(float("nan")),
        st.just(float("inf")),
        st.just(float("-inf")),
    ),
)
def test_sparse_never_keeps_negative_nan_or_inf_weights(
    vec: dict[int, float], bad_id: int, bad_w: float
) -> None:
    vec = dict(vec)
    vec[bad_id] = bad_w
    with pytest.raises(InputError) as err:
        to_milvus_sparse(vec, row=7)
    assert err.value.field == "sparse" and err.value.row == 7
    assert "row 7" in str(err.value) and str(bad_id) in str(err.value)


@FAST
@given(
    st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SPARSE_ID + 1, max_value=2**70)),
    pos_weights,
)
def test_sparse_ids_out_of_uint32_range_are_refused(bad_id: int, w: float) -> None:
    with pytest.raises(InputError, match=r"outside Milvus's range") as err:
        to_milvus_sparse({bad_id: w}, row=3)
    assert err.value.row == 3


@FAST
@given(
    st.one_of(st.text(max_size=5), st.booleans(), st.floats(allow_nan=False), st.tuples(st.integers())),
    pos_weights,
)
def test_sparse_non_int_ids_are_refused(bad_key: object, w: float) -> None:
    with pytest.raises(InputError, match="ids must be ints"):
        to_milvus_sparse({bad_key: w})


@FAST
@given(st.lists(sparse_vecs, max_size=6), st.integers(min_value=0, max_value=5))
def test_validate_rows_names_the_first_bad_row(rows: list[dict[int, float]], bad_at: int) -> None:
    rows = list(rows)
    assert validate_sparse_rows(rows) == [to_milvus_sparse(r) for r in rows]
    assume(bad_at < len(rows))
    for later in range(bad_at, len(rows)):
        rows[later] = {**rows[later], 5: -1.0}
    with pytest.raises(InputError) as err:
        validate_sparse_rows(rows)
    assert err.value.row == bad_at and f"row {bad_at}:" in str(err.value)


@SLOWER
@given(positive_vecs, st.integers(min_value=1, max_value=50))
def test_prune_top_k_keeps_the_largest_deterministically(vec: dict[int, float], k: int) -> None:
    out = prune(vec, top_k=k)
    assert len(out) == min(k, len(vec))
    assert all(vec[t] == w for t, w in out.items())
    dropped = [vec[t] for t in vec if t not in out]
    if out and dropped:
        assert min(out.values()) >= max(dropped)
    # order of insertion does not matter
    rev = dict(reversed(list(vec.items())))
    assert prune(rev, top_k=k) == out


@SLOWER
@given(positive_vecs, st.floats(min_value=0.01, max_value=1.0))
def test_prune_mass_covers_the_mass(vec: dict[int, float], mass: float) -> None:
    assume(vec and all(w > 1e-12 for w in vec.values()) and sum(vec.values()) < 1e300)
    out = prune(vec, mass=mass)
    total = sum(vec.values())
    assert sum(out.values()) >= mass * total * (1 - 1e-9)
    assert 1 <= len(out) <= len(vec)


def test_prune_refuses_bad_options() -> None:
    with pytest.raises(ConfigError, match="top_k"):
        prune({1: 1.0}, top_k=0)
    with pytest.raises(ConfigError, match="mass"):
        prune({1: 1.0}, mass=1.5)


small_ids = st.integers(min_value=0, max_value=60)  # a small vocabulary, so query and doc overlap
moderate = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@FAST
@given(st.dictionaries(small_ids, moderate, max_size=20), st.dictionaries(small_ids, moderate, max_size=20))
def test_lexical_score_is_symmetric_sparse_inner_product(q: dict[int, float], d: dict[int, float]) -> None:
    s = lexical_score(q, d)
    assert s == pytest.approx(lexical_score(d, q), rel=1e-9, abs=1e-300)
    brute = sum(q[t] * d[t] for t in set(q) & set(d))
    assert s == pytest.approx(brute, rel=1e-9, abs=1e-300)
    assert s >= 0.0


# ------------------------------------------------------------------------------------------- fusion

doc_ids = st.one_of(
    st.integers(min_value=-5, max_value=40), st.text(alphabet="abcxyz", min_size=1, max_size=3)
)


@st.composite
def ranked_lists(draw: st.DrawFn, min_lists: int = 1, max_lists: int = 4) -> list[list[tuple[object, float]]]:
    """Candidate lists as Milvus gives them: unique ids, best first, scores not increasing."""
    pool = draw(st.lists(doc_ids, min_size=1, max_size=25, unique=True))
    n = draw(st.integers(min_value=min_lists, max_value=max_lists))
    out = []
    for _ in range(n):
        ids = draw(st.permutations(pool))[: draw(st.integers(min_value=0, max_value=len(pool)))]
        scores = sorted(
            draw(st.lists(st.floats(min_value=-50, max_value=50), min_size=len(ids), max_size=len(ids))),
            reverse=True,
        )
        out.append(list(zip(ids, scores, strict=False)))
    return out


def _key(doc: object) -> tuple[int, object]:
    return (0, doc) if isinstance(doc, int) else (1, doc)


def _check_order(fused: list[tuple[object, float]]) -> None:
    """Best first; equal scores ordered by id (ints before strings, then ascending)."""
    for (a, sa), (b, sb) in itertools.pairwise(fused):
        assert sa >= sb
        if sa == sb:
            assert _key(a) < _key(b), f"tie between {a!r} and {b!r} not broken by id"


def _fusers(n: int) -> dict[str, Any]:
    return {
        "rrf": lambda ls: fusion.rrf(ls),
        "rrf-k10": lambda ls: fusion.rrf(ls, k=10),
        "weighted": lambda ls: fusion.weighted(ls, [0.5 + 0.1 * i for i in range(len(ls))]),
        "weighted-equal": lambda ls: fusion.weighted(ls, [1.0] * len(ls)),
    }


@FAST
@given(ranked_lists(), st.randoms(use_true_random=False))
def test_fusion_does_not_depend_on_list_order(lists: list[list[tuple[object, float]]], rnd: Any) -> None:
    """Equal weights: shuffling the lists gives exactly the same ids, order and scores."""
    shuffled = list(lists)
    rnd.shuffle(shuffled)
    for name in ("rrf", "rrf-k10", "weighted-equal"):
        fuse = _fusers(len(lists))[name]
        assert fuse(shuffled) == fuse(lists), name


def test_rrf_tie_across_four_lists_is_broken_by_id_in_any_list_order() -> None:
    """d0 ranks (1, -, 1, 3) and d2 ranks (-, 1, 3, 1): the same RRF score, 2/61 + 1/63, so d0 (the
    smaller id) comes first. Summing per list in the order given makes the two sums differ in the last
    bit, and then the order of the lists decides: the sum must not depend on it (math.fsum)."""
    lists = [
        [("d0", 0.9), ("d3", 0.8), ("d1", 0.7)],
        [("d2", 0.9), ("d1", 0.8), ("d5", 0.7), ("d3", 0.6)],
        [("d0", 0.9), ("d3", 0.8), ("d2", 0.7), ("d1", 0.6), ("d5", 0.5), ("d4", 0.4)],
        [("d2", 0.9), ("d4", 0.8), ("d0", 0.7), ("d3", 0.6)],
    ]
    expected = ["d3", "d0", "d2", "d1", "d4", "d5"]
    for order in ([0, 1, 2, 3], [3, 1, 2, 0], [2, 3, 0, 1], [1, 0, 3, 2]):
        fused = fusion.rrf([lists[i] for i in order])
        assert [d for d, _ in fused] == expected, order
        assert dict(fused)["d0"] == dict(fused)["d2"], order


@FAST
@given(ranked_lists(min_lists=2, max_lists=2))
def test_weighted_fusion_follows_its_weights_when_lists_swap(lists: list[list[tuple[object, float]]]) -> None:
    a, b = lists
    assert fusion.weighted([a, b], [0.7, 0.2]) == fusion.weighted([b, a], [0.2, 0.7])


@FAST
@given(ranked_lists(), st.randoms(use_true_random=False))
def test_fusion_ties_are_broken_by_id_whatever_the_candidate_order(
    lists: list[list[tuple[object, float]]], rnd: Any
) -> None:
    """Equal-score candidates in a list may come back from Milvus in any order; the fused order is by id."""
    for name, fuse in _fusers(len(lists)).items():
        fused = fuse(lists)
        _check_order(fused)
        assert fuse(lists) == fused, name  # and the same on every call
    # rrf of one list ignores scores: all-equal scores, any order of the ties -> same ids per rank
    flat = [[(d, 1.0) for d, _ in lists[0]]]
    again = [list(flat[0])]
    rnd.shuffle(again[0])
    assert fusion.weighted(flat, [1.0]) == fusion.weighted(again, [1.0])


@FAST
@given(ranked_lists())
def test_fused_score_is_monotone_in_rank(lists: list[list[tuple[object, float]]]) -> None:
    """If A ranks at least as well as B in every list that has B (and is in each of them), then A's RRF
    score is at least B's; in weighted fusion the same holds for scores."""
    ranks = [{d: r for r, (d, _) in enumerate(ls)} for ls in lists]
    scores = [dict(ls) for ls in lists]
    rrf = dict(fusion.rrf(lists))
    wtd = dict(fusion.weighted(lists, [1.0] * len(lists)))
    docs = list(rrf)
    for a in docs:
        for b in docs:
            if a == b:
                continue
            if all(a in rk and rk[a] <= rk[b] for rk in ranks if b in rk):
                assert rrf[a] >= rrf[b], (a, b)
            if all(a in sc and sc[a] >= sc[b] for sc in scores if b in sc):
                assert wtd[a] >= wtd[b] - 1e-12, (a, b)
    # one list: the fused order is the list's own order, and every score is 1 / (k + rank)
    one = fusion.rrf(lists[:1], k=60)
    assert [d for d, _ in one] == [d for d, _ in lists[0]]
    assert [s for _, s in one] == [1.0 / (60 + r) for r in range(1, len(lists[0]) + 1)]


@FAST
@given(ranked_lists(), st.integers(min_value=0, max_value=30))
def test_fusion_limit_is_a_prefix_and_inputs_are_not_mutated(
    lists: list[list[tuple[object, float]]], limit: int
) -> None:
    import copy

    before = copy.deepcopy(lists)
    full = fusion.rrf(lists)
    assert fusion.rrf(lists, limit=limit) == full[:limit]
    assert (
        fusion.weighted(lists, [0.3] * len(lists), limit=limit)
        == fusion.weighted(lists, [0.3] * len(lists))[:limit]
    )
    assert lists == before
    assert {d for d, _ in full} == {d for ls in lists for d, _ in ls}  # the union, nothing else


# ----------------------------------------------------------------------------------- content-hash ids


PINNED = {
    # text: (varchar id, int64 id). blake2b-128 of the UTF-8 bytes; int64 = first 8 bytes, big-endian signed.
    # These literals must never change: a change re-keys every collection ingested without ids.
    "hello world": ("e9a804b2e527fd3601d2ffc0bb023cd6", -1610031700389659338),
    "Die Katze schläft auf dem Sofa.": ("7153c533c65a991a821baf987e4e4ec3", 8166087375514671386),
    "検索システム 🙂": ("4fa5ae952d418bcb626de903865321fa", 5739185255886195659),
    "a\nb\tc  ": ("47d95a9706ceffb002819d6c14ec941c", 5177268851339886512),
}


@pytest.mark.parametrize("text", sorted(PINNED))
def test_content_ids_are_pinned(text: str) -> None:
    hex_id, int_id = PINNED[text]
    assert content_id(text) == hex_id
    assert content_id(text, id_type="int64") == int_id


@FAST
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300))
def test_content_id_shape_and_agreement_between_id_types(text: str) -> None:
    hex_id = content_id(text)
    int_id = content_id(text, id_type="int64")
    assert isinstance(hex_id, str) and len(hex_id) == 32 and all(c in "0123456789abcdef" for c in hex_id)
    assert isinstance(int_id, int) and -(2**63) <= int_id < 2**63
    assert int_id == int.from_bytes(bytes.fromhex(hex_id)[:8], "big", signed=True)
    assert content_id(text) == hex_id  # same text, same id
    assert content_id(text + " ") != hex_id  # any change to the text changes the id


@FAST
@given(
    st.lists(
        st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
        min_size=2,
        max_size=30,
        unique=True,
    )
)
def test_content_ids_of_distinct_texts_differ(batch: list[str]) -> None:
    assert len({content_id(t) for t in batch}) == len(batch)
    assert len({content_id(t, id_type="int64") for t in batch}) == len(batch)


_HASH_SCRIPT = (
    "import json, sys; from milvus_m3.ingest import content_id; "
    "texts = json.load(sys.stdin); "
    "print(json.dumps([[content_id(t), content_id(t, id_type='int64'), hash(t)] for t in texts]))"
)


def test_content_ids_equal_across_processes_with_other_hash_seeds() -> None:
    """Python's own str hash changes with PYTHONHASHSEED; content ids must not."""
    import json
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    sample = [
        *PINNED,
        "",
        " ",
        "x" * 10_000,
        *("".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, 20)) for _ in range(50)),
    ]
    sample = [t for t in sample if t and not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
    here = [[content_id(t), content_id(t, id_type="int64")] for t in sample]
    root = str(Path(__file__).resolve().parents[2])
    seen_hashes = []
    for seed in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
        out = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT],
            input=json.dumps(sample),
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        there = json.loads(out)
        assert [r[:2] for r in there] == here
        seen_hashes.append([r[2] for r in there])
    assert seen_hashes[0] != seen_hashes[1]  # the seeds really differed


@pytest.mark.integration
def test_ingest_without_ids_stores_the_pinned_content_ids(tmp_path: Path) -> None:
    """End to end: a JSONL and a CSV without an id column give the same, pinned ids."""
    import csv
    import json

    from milvus_m3.collection.manager import CollectionManager
    from milvus_m3.ingest import ingest
    from tests.fakes import FakeEncoder

    enc = FakeEncoder(dim=8)
    texts = sorted(PINNED)
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cv = tmp_path / "docs.csv"
    with cv.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "lang"])
        w.writerows([t, "xx"] for t in texts)
    with CollectionManager(str(tmp_path / "m.db")) as m:
        for name, f in (("from_jsonl", jl), ("from_csv", cv)):
            m.create_collection(name, dense_dim=8, model_name=enc.model_name)
            ingest([f], manager=m, collection=name, encoder=enc, progress=False)
            rows = m.client.query(name, filter='id != ""', output_fields=["id", "text"], limit=100)
            assert {r["id"]: r["text"] for r in rows} == {PINNED[t][0]: t for t in texts}

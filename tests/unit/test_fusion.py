"""fusion.py: hand-computed scores, ties, order invariance, monotonicity, no mutation."""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milvus_m3.errors import ConfigError, InputError
from milvus_m3.fusion import NORMALIZERS, RRF_K, dbsf, normalize_score, rrf, score_sum, weighted

A = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
B = [("c", 5.0), ("a", 3.0)]


def test_rrf_k_is_pymilvus_default() -> None:
    import inspect

    from pymilvus import RRFRanker

    assert RRF_K == 60
    assert inspect.signature(RRFRanker).parameters["k"].default == RRF_K


def test_rrf_hand_computed() -> None:
    got = rrf([A, B])
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61}
    assert [doc for doc, _ in got] == ["a", "c", "b"]
    for doc, score in got:
        assert score == pytest.approx(expected[doc], abs=1e-15)


def test_rrf_exact_with_small_k() -> None:
    got = rrf([[("x", 0.0), ("y", 0.0)], [("y", 0.0)]], k=1)
    # x: 1/2; y: 1/3 + 1/2
    assert got[0][0] == "y"
    assert Fraction(got[0][1]).limit_denominator(100) == Fraction(5, 6)
    assert Fraction(got[1][1]).limit_denominator(100) == Fraction(1, 2)


def test_rrf_ignores_scores_and_uses_positions() -> None:
    reordered_scores = [("a", -100.0), ("b", 1e9), ("c", float("inf"))]
    assert rrf([reordered_scores, B]) == rrf([A, B])


def test_rrf_ties_break_by_id_ints_before_strings() -> None:
    got = rrf([[("z", 1.0)], [("a", 1.0)], [(7, 1.0)], [(3, 1.0)]])
    assert [doc for doc, _ in got] == [3, 7, "a", "z"]
    assert len({score for _, score in got}) == 1


def test_rrf_limit_and_empty() -> None:
    assert rrf([A, B], limit=2) == rrf([A, B])[:2]
    assert rrf([A, B], limit=0) == []
    assert rrf([]) == []
    assert rrf([[], []]) == []


def test_rrf_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="k must be"):
        rrf([A], k=0)
    with pytest.raises(ConfigError, match="k must be"):
        rrf([A], k=float("nan"))
    with pytest.raises(ConfigError, match="limit"):
        rrf([A], limit=-1)
    with pytest.raises(InputError, match="appears twice in list 1"):
        rrf([A, [("a", 1.0), ("a", 0.5)]])
    with pytest.raises(InputError, match=r"\(id, score\) pair"):
        rrf([["a", "b"]])  # type: ignore[list-item]


def test_weighted_mirrors_milvus_arctan() -> None:
    got = dict(weighted([A, B], [0.7, 0.3]))

    def f(s: float) -> float:
        return 0.5 + math.atan(s) / math.pi

    assert got["a"] == pytest.approx(0.7 * f(0.9) + 0.3 * f(3.0), abs=1e-15)
    assert got["b"] == pytest.approx(0.7 * f(0.8), abs=1e-15)
    assert got["c"] == pytest.approx(0.7 * f(0.7) + 0.3 * f(5.0), abs=1e-15)


def test_weighted_normalizers() -> None:
    assert normalize_score(0.0) == 0.5
    assert normalize_score(1.0) == pytest.approx(0.75)
    assert normalize_score(-1.0, "cosine") == 0.0
    assert normalize_score(1.0, "cosine") == 1.0
    assert normalize_score(0.0, "l2") == 1.0
    assert normalize_score(1.0, "l2") == pytest.approx(0.5)
    assert normalize_score(3.5, "none") == 3.5
    assert set(NORMALIZERS) == {"arctan", "cosine", "l2", "none"}
    with pytest.raises(ConfigError, match="normalize must be one of"):
        weighted([A], [1.0], normalize="minmax")  # type: ignore[arg-type]


def test_score_sum_is_raw_weighted_sum_over_the_union() -> None:
    got = dict(score_sum([A, B], [0.4, 0.2]))
    assert got == pytest.approx({"a": 0.4 * 0.9 + 0.2 * 3.0, "b": 0.4 * 0.8, "c": 0.4 * 0.7 + 0.2 * 5.0})
    assert score_sum([A, B]) == weighted([A, B], [1, 1], normalize="none")


def test_weighted_rejects_bad_weights() -> None:
    with pytest.raises(ConfigError, match="2 weights for 1 lists"):
        weighted([A], [0.5, 0.5])
    with pytest.raises(ConfigError, match="finite numbers >= 0"):
        weighted([A, B], [0.5, -0.1])
    with pytest.raises(ConfigError, match="finite numbers >= 0"):
        weighted([A, B], [0.5, float("nan")])
    with pytest.raises(ConfigError, match="sequence"):
        weighted([A], 1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a number"):
        weighted([[("a", float("nan"))]], [1.0])
    with pytest.raises(InputError, match="appears twice"):
        weighted([[("a", 1.0), ("a", 2.0)]], [1.0])


# --------------------------------------------------------------------- dbsf

# A: mean 0.8, sample sd 0.1 -> bounds 0.5 .. 1.1: a 2/3, b 1/2, c 1/3.
# B: mean 4, sample sd sqrt(2) -> bounds 4 -+ 3 sqrt(2): c 1/2 + 1/(6 sqrt 2), a 1/2 - 1/(6 sqrt 2).
_E = 1 / (6 * math.sqrt(2))


def test_dbsf_hand_computed() -> None:
    got = dbsf([A, B])
    expected = {"a": 2 / 3 + 0.5 - _E, "b": 0.5, "c": 1 / 3 + 0.5 + _E}  # b is not in B: nothing from B
    assert [doc for doc, _ in got] == ["a", "c", "b"]
    for doc, score in got:
        assert score == pytest.approx(expected[doc], abs=1e-15)


def test_dbsf_weights_multiply_each_legs_normalised_score() -> None:
    got = dbsf([A, B], weights=[0.5, 2.0])
    expected = {"a": 0.5 * 2 / 3 + 2 * (0.5 - _E), "b": 0.5 * 0.5, "c": 0.5 / 3 + 2 * (0.5 + _E)}
    assert [doc for doc, _ in got] == ["c", "a", "b"]
    assert dict(got) == pytest.approx(expected, abs=1e-15)
    assert dbsf([A, B], weights=[1, 1]) == dbsf([A, B])
    assert dbsf([A, B], [1.0, 1.0], 2) == dbsf([A, B])[:2]


def test_dbsf_one_hit_and_zero_spread_lists_score_one_half() -> None:
    got = dbsf([[("x", 7.0)], A])
    # x: 0.5 from its one-hit list, whatever its score; b is the mean of A, 0.5 too
    assert [d for d, _ in got] == ["a", "b", "x", "c"] or [d for d, _ in got] == ["a", "x", "b", "c"]
    assert dict(got) == pytest.approx({"a": 2 / 3, "b": 0.5, "x": 0.5, "c": 1 / 3}, abs=1e-15)
    assert dict(got)["x"] == 0.5 and dbsf([[("x", -1e9)]]) == [("x", 0.5)]
    flat = [("p", 0.1), ("q", 0.1), ("r", 0.1)]  # zero spread (0.1 * 3 / 3 is not 0.1 in floats)
    assert dbsf([flat]) == [("p", 0.5), ("q", 0.5), ("r", 0.5)]
    assert dict(dbsf([flat, [("q", 3.0), ("s", 1.0)]])) == pytest.approx(
        {"p": 0.5, "q": 0.5 + 0.5 + _E, "r": 0.5, "s": 0.5 - _E}, abs=1e-15
    )
    assert dbsf([[], A]) == dbsf([A])  # an empty list adds nothing
    assert dbsf([]) == [] and dbsf([[], []]) == []


def test_dbsf_ignores_each_lists_scale_and_offset() -> None:
    # the map is by the list's own distribution: a*s + b (a > 0) gives the same normalised scores
    shifted = [(d, 1000.0 + 37.0 * s) for d, s in B]
    assert dict(dbsf([A, shifted])) == pytest.approx(dict(dbsf([A, B])), abs=1e-12)


def test_dbsf_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="2 weights for 1 lists"):
        dbsf([A], [0.5, 0.5])
    with pytest.raises(ConfigError, match="finite numbers >= 0"):
        dbsf([A, B], [1.0, -1.0])
    with pytest.raises(ConfigError, match="limit"):
        dbsf([A], limit=-1)
    with pytest.raises(InputError, match="appears twice in list 0"):
        dbsf([[("a", 1.0), ("a", 0.5)]])
    with pytest.raises(InputError, match="not a number"):
        dbsf([[("a", float("nan")), ("b", 1.0)]])
    with pytest.raises(InputError, match="not finite"):
        dbsf([[("a", float("inf")), ("b", 1.0)]])


def test_dbsf_equals_qdrant_clients_own_function() -> None:
    fusion = pytest.importorskip("qdrant_client.hybrid.fusion")
    from qdrant_client.http.models import ScoredPoint

    lists = [A, B, [("b", 0.2), ("d", 0.9), ("a", -0.4), ("e", 0.0)]]
    ids = {d: n for n, d in enumerate(sorted({d for x in lists for d, _ in x}))}  # qdrant ids are ints
    points = [[ScoredPoint(id=ids[d], version=0, score=s) for d, s in x] for x in lists]
    theirs = {p.id: p.score for p in fusion.distribution_based_score_fusion(points, limit=10)}
    ours = {ids[d]: s for d, s in dbsf(lists)}
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_inputs_are_not_mutated_and_results_are_new() -> None:
    lists = [list(A), list(B)]
    before = copy.deepcopy(lists)
    for fn in (
        lambda: rrf(lists),
        lambda: weighted(lists, [0.5, 0.5]),
        lambda: score_sum(lists),
        lambda: dbsf(lists, [0.5, 0.5]),
    ):
        out = fn()
        assert lists == before
        assert all(type(item) is tuple for item in out)
        out.clear()
        assert lists == before


# --------------------------------------------------------------------- properties

ids = st.integers(min_value=0, max_value=30)
ranking = st.lists(ids, unique=True, max_size=12).map(lambda xs: [(x, float(-i)) for i, x in enumerate(xs)])
scored = st.lists(
    st.tuples(ids, st.floats(min_value=-50, max_value=50, allow_nan=False)),
    max_size=12,
    unique_by=lambda t: t[0],
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ranking, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_rrf_is_invariant_to_list_order(lists: list[list[tuple[int, float]]], rnd: object) -> None:
    shuffled = list(lists)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = rrf(lists), rrf(shuffled)
    assert [d for d, _ in a] == [d for d, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=False):
        assert x == pytest.approx(y, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.lists(ranking, min_size=1, max_size=4), st.integers(min_value=1, max_value=100))
def test_rrf_scores_sorted_bounded_and_complete(lists: list[list[tuple[int, float]]], k: int) -> None:
    got = rrf(lists, k=k)
    union = {d for lst in lists for d, _ in lst}
    assert {d for d, _ in got} == union
    assert len(got) == len(union)
    for (d1, s1), (d2, s2) in itertools.pairwise(got):
        assert s1 > s2 or (s1 == s2 and d1 < d2)
    for _, s in got:
        assert 0 < s <= len(lists) / (k + 1) + 1e-12


@settings(max_examples=80, deadline=None)
@given(st.lists(ranking, min_size=1, max_size=3), st.data())
def test_rrf_moving_a_doc_up_raises_its_score_and_lowers_the_other(
    lists: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    candidates = [(li, pos) for li, lst in enumerate(lists) for pos in range(1, len(lst))]
    if not candidates:
        return
    li, pos = data.draw(st.sampled_from(candidates))
    up, down = lists[li][pos][0], lists[li][pos - 1][0]
    moved = [list(lst) for lst in lists]
    moved[li][pos - 1], moved[li][pos] = moved[li][pos], moved[li][pos - 1]
    before, after = dict(rrf(lists)), dict(rrf(moved))
    assert after[up] > before[up]
    assert after[down] < before[down]
    for doc, score in before.items():
        if doc not in (up, down):
            assert after[doc] == score


@settings(max_examples=80, deadline=None)
@given(
    st.lists(scored, min_size=2, max_size=2),
    st.tuples(st.floats(0, 1), st.floats(0, 1)),
    st.data(),
)
def test_weighted_is_monotone_in_each_score(
    lists: list[list[tuple[int, float]]], weights: tuple[float, float], data: st.DataObject
) -> None:
    candidates = [(li, pos) for li, lst in enumerate(lists) for pos in range(len(lst))]
    if not candidates:
        return
    li, pos = data.draw(st.sampled_from(candidates))
    bump = data.draw(st.floats(min_value=0.01, max_value=10))
    doc, score = lists[li][pos]
    raised = [list(lst) for lst in lists]
    raised[li][pos] = (doc, score + bump)
    for normalize in ("arctan", "none"):
        before = dict(weighted(lists, weights, normalize=normalize))  # type: ignore[arg-type]
        after = dict(weighted(raised, weights, normalize=normalize))  # type: ignore[arg-type]
        assert after[doc] >= before[doc]
        for other, score_before in before.items():
            if other != doc:
                assert after[other] == score_before


@settings(max_examples=60, deadline=None)
@given(st.lists(scored, min_size=1, max_size=3), st.integers(min_value=0, max_value=40))
def test_limit_is_a_prefix(lists: list[list[tuple[int, float]]], limit: int) -> None:
    ws = [1.0] * len(lists)
    assert rrf(lists, limit=limit) == rrf(lists)[:limit]
    assert weighted(lists, ws, limit=limit) == weighted(lists, ws)[:limit]
    assert score_sum(lists, limit=limit) == score_sum(lists)[:limit]

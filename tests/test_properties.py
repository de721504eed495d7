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

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from milvus_m3.errors import ConfigError, InputError
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
    assert all(type(k) is int for k in out)  # noqa: E721 - exactly int: no numpy ints, no bools, no str
    assert all(type(v) is float for v in out.values())  # noqa: E721
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
@given(positive_vecs, st.sampled_from([np.int32, np.int64, np.uint32, np.uint64]),
       st.sampled_from([np.float16, np.float32, np.float64]))
def test_sparse_accepts_numpy_scalars_and_returns_python_ones(vec: dict[int, float], kt: type, vt: type) -> None:
    vec = {k: min(w, 60000.0) for k, w in vec.items()}  # float16 tops out at 65504
    keys = [k for k in vec if k <= np.iinfo(kt).max]
    np_vec = {kt(k): vt(vec[k]) for k in keys}
    out = to_milvus_sparse(np_vec)
    assert all(type(k) is int for k in out) and all(type(v) is float for v in out.values())  # noqa: E721
    assert set(out) <= set(keys)
    assert all(out[k] == float(vt(vec[k])) for k in out)


@FAST
@given(positive_vecs, token_ids, st.one_of(
    st.floats(max_value=-1e-300, allow_nan=False),
    st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
))
def test_sparse_never_keeps_negative_nan_or_inf_weights(vec: dict[int, float], bad_id: int, bad_w: float) -> None:
    vec = dict(vec)
    vec[bad_id] = bad_w
    with pytest.raises(InputError) as err:
        to_milvus_sparse(vec, row=7)
    assert err.value.field == "sparse" and err.value.row == 7
    assert "row 7" in str(err.value) and str(bad_id) in str(err.value)


@FAST
@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SPARSE_ID + 1, max_value=2**70)),
       pos_weights)
def test_sparse_ids_out_of_uint32_range_are_refused(bad_id: int, w: float) -> None:
    with pytest.raises(InputError, match=r"outside Milvus's range") as err:
        to_milvus_sparse({bad_id: w}, row=3)
    assert err.value.row == 3


@FAST
@given(st.one_of(st.text(max_size=5), st.booleans(), st.floats(allow_nan=False), st.tuples(st.integers())),
       pos_weights)
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

"""The log-bucket sketch: quantiles within its relative accuracy, exact merges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally.analysis.sketch import (
    MAX_BUCKET,
    MAX_VALUE,
    MIN_BUCKET,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    LogSketch,
    bucket_of,
    buckets_in_range,
    value_of,
)


def _exact(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[math.floor(q * (len(s) - 1))]


values_st = st.lists(
    st.floats(min_value=0.01, max_value=1e7, allow_nan=False), min_size=1, max_size=400
)


@given(values_st, st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_quantile_within_relative_accuracy(values: list[float], q: float) -> None:
    sketch = LogSketch()
    for x in values:
        sketch.add(x)
    got = sketch.quantile(q)
    want = _exact(values, q)
    assert got is not None
    assert abs(got - want) <= RELATIVE_ACCURACY * want * (1 + 1e-9)


@settings(max_examples=50)
@given(values_st, values_st)
def test_merge_equals_one_sketch_of_everything(a: list[float], b: list[float]) -> None:
    sa, sb, sall = LogSketch(), LogSketch(), LogSketch()
    for x in a:
        sa.add(x)
        sall.add(x)
    for x in b:
        sb.add(x)
        sall.add(x)
    sa.merge(sb)
    assert sa.bins == sall.bins
    assert sa.count == sall.count
    assert sa.quantiles(0.5, 0.95, 0.99) == sall.quantiles(0.5, 0.95, 0.99)


def test_empty_sketch_has_no_quantiles() -> None:
    s = LogSketch()
    assert s.quantile(0.5) is None
    assert s.quantiles(0.5, 0.99) == [None, None]


def test_zero_and_extreme_values_are_bounded() -> None:
    s = LogSketch()
    for x in (0.0, -1.0, 1e-9, 1e20):
        s.add(x)
    assert s.quantile(0.0) == 0.0
    assert len(s.bins) == 3  # zero bucket, the lowest and the highest
    assert bucket_of(1e30) == bucket_of(1e11)


def test_quantile_rejects_out_of_range() -> None:
    s = LogSketch()
    s.add(1.0)
    with pytest.raises(ValueError, match="within"):
        s.quantile(1.5)


def test_bucket_value_is_within_accuracy_of_its_members() -> None:
    for x in (0.5, 1.0, 95.0, 812.0, 60_000.0):
        assert abs(value_of(bucket_of(x)) - x) <= RELATIVE_ACCURACY * x


def test_merge_bins_restores_quantiles() -> None:
    s = LogSketch()
    for x in range(1, 1000):
        s.add(float(x))
    r = LogSketch()
    r.merge_bins(list(s.bins.items()))
    assert r.quantiles(0.5, 0.99) == s.quantiles(0.5, 0.99)
    assert r.count == s.count


# --- one bucket formula on every path -------------------------------------------------


def _reference(x: float) -> int:
    """The bucket formula as persisted sketches have always used it, spelled out."""
    return math.ceil(math.log(x) * (1.0 / math.log((1 + 0.01) / (1 - 0.01))))


def _around_boundaries() -> list[float]:
    """Values a few ulps either side of every bucket boundary in [MIN_VALUE, MAX_VALUE]
    (where a different formula, e.g. one with ``log2``, would put values elsewhere)."""
    gamma = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
    out: list[float] = []
    for k in range(MIN_BUCKET - 1, MAX_BUCKET + 1):
        x = gamma**k
        below = above = x
        for _ in range(4):
            below = math.nextafter(below, 0.0)
            above = math.nextafter(above, math.inf)
            out += (below, above)
        out.append(x)
    return [x for x in out if MIN_VALUE <= x <= MAX_VALUE]


def test_buckets_in_range_equal_bucket_of_around_every_boundary() -> None:
    xs = _around_boundaries()
    assert len(xs) > 10_000
    assert list(buckets_in_range(xs)) == [bucket_of(x) for x in xs] == list(map(_reference, xs))


@given(st.lists(st.floats(min_value=MIN_VALUE, max_value=MAX_VALUE), max_size=200))
def test_buckets_in_range_equal_bucket_of(xs: list[float]) -> None:
    assert list(buckets_in_range(xs)) == [bucket_of(x) for x in xs] == list(map(_reference, xs))


def test_bucket_limits_clamp() -> None:
    assert bucket_of(MIN_VALUE) == MIN_BUCKET == bucket_of(MIN_VALUE / 10) == bucket_of(5e-324)
    assert bucket_of(MAX_VALUE) == MAX_BUCKET == bucket_of(MAX_VALUE * 10) == bucket_of(math.inf)
    assert (MIN_BUCKET, MAX_BUCKET) == (-345, 1267)  # persisted: must never move
    assert [bucket_of(x) for x in (1.0, 1.5, 20.0, 1_000.0)] == [0, 21, 150, 346]

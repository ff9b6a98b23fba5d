"""The log-bucket sketch: quantiles within its relative accuracy, exact merges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally.analysis.sketch import RELATIVE_ACCURACY, LogSketch, bucket_of, value_of


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

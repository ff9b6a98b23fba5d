"""``fill``: properties over arbitrary gappy series, and the table of modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally.query import FILLS, fill
from llmtally.query.fill import Point

values = st.one_of(st.none(), st.integers(-(10**12), 10**12), st.floats(-1e9, 1e9))


@st.composite
def series(draw: st.DrawFn) -> list[Point]:
    vs = draw(st.lists(values, max_size=40))
    start = draw(st.integers(0, 10**9))
    step = draw(st.integers(1, 86_400))
    return [(start + i * step, v) for i, v in enumerate(vs)]


@given(series(), st.sampled_from(FILLS))
def test_known_values_and_timestamps_are_kept(points: list[Point], mode: str) -> None:
    out = fill(points, mode)  # type: ignore[arg-type]
    assert [t for t, _ in out] == [t for t, _ in points]
    for (_, v), (_, w) in zip(points, out, strict=True):
        if v is not None:
            assert w == v


@given(series(), st.sampled_from(FILLS))
def test_filling_twice_changes_nothing(points: list[Point], mode: str) -> None:
    once = fill(points, mode)  # type: ignore[arg-type]
    assert fill(once, mode) == once  # type: ignore[arg-type]


@given(series())
def test_zero_leaves_no_gap(points: list[Point]) -> None:
    assert all(v is not None for _, v in fill(points, "zero"))


@given(series())
def test_previous_repeats_the_last_value(points: list[Point]) -> None:
    out = fill(points, "previous")
    last = None
    for (_, v), (_, w) in zip(points, out, strict=True):
        last = v if v is not None else last
        assert w == last


@given(series())
def test_linear_lies_between_its_neighbours(points: list[Point]) -> None:
    out = fill(points, "linear")
    known = [i for i, (_, v) in enumerate(points) if v is not None]
    for i, (_, w) in enumerate(out):
        before = [k for k in known if k < i]
        after = [k for k in known if k > i]
        if points[i][1] is not None:
            continue
        if not before or not after:
            assert w is None  # nothing to interpolate from
            continue
        a, b = points[before[-1]][1], points[after[0]][1]
        assert a is not None and b is not None and w is not None
        assert min(a, b) - 1e-6 * (1 + abs(a) + abs(b)) <= w
        assert w <= max(a, b) + 1e-6 * (1 + abs(a) + abs(b))


@given(series())
def test_none_is_the_identity(points: list[Point]) -> None:
    assert fill(points, "none") == points


@pytest.mark.parametrize(
    ("mode", "want"),
    [
        pytest.param("none", [None, 2, None, None, 8, None], id="none"),
        pytest.param("zero", [0, 2, 0, 0, 8, 0], id="zero"),
        pytest.param("previous", [None, 2, 2, 2, 8, 8], id="previous"),
        pytest.param("linear", [None, 2, 4.0, 6.0, 8, None], id="linear"),
    ],
)
def test_modes(mode: str, want: list[object]) -> None:
    points: list[Point] = [(i * 60, v) for i, v in enumerate([None, 2, None, None, 8, None])]
    assert [v for _, v in fill(points, mode)] == want  # type: ignore[arg-type]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="spline"):
        fill([], "spline")  # type: ignore[arg-type]

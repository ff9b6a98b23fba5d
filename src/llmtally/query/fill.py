"""``fill``: what a time series shows in buckets without a value. Pure.

=============  ===========================================================================
``none``       empty buckets stay ``None`` (a gap in a chart)
``zero``       empty buckets are ``0``
``previous``   an empty bucket repeats the last value before it (leading gaps stay ``None``)
``linear``     an empty bucket between two values is interpolated along time; leading and
               trailing gaps stay ``None`` (nothing to interpolate from)
=============  ===========================================================================

Buckets with a value are never changed, and the timestamps are kept as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Literal, TypeAlias

__all__ = ["FILLS", "Fill", "Point", "Value", "fill"]

Fill: TypeAlias = Literal["none", "zero", "previous", "linear"]
FILLS: Final = ("none", "zero", "previous", "linear")

Value: TypeAlias = int | float
Point: TypeAlias = tuple[int, Value | None]
"""``(bucket_start_unix_s, value)``; ``None`` when the bucket has no value."""


def fill(points: Sequence[Point], mode: Fill) -> list[Point]:
    """``points`` (timestamps increasing) with the gaps filled as ``mode`` says.

    Raises ``ValueError`` for an unknown ``mode``."""
    if mode == "none":
        return list(points)
    if mode == "zero":
        return [(t, 0 if v is None else v) for t, v in points]
    if mode == "previous":
        out: list[Point] = []
        last: Value | None = None
        for t, v in points:
            if v is not None:
                last = v
            out.append((t, last))
        return out
    if mode == "linear":
        return _linear(points)
    raise ValueError(f"unknown fill mode {mode!r}: must be one of {', '.join(FILLS)}")


def _linear(points: Sequence[Point]) -> list[Point]:
    out = list(points)
    known = [i for i, (_, v) in enumerate(points) if v is not None]
    for a, b in pairwise(known):
        if b - a < 2:
            continue
        t0, v0 = points[a]
        t1, v1 = points[b]
        assert v0 is not None and v1 is not None
        for i in range(a + 1, b):
            t = points[i][0]
            out[i] = (t, v0 + (v1 - v0) * (t - t0) / (t1 - t0))
    return out

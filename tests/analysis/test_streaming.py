"""Streaming maths on hand-worked timelines, and the per-model aggregate."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally import ValidationError
from llmtally.analysis.sketch import RELATIVE_ACCURACY
from llmtally.analysis.streaming import (
    StreamingSnapshot,
    StreamingStats,
    StreamResult,
    StreamTimings,
)

MS = 1_000_000  # nanoseconds


def _run(start: int, chunks: list[tuple[int, int]], end: int, **kw: int) -> StreamResult:
    """Feed ``chunks`` of ``(t_ms, tokens)`` between ``start`` and ``end`` (ms)."""
    s = StreamTimings(**kw)
    s.start(start * MS)
    for t, n in chunks:
        s.token(t * MS, n)
    return s.finish(end * MS)


def test_one_token_per_chunk() -> None:
    # start 0; tokens at 100, 120, 150, 160 ms; finish 200 ms.
    r = _run(0, [(100, 1), (120, 1), (150, 1), (160, 1)], 200)
    assert r.duration_ms == 200.0
    assert r.ttft_ms == 100.0  # first token − start
    # gaps 20, 30, 10 ms; mean = (160 − 100) / (4 − 1) = 20 ms
    assert r.itl_mean_ms == 20.0
    # p95 of [10, 20, 30], lower-rank like LogSketch: rank 0.95 × (3 − 1) = 1.9, floor 1
    # → the 2nd value, 20 ms
    assert r.itl_p95_ms == 20.0
    # 3 tokens after the first in (160 − 100) ms = 0.06 s → 50 tokens/s
    assert r.tokens_per_s == 50.0
    assert (r.output_tokens, r.chunks) == (4, 4)


def test_multi_token_chunks_weigh_by_tokens() -> None:
    # start 0; chunks of 2 @ 50 ms, 4 @ 90 ms, 1 @ 110 ms; finish 120 ms.
    r = _run(0, [(50, 2), (90, 4), (110, 1)], 120)
    assert r.ttft_ms == 50.0
    # Per-token ITL: 4 tokens at 40/4 = 10 ms, 1 token at 20/1 = 20 ms.
    # Mean = (110 − 50) / (7 − 2) = 60 / 5 = 12 ms (= (4 × 10 + 20) / 5).
    assert r.itl_mean_ms == 12.0
    # p95 over 5 tokens [10, 10, 10, 10, 20]: rank 0.95 × 4 = 3.8, floor 3 → the 4th, 10 ms
    assert r.itl_p95_ms == 10.0
    # 5 tokens after the first chunk in 0.06 s → 83.33 tokens/s
    assert r.tokens_per_s == pytest.approx(5 / 0.06)
    assert (r.output_tokens, r.chunks) == (7, 3)


def test_itl_p95_counts_every_token() -> None:
    # start 0; chunks of 1 @ 50, 1 @ 60, 1 @ 70, 4 @ 150 ms.
    r = _run(0, [(50, 1), (60, 1), (70, 1), (150, 4)], 150)
    # Per token: 10, 10, then 80/4 = 20 four times → [10, 10, 20, 20, 20, 20];
    # p95: rank 0.95 × 5 = 4.75, floor 4 → 20 ms. (One sample per chunk, [10, 10, 20],
    # would give rank 1.9, floor 1 → 10 ms and hide the slow chunk.)
    assert r.itl_p95_ms == 20.0
    # mean = (150 − 50) / (7 − 1) = 16.67 ms; 6 tokens / 0.1 s = 60 tokens/s
    assert r.itl_mean_ms == pytest.approx(100 / 6)
    assert r.tokens_per_s == 60.0


def test_explicit_first_token_sets_ttft_only() -> None:
    # start 0; first token seen at 30 ms (tokens counted from later chunks); chunks at
    # 40 and 50 ms; finish 60 ms.
    s = StreamTimings()
    s.start(0)
    s.first_token(30 * MS)
    s.token(40 * MS)
    s.first_token(45 * MS)  # ignored: the first token is known
    s.token(50 * MS)
    r = s.finish(60 * MS)
    assert r.ttft_ms == 30.0
    # ITL is between token() calls only: one gap of 10 ms; 1 token / 0.01 s = 100/s.
    assert (r.itl_mean_ms, r.itl_p95_ms, r.tokens_per_s) == (10.0, 10.0, 100.0)
    assert r.output_tokens == 2


@pytest.mark.parametrize(
    ("chunks", "ttft", "tokens"),
    [
        pytest.param([], None, 0, id="no-tokens"),
        pytest.param([(70, 5)], 70.0, 5, id="one-chunk"),
    ],
)
def test_itl_and_rate_undefined_without_a_second_chunk(
    chunks: list[tuple[int, int]], ttft: float | None, tokens: int
) -> None:
    r = _run(0, chunks, 80)
    assert (r.ttft_ms, r.output_tokens, r.duration_ms) == (ttft, tokens, 80.0)
    assert (r.itl_mean_ms, r.itl_p95_ms, r.tokens_per_s) == (None, None, None)


def test_chunks_at_one_instant_have_zero_itl_and_no_rate() -> None:
    r = _run(0, [(10, 1), (10, 1)], 10)
    assert (r.itl_mean_ms, r.itl_p95_ms, r.tokens_per_s) == (0.0, 0.0, None)


def test_nanosecond_precision() -> None:
    s = StreamTimings()
    s.start(1_000)
    s.token(1_500)
    s.token(2_250)
    r = s.finish(3_000)
    assert (r.ttft_ms, r.itl_mean_ms, r.duration_ms) == (0.0005, 0.00075, 0.002)


def test_gaps_overflow_into_a_sketch() -> None:
    # 1 + 10 chunks with gaps 1..10 ms, only 4 kept exactly: the rest go to a sketch.
    chunks, t = [(0, 1)], 0
    for gap in range(1, 11):
        t += gap
        chunks.append((t, 1))
    r = _run(0, chunks, t, max_samples=4)
    assert r.itl_mean_ms == 5.5  # (55 − 0) / 10: exact whatever the storage
    # p95 of 1..10: rank 0.95 × 9 = 8.55 → the 9th value, 9 ms (±1%)
    assert r.itl_p95_ms is not None
    assert abs(r.itl_p95_ms - 9.0) <= 9.0 * RELATIVE_ACCURACY
    assert r.output_tokens == 11


_chunk_lists = st.lists(
    st.tuples(st.integers(0, 5 * MS), st.integers(1, 4)), min_size=2, max_size=30
)


@settings(max_examples=100)
@given(_chunk_lists, st.sampled_from([0.5, 0.95, 0.99]))
def test_weighted_quantile_equals_one_value_per_token(
    chunks: list[tuple[int, int]], q: float
) -> None:
    s = StreamTimings()
    s.start(0)
    t = 0
    per_token: list[float] = []
    for i, (gap, n) in enumerate(chunks):
        t += gap
        s.token(t, n)
        if i:
            per_token += [gap / n / MS] * n
    r = s.finish(t)
    per_token.sort()
    assert s.itl_quantile(q) == per_token[math.floor(q * (len(per_token) - 1))]
    assert r.itl_mean_ms == pytest.approx(sum(per_token) / len(per_token))


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([("token", 1)], id="token-before-start"),
        pytest.param([("first_token", 1)], id="first-token-before-start"),
        pytest.param([("finish", 1)], id="finish-before-start"),
        pytest.param([("start", 5), ("start", 6)], id="start-twice"),
        pytest.param([("start", 5), ("token", 4)], id="token-before-its-start"),
        pytest.param([("start", 0), ("token", 5), ("token", 4)], id="time-goes-back"),
        pytest.param([("start", 0), ("finish", 5), ("token", 6)], id="token-after-finish"),
        pytest.param([("start", 0), ("finish", 5), ("finish", 6)], id="finish-twice"),
    ],
)
def test_out_of_order_calls_raise(steps: list[tuple[str, int]]) -> None:
    s = StreamTimings()
    with pytest.raises(ValidationError):
        for name, t in steps:
            getattr(s, name)(t)


def test_bad_arguments() -> None:
    s = StreamTimings()
    s.start(0)
    with pytest.raises(ValidationError, match="at least 1 token"):
        s.token(1, 0)
    with pytest.raises(ValueError, match="max_samples"):
        StreamTimings(max_samples=0)


# --- across streams ---------------------------------------------------------------------------


def test_active_gauge_outcomes_and_completion_rate() -> None:
    st_ = StreamingStats()
    for _ in range(4):
        st_.started("m")
    st_.started("n")
    assert st_.active_streams == 5
    st_.finished("m", _run(0, [(100, 1), (120, 1)], 130))
    st_.finished("m", outcome="failed")
    st_.finished("m", outcome="cancelled")
    snap = st_.snapshot()
    assert (snap.active_streams, snap.started, snap.completed) == (2, 5, 1)
    assert (snap.failed, snap.cancelled) == (1, 1)
    assert snap.completion_rate == pytest.approx(1 / 3)
    m = snap.by_model["m"]
    assert (m.active_streams, m.started, m.completed, m.output_tokens) == (1, 4, 1, 2)
    assert snap.by_model["n"].completion_rate is None  # nothing finished yet
    assert m.ttft_ms.count == 1
    assert m.ttft_ms.p50 == pytest.approx(100.0, rel=RELATIVE_ACCURACY)
    assert m.itl_ms.p50 == pytest.approx(20.0, rel=RELATIVE_ACCURACY)
    assert m.tokens_per_s.p50 == pytest.approx(50.0, rel=RELATIVE_ACCURACY)
    assert m.duration_ms.p50 == pytest.approx(130.0, rel=RELATIVE_ACCURACY)


def test_gauge_never_goes_negative() -> None:
    s = StreamingStats()
    s.finished("m")  # an end whose start was not seen
    s.started("m")
    assert s.active_streams == 1
    assert s.snapshot().by_model["m"].active_streams == 1


def test_percentiles_across_streams() -> None:
    s = StreamingStats()
    for ttft in range(1, 101):  # 1..100 ms
        s.observe("m", ttft_ms=float(ttft))
    q = s.snapshot().by_model["m"].ttft_ms
    # lower-rank: p50 → rank 49.5 → 50; p95 → 94.05 → 95; p99 → 98.01 → 99 (±1%)
    assert q.count == 100
    for got, want in ((q.p50, 50), (q.p95, 95), (q.p99, 99)):
        assert got == pytest.approx(want, rel=RELATIVE_ACCURACY)


def test_models_past_the_limit_go_to_other() -> None:
    s = StreamingStats(max_models=2)
    for model in ("a", "b", "c", "d"):
        s.started(model)
        s.finished(model, _run(0, [(10, 1)], 20))
    snap = s.snapshot()
    assert set(snap.by_model) == {"a", "b", "(other)"}
    other = snap.by_model["(other)"]
    assert (other.started, other.completed, other.active_streams) == (2, 2, 0)
    assert snap.completed == 4


def test_observe_skips_missing_values_and_checks_outcome() -> None:
    s = StreamingStats()
    s.observe("m", outcome="failed", ttft_ms=None, output_tokens=3)
    m = s.snapshot().by_model["m"]
    assert (m.failed, m.output_tokens, m.ttft_ms.count, m.ttft_ms.p50) == (1, 3, 0, None)
    with pytest.raises(ValidationError, match="outcome"):
        s.observe("m", outcome="exploded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_models"):
        StreamingStats(max_models=0)


def test_snapshot_round_trips_as_json() -> None:
    s = StreamingStats()
    s.started("m")
    s.finished("m", _run(0, [(5, 1), (9, 2)], 12))
    snap = s.snapshot()
    assert msgspec.json.decode(msgspec.json.encode(snap), type=StreamingSnapshot) == snap
    assert StreamingSnapshot().by_model == {}

"""Deltas, the running aggregate and its snapshot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally._ids import new_event_id
from llmtally.analysis.sketch import LogSketch
from llmtally.analysis.stats import (
    GROUPED_FROM,
    OTHER,
    Aggregate,
    StatsDelta,
    decode_series,
    encode_series,
    merge_delta,
)
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, RouterStarted


def _ev(
    model: str, *, agent: str | None = None, failed: bool = False, **kw: object
) -> AnalyticsEvent:
    cls = LlmRequestFailed if failed else LlmRequestCompleted
    extra = {"error_code": "boom"} if failed else {}
    payload = cls(model=model, provider="openai", **extra, **kw)  # type: ignore[arg-type]
    return AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1, payload=payload, agent_id=agent)


def test_delta_counts_requests_failures_tokens_cost_and_unpriced() -> None:
    d = StatsDelta().add_all(
        [
            _ev("a", input_tokens=10, output_tokens=2, cost_nanos=100, duration_ms=5.0),
            _ev("a", failed=True, input_tokens=1, cost_nanos=1),
            _ev("x", input_tokens=7, output_tokens=3, pricing_status="unpriced", ttft_ms=1.0),
            AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1, payload=RouterStarted()),
        ]
    )
    agg = Aggregate()
    agg.apply(d)
    s = agg.snapshot()
    assert s.total_requests == 3
    assert s.failed_requests == 1
    assert s.total_input_tokens == 18
    assert s.total_output_tokens == 5
    assert s.total_cost_nanos == 101
    assert s.unpriced_requests == 1
    assert s.unpriced_input_tokens == 7
    assert s.unpriced_output_tokens == 3
    assert s.by_model["a"].requests == 2
    assert s.by_model["a"].failed_requests == 1
    assert s.by_model["a"].duration_ms.count == 1
    assert s.by_model["x"].ttft_ms.count == 1
    assert s.by_provider["openai"].requests == 3


def test_views_are_bounded_and_overflow_is_counted_as_other() -> None:
    agg = Aggregate(max_keys=3)
    agg.apply(StatsDelta().add_all([_ev("m", agent=f"agent-{i}") for i in range(10)]))
    s = agg.snapshot()
    assert len(s.by_agent) == 4  # three real keys, then everything else under OTHER
    assert s.by_agent[OTHER].requests == 7
    assert sum(m.requests for m in s.by_agent.values()) == 10


def test_series_encoding_round_trips() -> None:
    d = StatsDelta().add_all(
        [_ev("a", agent="x", duration_ms=float(i), input_tokens=i) for i in range(1, 50)]
    )
    back = decode_series(encode_series(d))
    assert back.series.keys() == d.series.keys()
    for key, t in d.series.items():
        assert back.series[key].counters() == t.counters()
        assert back.series[key].duration.bins == t.duration.bins


def test_merge_delta_adds() -> None:
    a = StatsDelta().add_all([_ev("a", input_tokens=1)])
    b = StatsDelta().add_all([_ev("a", input_tokens=2), _ev("b")])
    merge_delta(a, b)
    assert a.series[("a", "openai", "", "")].input_tokens == 3
    assert a.series[("a", "openai", "", "")].requests == 2
    assert ("b", "openai", "", "") in a.series


_latency = st.one_of(
    st.none(),
    st.floats(min_value=0.0, max_value=1e12, allow_nan=False),  # beyond the sketch's range too
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([None, "agent-1", "agent-2"]),
            st.booleans(),
            st.integers(min_value=0, max_value=10**6),
            st.integers(min_value=0, max_value=10**12),
            st.booleans(),
            _latency,
            _latency,
        ),
        max_size=80,
    )
)
def test_a_batch_adds_what_its_events_add_one_by_one(
    specs: list[tuple[str, str | None, bool, int, int, bool, float | None, float | None]],
) -> None:
    small = [
        _ev(
            model,
            agent=agent,
            failed=failed,
            input_tokens=tokens,
            output_tokens=tokens // 2,
            cost_nanos=cost,
            pricing_status="unpriced" if unpriced else "priced",
            duration_ms=duration,
            ttft_ms=ttft,
        )
        for model, agent, failed, tokens, cost, unpriced, duration, ttft in specs
    ]
    # Folded event by event, and (repeated past GROUPED_FROM) grouped by series first.
    repeat = GROUPED_FROM // max(1, len(small)) + 1
    for events, times in ((small, 1), (small * repeat, repeat)):
        batch = StatsDelta().add_all(events)
        # The reference: each event's counters summed, its latencies added one at a time.
        want: dict[tuple[str, str, str, str], tuple[list[int], LogSketch, LogSketch]] = {}
        for e, (_, _, failed, tokens, cost, unpriced, duration, ttft) in zip(
            events, specs * times, strict=True
        ):
            key = (e.payload.model, "openai", e.agent_id or "", "")  # type: ignore[union-attr]
            c, d, t = want.setdefault(key, ([0] * 10, LogSketch(), LogSketch()))
            one = [1, int(failed), tokens, tokens // 2, 0, 0, cost]
            one += [1, tokens, tokens // 2] if unpriced else [0, 0, 0]
            c[:] = [x + y for x, y in zip(c, one, strict=True)]
            if duration is not None:
                d.add(duration)
            if ttft is not None:
                t.add(ttft)
        assert list(batch.series) == list(want)
        for key, tally in batch.series.items():
            counters, duration_ref, ttft_ref = want[key]
            assert list(tally.counters()) == counters
            for got, ref in ((tally.duration, duration_ref), (tally.ttft, ttft_ref)):
                assert (got.bins, got.count, got.min, got.max) == (
                    ref.bins,
                    ref.count,
                    ref.min,
                    ref.max,
                )
                # Grouped, a series' values are summed with ``math.fsum``: last bits.
                assert got.sum == pytest.approx(ref.sum, rel=1e-12)

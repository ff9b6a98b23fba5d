"""Deltas, the running aggregate and its snapshot."""

from __future__ import annotations

from llmtally._ids import new_event_id
from llmtally.analysis.stats import (
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

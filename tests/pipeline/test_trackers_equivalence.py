"""``Trackers.observe`` (per batch, from the ``StatsDelta``) equals the trackers fed one
event at a time: streaming snapshots, SLO windows, error patterns and budget spend."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.analysis.budgets import Budget, BudgetBook
from llmtally.analysis.errors import ErrorPatterns
from llmtally.analysis.slo import MINUTE_MS, SloTracker
from llmtally.analysis.stats import StatsDelta
from llmtally.analysis.streaming import StreamingStats
from llmtally.analysis.trackers import CANCELLED, Trackers

T0 = 1_760_000_000_000 // MINUTE_MS * MINUTE_MS
BUDGETS = [
    Budget(id="all", limit_micros=10**9),
    Budget(id="a1", scope="agent_id", scope_value="a1", limit_micros=10**9),
    Budget(id="m0", scope="model", scope_value="m0", limit_micros=10**9),
]

# Zero (a falsy value that is present), -0.0, and values beyond the sketch's range too.
_ms = st.none() | st.floats(min_value=0.5, max_value=5_000.0) | st.sampled_from([0.0, -0.0, 2e11])


@st.composite
def _events(draw: st.DrawFn) -> tuple[AnalyticsEvent, bool]:
    """An event and whether ``track_stream`` marks it as a stream."""
    ts = T0 + draw(st.integers(0, 3 * MINUTE_MS))
    fields = {
        "model": draw(st.sampled_from(["m0", "m1", "m2"])),
        "provider": "p",
        "output_tokens": draw(st.integers(0, 50)),
        "cost_nanos": draw(st.integers(0, 10_000)),
        "duration_ms": draw(_ms),
        "ttft_ms": draw(_ms),
        "itl_mean_ms": draw(_ms),
        "output_tokens_per_s": draw(_ms),
    }
    failed = draw(st.sampled_from([None, "rate_limited", CANCELLED]))
    payload: LlmRequestCompleted | LlmRequestFailed
    if failed is None:
        payload = LlmRequestCompleted(**fields)  # type: ignore[arg-type]
    else:
        message = draw(st.sampled_from(["slow down 7s", "slow down 9s", "req_ab12cd gone"]))
        payload = LlmRequestFailed(error_code=failed, error_message=message, **fields)  # type: ignore[arg-type]
    agent = draw(st.sampled_from([None, "a1", "a2"]))
    marked = draw(st.booleans())
    event_id = f"e{draw(st.integers(0, 2**40))}"  # a collision only marks both or neither
    event = AnalyticsEvent(event_id=event_id, timestamp_ms=ts, payload=payload, agent_id=agent)
    return event, marked


def _one_by_one(
    events: list[AnalyticsEvent], streams: set[str]
) -> tuple[StreamingStats, SloTracker, ErrorPatterns, BudgetBook]:
    streaming, slo, errors = StreamingStats(), SloTracker(), ErrorPatterns()
    budgets = BudgetBook(BUDGETS, now_ms=T0)
    for e in events:
        p = e.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        failed = isinstance(p, LlmRequestFailed)
        slo.observe(e.timestamp_ms, ok=not failed)
        if isinstance(p, LlmRequestFailed):
            errors.observe(
                e.timestamp_ms,
                p.error_code,
                p.error_message,
                model=p.model,
                status_code=p.status_code,
                endpoint=p.endpoint,
            )
        if (
            p.ttft_ms is not None
            or p.itl_mean_ms is not None
            or p.output_tokens_per_s is not None
            or e.event_id in streams
        ):
            outcome = "completed"
            if isinstance(p, LlmRequestFailed):
                outcome = "cancelled" if p.error_code == CANCELLED else "failed"
            streaming.observe(
                p.model,
                outcome=outcome,  # type: ignore[arg-type]
                ttft_ms=p.ttft_ms,
                itl_ms=p.itl_mean_ms,
                tokens_per_s=p.output_tokens_per_s,
                duration_ms=p.duration_ms,
                output_tokens=p.output_tokens,
            )
    for e in sorted(events, key=lambda e: e.timestamp_ms):
        p = e.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        budgets.spend_nanos(e.timestamp_ms, p.cost_nanos, agent_id=e.agent_id, model=p.model)
    return streaming, slo, errors, budgets


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_events(), min_size=1, max_size=60),
    st.integers(1, 60),
    st.booleans(),
)
def test_batches_equal_one_event_at_a_time(
    tagged: list[tuple[AnalyticsEvent, bool]], size: int, one_minute: bool
) -> None:
    if one_minute:  # the fast path: every batch within one minute
        tagged = [
            (
                AnalyticsEvent(
                    event_id=e.event_id,
                    timestamp_ms=T0 + e.timestamp_ms % 1000,
                    payload=e.payload,
                    agent_id=e.agent_id,
                ),
                marked,
            )
            for e, marked in tagged
        ]
    events = [e for e, _ in tagged]
    streams = {e.event_id for e, marked in tagged if marked}
    trackers = Trackers(BUDGETS, now_ms=T0)
    for i in range(0, len(events), size):
        batch = events[i : i + size]
        trackers.observe(batch, StatsDelta().add_all(batch), streams)
    streaming, slo, errors, budgets = _one_by_one(events, streams)
    assert trackers.streaming.snapshot() == streaming.snapshot()
    now = T0 + 3 * MINUTE_MS
    for window in (MINUTE_MS, 2 * MINUTE_MS, 4 * MINUTE_MS):
        assert trackers.slo.window(now, window) == slo.window(now, window)
    assert trackers.errors.snapshot(100) == errors.snapshot(100)
    spent = {s.budget_id: s.spent_nanos for s in budgets.status(now)}
    assert {s.budget_id: s.spent_nanos for s in trackers.budgets.status(now)} == spent

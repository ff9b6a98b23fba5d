"""The trackers beside the stats: errors, SLO and streaming, fed by the aggregator.

Pure parts (``Trackers.observe``, bulk sketch adds, rollups, message normalization) are
tested without an event loop; the store-level tests check what the aggregator feeds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally._ids import new_event_id
from llmtally.analysis import errors
from llmtally.analysis.errors import normalize_message
from llmtally.analysis.sketch import RELATIVE_ACCURACY, LogSketch
from llmtally.analysis.slo import MINUTE_MS
from llmtally.analysis.stats import OTHER, Aggregate, StatsDelta
from llmtally.analysis.trackers import Trackers

T0 = 1_760_000_000_000  # a minute boundary: 1_760_000_000_000 % 60_000 == 20_000
M0 = T0 // MINUTE_MS * MINUTE_MS


def _event(
    ts: int,
    *,
    model: str = "gpt-4o",
    failed: str | None = None,
    message: str | None = None,
    agent_id: str | None = None,
    **fields: object,
) -> AnalyticsEvent:
    payload: LlmRequestCompleted | LlmRequestFailed
    if failed is None:
        payload = LlmRequestCompleted(model=model, provider="openai", **fields)  # type: ignore[arg-type]
    else:
        payload = LlmRequestFailed(
            model=model,
            provider="openai",
            error_code=failed,
            error_message=message,
            **fields,  # type: ignore[arg-type]
        )
    return AnalyticsEvent(
        event_id=new_event_id(ts), timestamp_ms=ts, payload=payload, agent_id=agent_id
    )


def _observe(t: Trackers, events: list[AnalyticsEvent], streams: set[str] | None = None) -> None:
    t.observe(events, StatsDelta().add_all(events), streams)


# --- pure: Trackers.observe ---------------------------------------------------------------


def test_errors_are_fingerprinted_by_code_endpoint_and_normalized_message() -> None:
    t = Trackers()
    _observe(
        t,
        [
            _event(T0, failed="rate_limited", message="req_8fj2k1: retry in 20s", status_code=429),
            _event(T0 + 1, failed="rate_limited", message="req_a91bb0: retry in 7s"),
            _event(
                T0 + 2, failed="rate_limited", message="req_a91bb0: retry in 7s", endpoint="/v1"
            ),
            _event(T0 + 3),
        ],
    )
    snap = t.errors.snapshot()
    assert (snap.total_errors, snap.distinct_patterns) == (3, 2)
    top = snap.patterns[0]
    assert (top.count, top.error_type, top.endpoint) == (2, "rate_limited", None)
    assert top.message == "<id>: retry in <num>s"
    assert top.status_codes == {429: 1}
    assert (top.first_seen_ms, top.last_seen_ms) == (T0, T0 + 1)
    assert snap.patterns[1].endpoint == "/v1"


def test_slo_counts_requests_and_errors_per_minute() -> None:
    t = Trackers()
    # One batch spanning three minutes (and out of order): counted minute by minute.
    _observe(
        t,
        [
            _event(M0 + 61_000, failed="x"),
            _event(M0 + 1_000),
            _event(M0 + 2_000, failed="x"),
            _event(M0 + 125_000),
        ],
    )
    assert t.slo.window(M0 + 125_000, MINUTE_MS) == (1, 0)
    assert t.slo.window(M0 + 125_000, 2 * MINUTE_MS) == (2, 1)
    assert t.slo.window(M0 + 125_000, 3 * MINUTE_MS) == (4, 2)
    # One batch within one minute: one add.
    t2 = Trackers()
    _observe(t2, [_event(M0 + i * 100, failed="x" if i % 4 == 0 else None) for i in range(100)])
    assert t2.slo.window(M0, MINUTE_MS) == (100, 25)


def test_lifecycle_events_are_ignored() -> None:
    t = Trackers()
    assert t.observe([], StatsDelta()) == []
    assert t.slo.requests == 0


def test_streams_are_requests_with_streaming_detail_or_marked() -> None:
    t = Trackers()
    plain = _event(T0, duration_ms=100.0)  # no streaming detail: not a stream
    with_ttft = _event(T0, ttft_ms=50.0, duration_ms=400.0, output_tokens=10)
    with_itl = _event(T0, itl_mean_ms=20.0, output_tokens_per_s=50.0, output_tokens=5)
    failed_early = _event(T0, failed="ConnectError")  # marked by track_stream
    cancelled = _event(T0, failed="cancelled", ttft_ms=30.0)
    other_model = _event(T0, model="claude-3-5-haiku", ttft_ms=10.0)
    _observe(
        t,
        [plain, with_ttft, with_itl, failed_early, cancelled, other_model],
        streams={failed_early.event_id},
    )
    snap = t.streaming.snapshot()
    m = snap.by_model["gpt-4o"]
    assert (m.completed, m.failed, m.cancelled) == (2, 1, 1)
    assert m.completion_rate == pytest.approx(0.5)
    assert m.output_tokens == 15
    assert m.ttft_ms.count == 2  # merged from the stats delta: 50 and 30 ms
    assert m.ttft_ms.p50 == pytest.approx(30.0, rel=RELATIVE_ACCURACY)  # lower rank of 2
    assert m.itl_ms.count == 1 and m.itl_ms.p50 == pytest.approx(20.0, rel=RELATIVE_ACCURACY)
    assert m.tokens_per_s.p50 == pytest.approx(50.0, rel=RELATIVE_ACCURACY)
    assert m.duration_ms.count == 1
    assert snap.completed == 3 and snap.by_model["claude-3-5-haiku"].completed == 1
    assert snap.active_streams == 0


# --- pure: helpers the trackers rely on -------------------------------------------------


@given(st.lists(st.floats(min_value=0.0, max_value=1e12, allow_nan=False), max_size=50))
def test_add_many_equals_adding_one_by_one(values: list[float]) -> None:
    one, many = LogSketch(), LogSketch()
    for v in values:
        one.add(v)
    many.add_many(values)
    assert many.bins == one.bins
    assert (many.count, many.min, many.max) == (one.count, one.min, one.max)
    assert math.isclose(many.sum, one.sum, rel_tol=1e-9, abs_tol=1e-6)


@given(
    st.text(
        alphabet=st.sampled_from(list("ab0129xf-_ '\"`<>:\t\n.Z\u00a0\u2003")) | st.characters(),
        max_size=80,
    )
)
def test_normalization_shortcuts_change_nothing(message: str) -> None:
    # The reference: every pass, unconditionally (before passes learned to skip).
    m = errors._QUOTED.sub("<str>", message)
    m = errors._UUID.sub("<uuid>", m)
    m = errors._KNOWN_ID.sub("<id>", m)
    m = errors._GENERIC_ID.sub("<id>", m)
    m = errors._HEX.sub("<hex>", m)
    m = errors._NUMBER.sub("<num>", m)
    assert normalize_message(message) == re.sub(r"\s+", " ", m).strip()


def test_rollup_bounds_the_agent_label() -> None:
    agg = Aggregate()
    events = [
        _event(T0, agent_id=f"agent-{i % 5}", input_tokens=1) for i in range(15) if i % 5 != 4
    ]
    events += [_event(T0, agent_id="agent-0")] * 3 + [_event(T0)]  # agent-0 leads; one without
    agg.apply(StatsDelta().add_all(events))
    assert set(agg.rollup()) == {("gpt-4o", "openai", "")}
    two = agg.rollup(agents=2)
    assert set(two) == {
        ("gpt-4o", "openai", "agent-0"),
        ("gpt-4o", "openai", "agent-1"),  # ties broken by name
        ("gpt-4o", "openai", OTHER),
        ("gpt-4o", "openai", ""),
    }
    assert sum(t.requests for t in two.values()) == len(events)
    assert agg.rollup(agents=2) is two  # cached until the next apply


# --- through the store ------------------------------------------------------------------


async def test_the_aggregator_feeds_errors_slo_and_streaming(db_path: Path) -> None:
    now = [T0]
    async with EventStore(db_path, clock=lambda: now[0]) as store:
        for i in range(20):
            await store.record_llm_completed("gpt-4o", 10, 5, ttft_ms=40.0 + i, duration_ms=900.0)
        await store.record_llm_failed(
            "gpt-4o", error_code="rate_limited", error_message="429 req_x91ka2 slow down"
        )
        await store.record_llm_failed(
            "gpt-4o", error_code="rate_limited", error_message="429 req_p0q7z1 slow down"
        )
        await store.flush()
        patterns = store.error_patterns()
        assert patterns.total_errors == 2 and patterns.patterns[0].count == 2
        slo = store.slo_status(target=0.95, window_ms=5 * MINUTE_MS)
        assert (slo.requests, slo.errors) == (22, 2)
        assert slo.error_rate == pytest.approx(2 / 22)
        assert slo.violated is True and slo.burn_rate == pytest.approx((2 / 22) / 0.05)
        assert slo.fast_burn is False  # 1 h and 5 min both ≥ 14.4 needed; 1.8 here
        streaming = store.streaming_stats()
        assert streaming.completed == 20 and streaming.by_model["gpt-4o"].ttft_ms.count == 20
        # The SLO windows move with the store's clock.
        now[0] = T0 + 10 * MINUTE_MS
        assert store.slo_status(window_ms=5 * MINUTE_MS).requests == 0
        with pytest.raises(ValueError, match="target"):
            store.slo_status(target=1.5)


async def test_a_tracker_failure_does_not_stop_the_pipeline(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> list[object]:
        raise RuntimeError("a bug in a tracker")

    monkeypatch.setattr(Trackers, "observe", broken)
    async with EventStore(db_path) as store:
        await store.record_llm_completed("gpt-4o", 10, 5)
        await store.flush()
        assert store.stats().total_requests == 1
        assert len(await store.snapshot_events()) == 1
    assert "could not count a batch" in caplog.text

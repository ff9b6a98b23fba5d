"""``stats_delta`` counts a batch as ``StatsDelta.add_all`` does, event by event."""

from __future__ import annotations

import math

import pytest

from llmtally.analysis.sketch import LogSketch
from llmtally.analysis.stats import StatsDelta, Tally
from llmtally.events import AnalyticsEvent, RouterStarted
from llmtally.server.batch_stats import stats_delta

from ..storage.factory import T0, random_requests, request


def _same_sketch(got: LogSketch, want: LogSketch, values: list[float]) -> None:
    assert list(got.bins.items()) == list(want.bins.items())
    assert (got.count, got.min, got.max) == (want.count, want.min, want.max)
    # ``add_many`` sums a batch in range with ``fsum`` (exactly rounded), ``add`` one
    # value at a time: the last bits may differ.
    assert got.sum == pytest.approx(math.fsum(values), rel=1e-12)
    assert got.sum == pytest.approx(want.sum, rel=1e-12)


def _same_tally(got: Tally, want: Tally, events: list[AnalyticsEvent]) -> None:
    assert got.counters() == want.counters()
    for metric in ("duration_ms", "ttft_ms"):
        values = [v for e in events if (v := getattr(e.payload, metric)) is not None]
        sketch = "duration" if metric == "duration_ms" else "ttft"
        _same_sketch(getattr(got, sketch), getattr(want, sketch), values)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 37, 2_000])
def test_equals_add_all_series_by_series(seed: int, n: int) -> None:
    events = random_requests(n, seed=seed, start_ms=T0, span_ms=3_600_000)
    got, want = stats_delta(events), StatsDelta().add_all(events)
    assert list(got.series) == list(want.series)  # same series, first-seen order
    for key, tally in got.series.items():
        members = [
            e
            for e in events
            if (e.payload.model, e.payload.provider, e.agent_id or "", e.payload.provider_id or "")  # type: ignore[union-attr]
            == key
        ]
        _same_tally(tally, want.series[key], members)


def test_other_event_types_and_out_of_range_latencies() -> None:
    events = [
        AnalyticsEvent(event_id="e0", timestamp_ms=T0, payload=RouterStarted(port=1)),
        request(T0, duration_ms=0.0, ttft_ms=None, agent_id=None, provider_id=None),
        request(T0, duration_ms=1e12, ttft_ms=5.0, agent_id=None, provider_id=None, failed=True),
        request(T0, duration_ms=None, ttft_ms=None, unpriced=True, agent_id=None, provider_id=None),
    ]
    got, want = stats_delta(events), StatsDelta().add_all(events)
    assert list(got.series) == list(want.series) == [("gpt-4o-mini", "openai", "", "")]
    _same_tally(
        got.series[("gpt-4o-mini", "openai", "", "")],
        want.series[("gpt-4o-mini", "openai", "", "")],
        events[1:],
    )
    t = got.series[("gpt-4o-mini", "openai", "", "")]
    assert (t.requests, t.failed_requests, t.unpriced_requests) == (3, 1, 1)

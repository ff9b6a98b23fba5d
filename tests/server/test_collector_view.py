"""``CollectorView``: batches observed are folded in together, and readers see them all."""

from __future__ import annotations

import pytest

from llmtally.analysis.stats import StatsDelta
from llmtally.events import AnalyticsEvent
from llmtally.server.observability import CollectorView

from ..storage.factory import T0, random_requests

NOW = T0 + 60_000


def _view(fold_events: int) -> CollectorView:
    return CollectorView(clock=lambda: NOW, fold_events=fold_events)


def _fed(view: CollectorView, events: list[AnalyticsEvent], size: int) -> CollectorView:
    for i in range(0, len(events), size):
        view.observe(events[i : i + size])
    return view


def test_readers_see_every_event_observed_before_them() -> None:
    events = random_requests(7, seed=41, start_ms=T0, span_ms=30_000)
    view = _fed(_view(fold_events=1_000), events, 3)  # none folded yet
    expected = StatsDelta().add_all(events)
    assert view.stats().total_requests == 7
    assert view.stats().total_cost_nanos == sum(t.cost_nanos for t in expected.series.values())
    view.observe(events[:1])
    assert view.observed_state()[0].snapshot().total_requests == 8


@pytest.mark.parametrize("fold_events", [1, 50, 10_000])
def test_folding_in_groups_counts_what_one_batch_at_a_time_counts(fold_events: int) -> None:
    events = random_requests(400, seed=42, start_ms=T0, span_ms=40_000)
    together = _fed(_view(fold_events), events, 20)
    alone = _fed(_view(1), events, 20)
    assert together.stats() == alone.stats()
    assert together.error_patterns(50) == alone.error_patterns(50)
    assert together.slo_status("0.99") == alone.slo_status("0.99")
    assert together.streaming_stats() == alone.streaming_stats()


def test_fold_events_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fold_events"):
        CollectorView(fold_events=0)

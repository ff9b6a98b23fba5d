"""``stats_delta``: the ``StatsDelta`` of a batch of events, built series by series.

``CollectorView`` folds thousands of ingested events at a time. ``StatsDelta.add`` does
a dozen attribute updates and two sketch inserts per event in Python; here the events
are first grouped by series (one dict look-up each), then each series' counters are
summed by C-level ``sum(map(attrgetter(...)))`` and its latencies bucketed by
``LogSketch.add_many`` (one pass in C). The result equals ``StatsDelta().add_all``'s:
the same series in the same (first-seen) order, the same counters and sketch bins,
counts, minima and maxima. Only a sketch's float ``sum`` may differ in its last bits:
``add_many`` takes the ``math.fsum`` of a series' values (exactly rounded) where ``add``
adds them one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Final

from ..analysis.stats import SeriesKey, StatsDelta, Tally
from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed

__all__ = ["stats_delta"]

_Request = LlmRequestCompleted | LlmRequestFailed

_input: Final = attrgetter("input_tokens")
_output: Final = attrgetter("output_tokens")
_cached: Final = attrgetter("cached_input_tokens")
_cache_write: Final = attrgetter("cache_write_input_tokens")
_cost: Final = attrgetter("cost_nanos")
_status: Final = attrgetter("pricing_status")
_duration: Final = attrgetter("duration_ms")
_ttft: Final = attrgetter("ttft_ms")


def _group(events: Sequence[AnalyticsEvent]) -> dict[SeriesKey, list[_Request]]:
    """The request payloads of ``events`` by series, in first-seen order; other event
    types are left out (as ``StatsDelta.add`` ignores them)."""
    groups: dict[SeriesKey, list[_Request]] = {}
    get = groups.get
    completed, failed = LlmRequestCompleted, LlmRequestFailed
    for e in events:
        p = e.payload
        if type(p) is not completed and type(p) is not failed:
            continue
        key = (p.model, p.provider, e.agent_id or "", p.provider_id or "")
        members = get(key)
        if members is None:
            groups[key] = [p]
        else:
            members.append(p)
    return groups


def _tally(payloads: list[_Request]) -> Tally:
    t = Tally()
    t.requests = len(payloads)
    t.failed_requests = list(map(type, payloads)).count(LlmRequestFailed)
    t.input_tokens = sum(map(_input, payloads))
    t.output_tokens = sum(map(_output, payloads))
    t.cached_input_tokens = sum(map(_cached, payloads))
    t.cache_write_input_tokens = sum(map(_cache_write, payloads))
    t.cost_nanos = sum(map(_cost, payloads))
    if "unpriced" in list(map(_status, payloads)):
        unpriced = [p for p in payloads if p.pricing_status == "unpriced"]
        t.unpriced_requests = len(unpriced)
        t.unpriced_input_tokens = sum(map(_input, unpriced))
        t.unpriced_output_tokens = sum(map(_output, unpriced))
    durations = list(map(_duration, payloads))
    if None in durations:
        durations = [d for d in durations if d is not None]
    t.duration.add_many(durations)
    ttfts = list(map(_ttft, payloads))
    if None in ttfts:
        ttfts = [d for d in ttfts if d is not None]
    t.ttft.add_many(ttfts)
    return t


def stats_delta(events: Sequence[AnalyticsEvent]) -> StatsDelta:
    """What ``events`` add, per series: ``StatsDelta().add_all(events)``, up to the last
    bits of the sketches' float sums (see the module docstring)."""
    delta = StatsDelta()
    series = delta.series
    for key, payloads in _group(events).items():
        series[key] = _tally(payloads)
    return delta

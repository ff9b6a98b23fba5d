"""What the dashboard shows, gathered from a ``QueryStorage`` in one place.

``gather`` runs the queries (``llmtally.query.timeseries`` and ``aggregate`` over
rollups, ``query.anomalies``, and bounded pages of ``query_events``); the folding helpers
below it are pure. Everything the page draws comes from one ``DashboardData``, so
switching a panel to another query is a change here only.

- Tiles: one totals ``aggregate`` of the range (``GET /analytics/aggregate?start&end``).
- The time charts: one ``timeseries`` per drawn series with the range's window, exactly
  what ``GET /analytics/timeseries?metric&aggregation&window&group_by&fill&start&end``
  answers (``CHART_QUERIES``): requests and failures per bucket and cost per model per
  bucket with ``fill=zero`` (a bucket without requests counted 0, cost nothing);
  latency and TTFT p50/p95/p99 with ``fill=none`` (a bucket without samples has no
  percentile: the chart shows a gap).
- Anomalies: the newest ``MAX_ANOMALIES`` the detector stored in the range
  (``query.anomalies``, ``GET /analytics/anomalies?start&end``).
- Error patterns: the failed requests of the range, fingerprinted
  (``analysis.errors.ErrorPatterns``); at most ``MAX_ERROR_EVENTS`` of them, the
  earliest first — ``errors_sampled`` says when there were more.
- SLO burn: error rate over the last 5 min, 30 min, 1 h, 6 h and 3 days (one totals
  ``aggregate`` each) divided by the allowed error rate, with the multi-window alerts of
  ``analysis.slo``.
- Budgets: whatever the caller has (a collector's, from ``llmtally serve --budgets``).
- Latest events: the newest ``LATEST_EVENTS`` requests of the last minute, 10 minutes or
  hour.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import anyio

from ...analysis.budgets import BudgetStatus
from ...analysis.errors import ErrorPatterns, ErrorPatternsSnapshot
from ...analysis.slo import FAST_BURN_THRESHOLD, SLOW_BURN_THRESHOLD, TICKET_BURN_THRESHOLD
from ...events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from ...query import (
    AggregateResult,
    EventRecord,
    QueryError,
    TimeSeriesResult,
    aggregate,
    timeseries,
)
from ...query.anomalies import AnomalyRecord, anomalies
from ...query.events import record_of
from ...storage.base import Cursor, EventFilter, QueryStorage
from ..params import is_target

__all__ = [
    "CHART_QUERIES",
    "DEFAULT_RANGE",
    "DEFAULT_SLO_TARGET",
    "LATEST_EVENTS",
    "MAX_ANOMALIES",
    "MAX_ERROR_EVENTS",
    "RANGES",
    "SLO_WINDOWS",
    "BurnRate",
    "ChartQuery",
    "DashboardData",
    "RangeSpec",
    "SloSummary",
    "fold_errors",
    "gather",
    "parse_target",
    "slo_summary",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """A time range the picker offers, the aggregate window its charts use, and how
    often at most the page refetches its panels while events arrive (a long range's
    charts barely move with one more event, and cost more to recompute)."""

    name: str
    span_ms: int
    window: str
    window_ms: int
    refresh_ms: int


RANGES: Final[dict[str, RangeSpec]] = {
    "1h": RangeSpec("1h", HOUR_MS, "1m", MINUTE_MS, 3_000),
    "24h": RangeSpec("24h", DAY_MS, "15m", 15 * MINUTE_MS, 10_000),
    "7d": RangeSpec("7d", 7 * DAY_MS, "1h", HOUR_MS, 30_000),
    "30d": RangeSpec("30d", 30 * DAY_MS, "6h", 6 * HOUR_MS, 30_000),
}
DEFAULT_RANGE: Final = "1h"
DEFAULT_SLO_TARGET: Final = "0.999"
SLO_WINDOWS: Final = (
    ("5m", 5 * MINUTE_MS),
    ("30m", 30 * MINUTE_MS),
    ("1h", HOUR_MS),
    ("6h", 6 * HOUR_MS),
    ("3d", 3 * DAY_MS),
)
MAX_ERROR_EVENTS: Final = 5_000
MAX_ANOMALIES: Final = 50
LATEST_EVENTS: Final = 20
_PAGE: Final = 1_000
_LATEST_SPANS_MS: Final = (MINUTE_MS, 10 * MINUTE_MS, HOUR_MS)
_LATEST_MAX_SCAN: Final = 3 * _PAGE
_REQUESTS: Final = (LlmRequestCompleted, LlmRequestFailed)


@dataclass(frozen=True, slots=True)
class ChartQuery:
    """One drawn series' ``timeseries`` query (the range and window are the page's)."""

    metric: str
    aggregation: str
    fill: str
    group_by: str | None = None


CHART_QUERIES: Final[dict[str, ChartQuery]] = {
    "requests": ChartQuery("requests", "count", "zero"),
    "failures": ChartQuery("errors", "count", "zero"),
    "cost": ChartQuery("cost_micros", "sum", "zero", group_by="model"),
    **{
        f"{metric}_{q}": ChartQuery(metric, q, "none")
        for metric in ("duration_ms", "ttft_ms")
        for q in ("p50", "p95", "p99")
    },
}
"""The time charts' series by name (``requests``, ``failures``, ``cost`` per model,
``duration_ms_p50`` … ``ttft_ms_p99``); the names are the charts' ``data-series``."""


@dataclass(frozen=True, slots=True)
class BurnRate:
    """Requests, errors and burn rate (error rate / allowed error rate) of one window."""

    window: str
    requests: int
    errors: int
    burn_rate: float


@dataclass(frozen=True, slots=True)
class SloSummary:
    """The SLO at a glance: burn rates per window and the alerts they raise."""

    target: float
    windows: list[BurnRate]
    fast_burn: bool
    slow_burn: bool
    ticket: bool


@dataclass(frozen=True, slots=True)
class DashboardData:
    """Everything one rendering of the dashboard needs; times are unix milliseconds.
    ``series`` holds one ``timeseries`` answer per ``CHART_QUERIES`` name; ``anomalies``
    are newest first."""

    range: RangeSpec
    start_ms: int
    end_ms: int
    totals: AggregateResult
    series: dict[str, TimeSeriesResult]
    anomalies: list[AnomalyRecord]
    errors: ErrorPatternsSnapshot
    errors_sampled: bool
    slo: SloSummary
    budgets: list[BudgetStatus]
    latest: list[EventRecord]


def parse_target(raw: str | None) -> Fraction:
    """An SLO target strictly between 0 and 1, a plain decimal (``"0.999"``, as
    ``/analytics/slo`` takes it: ``params.TARGET_PATTERN``; ``None`` or empty: the
    default); raises ``QueryError``."""
    text = raw or DEFAULT_SLO_TARGET
    if not is_target(text):
        raise QueryError("target", "must be a decimal strictly between 0 and 1, e.g. 0.999")
    return Fraction(text)


def slo_summary(target: Fraction, counts: Sequence[tuple[str, int, int]]) -> SloSummary:
    """Burn rates of ``(window, requests, errors)`` counts, and the alerts of
    ``analysis.slo``: fast burn (1 h and 5 min ≥ 14.4), slow burn (6 h and 30 min ≥ 6),
    ticket (3 days and 6 h ≥ 1). Exact arithmetic; a window without requests burns 0."""
    allowed = 1 - target
    rates: dict[str, Fraction] = {}
    windows: list[BurnRate] = []
    for name, requests, errors in counts:
        rate = Fraction(errors, requests) / allowed if requests else Fraction(0)
        rates[name] = rate
        windows.append(BurnRate(name, requests, errors, float(rate)))

    def both(a: str, b: str, threshold: Fraction) -> bool:
        return rates.get(a, Fraction(0)) >= threshold and rates.get(b, Fraction(0)) >= threshold

    return SloSummary(
        target=float(target),
        windows=windows,
        fast_burn=both("1h", "5m", FAST_BURN_THRESHOLD),
        slow_burn=both("6h", "30m", SLOW_BURN_THRESHOLD),
        ticket=both("3d", "6h", TICKET_BURN_THRESHOLD),
    )


def fold_errors(events: Sequence[AnalyticsEvent], top: int = 10) -> ErrorPatternsSnapshot:
    """The ``top`` error patterns of the failed requests among ``events``."""
    patterns = ErrorPatterns()
    for e in events:
        p = e.payload
        if isinstance(p, LlmRequestFailed):
            patterns.observe(
                e.timestamp_ms,
                p.error_code,
                p.error_message,
                model=p.model,
                status_code=p.status_code,
                endpoint=p.endpoint,
            )
    return patterns.snapshot(top)


async def _failed_events(
    storage: QueryStorage, start_ms: int, end_ms: int
) -> tuple[list[AnalyticsEvent], bool]:
    """Up to ``MAX_ERROR_EVENTS`` failed requests of the range; and whether there were more."""
    flt = EventFilter(start_ms=start_ms, end_ms=end_ms, success=False)
    found: list[AnalyticsEvent] = []
    after: Cursor | None = None
    while len(found) < MAX_ERROR_EVENTS:
        page = await storage.query_events(flt, after=after, limit=_PAGE)
        found.extend(page)
        if len(page) < _PAGE:
            return found, False
        after = (page[-1].timestamp_ms, page[-1].event_id)
    more = await storage.query_events(flt, after=after, limit=1)
    return found, bool(more)


async def _latest(storage: QueryStorage, end_ms: int) -> list[EventRecord]:
    """The newest ``LATEST_EVENTS`` requests before ``end_ms``, newest first, from the
    shortest of the look-back spans that has enough (each scan bounded)."""
    newest: deque[AnalyticsEvent] = deque(maxlen=LATEST_EVENTS)
    for span in _LATEST_SPANS_MS:
        newest.clear()
        flt = EventFilter(start_ms=max(0, end_ms - span), end_ms=end_ms)
        after: Cursor | None = None
        scanned = 0
        while scanned < _LATEST_MAX_SCAN:
            page = await storage.query_events(flt, after=after, limit=_PAGE)
            newest.extend(e for e in page if isinstance(e.payload, _REQUESTS))
            scanned += len(page)
            if len(page) < _PAGE:
                break
            after = (page[-1].timestamp_ms, page[-1].event_id)
        if len(newest) >= LATEST_EVENTS:
            break
    return [record_of(e) for e in reversed(newest)]


async def gather(
    storage: QueryStorage,
    spec: RangeSpec,
    now_ms: int,
    *,
    target: Fraction | None = None,
    budgets: Sequence[BudgetStatus] = (),
) -> DashboardData:
    """Run the dashboard's queries for the range ending at the next whole second after
    ``now_ms``. Storage errors propagate."""
    end_ms = (now_ms // 1000 + 1) * 1000
    start_ms = max(0, end_ms - spec.span_ms)
    totals = await aggregate(storage, start_ms, end_ms)
    series: dict[str, TimeSeriesResult] = {}
    for name, q in CHART_QUERIES.items():
        series[name] = await timeseries(
            storage,
            q.metric,
            start_ms,
            end_ms,
            window=spec.window,
            aggregation=q.aggregation,
            group_by=q.group_by,
            fill=q.fill,
        )
    found = await anomalies(storage, start_ms, end_ms, limit=MAX_ANOMALIES)
    counts: list[tuple[str, int, int]] = []
    for name, span in SLO_WINDOWS:
        w = await aggregate(storage, max(0, end_ms - span), end_ms)
        counts.append((name, w.total_requests, w.failed_requests))
    failed, sampled = await _failed_events(storage, start_ms, end_ms)
    errors = await anyio.to_thread.run_sync(fold_errors, failed)
    return DashboardData(
        range=spec,
        start_ms=start_ms,
        end_ms=end_ms,
        totals=totals,
        series=series,
        anomalies=found.anomalies,
        errors=errors,
        errors_sampled=sampled,
        slo=slo_summary(target if target is not None else parse_target(None), counts),
        budgets=list(budgets),
        latest=await _latest(storage, end_ms),
    )

"""``timeseries``: one metric per time bucket, one series per group, for charts.

Read from the same sources as ``aggregate`` (``plan``: hour and minute rollups, raw events
for the ragged minutes at the ends), so a series point equals what a scan of the raw
events of its bucket gives — counters exact, percentiles within the sketch's ±1%.

Filters on the facet being grouped by, or one filter without a ``group_by``, are answered
from that facet's rollup rows. Filters on other facets (``model=…`` grouped by ``agent``,
or two filters) need the combination of facets, which rollups do not keep: they are
answered from raw events (``source="raw"``), so only within the raw TTL.

Metrics and the aggregations that make sense for them (``METRICS``; anything else is a
``QueryError("aggregation")``):

================================  ==========================================  ==========
metric                            aggregations (first: the default)           empty bucket
================================  ==========================================  ==========
``requests``, ``errors``          ``count``, ``sum`` (the same), ``rate`` /s  ``None``
``error_rate``                    ``avg`` (failed / requests)                 ``None``
``input_tokens``,                 ``sum``, ``avg`` (per request), ``rate`` /s ``None``
``output_tokens``,
``total_tokens``
``cost_nanos``, ``cost_micros``   ``sum``, ``avg`` (per request; integers,    ``None``
                                  rounded half up — money is never a float)
``duration_ms``, ``ttft_ms``      ``p95``, ``p50``, ``p99``, ``avg``,         ``None``
                                  ``min``, ``max``, ``count`` (samples)
================================  ==========================================  ==========

A bucket without any request of its group has no value (``None``); ``fill`` decides what
the series shows there. ``rate`` divides by the part of the bucket inside the range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal, TypeAlias, cast

import msgspec

from ..events import nanos_to_micros
from ..storage.base import Cursor, QueryStorage, RequestRow, RollupRow, StoredRollup
from ..storage.rollups import HOUR_MS, MINUTE_MS, Metric, Rollup, rollup_from_row, status_of
from ._types import GROUP_BY, MAX_BUCKETS, MAX_CELLS, WINDOWS, GroupBy, QueryError, Source, Window
from .aggregate import _GROUP_INDEX, PAGE, _Fold, _pages, bucket_start, plan
from .events import check_range
from .fill import FILLS, Fill, Point, Value
from .fill import fill as fill_points

__all__ = [
    "AGGREGATIONS",
    "METRICS",
    "STATUSES",
    "Aggregation",
    "Series",
    "SeriesMetric",
    "TimeSeriesResult",
    "timeseries",
]

SeriesMetric: TypeAlias = Literal[
    "requests",
    "errors",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_nanos",
    "cost_micros",
    "duration_ms",
    "ttft_ms",
]
Aggregation: TypeAlias = Literal["count", "sum", "avg", "min", "max", "p50", "p95", "p99", "rate"]
AGGREGATIONS: Final = ("count", "sum", "avg", "min", "max", "p50", "p95", "p99", "rate")
STATUSES: Final = (status_of(False), status_of(True))
"""The values of the ``status`` facet: ``success``, ``failure``."""

_COUNTER_AGGS: Final = ("count", "sum", "rate")
_TOKEN_AGGS: Final = ("sum", "avg", "rate")
_MONEY_AGGS: Final = ("sum", "avg")
_LATENCY_AGGS: Final = ("p95", "p50", "p99", "avg", "min", "max", "count")
METRICS: Final[dict[str, tuple[str, ...]]] = {
    "requests": _COUNTER_AGGS,
    "errors": _COUNTER_AGGS,
    "error_rate": ("avg",),
    "input_tokens": _TOKEN_AGGS,
    "output_tokens": _TOKEN_AGGS,
    "total_tokens": _TOKEN_AGGS,
    "cost_nanos": _MONEY_AGGS,
    "cost_micros": _MONEY_AGGS,
    "duration_ms": _LATENCY_AGGS,
    "ttft_ms": _LATENCY_AGGS,
}
"""The aggregations each metric allows; the first is its default."""
_UNITS: Final = {
    "requests": "requests",
    "errors": "requests",
    "error_rate": "ratio",
    "input_tokens": "tokens",
    "output_tokens": "tokens",
    "total_tokens": "tokens",
    "cost_nanos": "nanodollars",
    "cost_micros": "microdollars",
    "duration_ms": "ms",
    "ttft_ms": "ms",
}


class Series(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One group's points: ``[bucket_start_unix_s, value | null]``, one per bucket of the
    range, oldest first. ``group`` is the ``group_by`` value (``None`` when not grouped,
    or for requests without an agent, API key or endpoint)."""

    group: str | None
    points: list[tuple[int, int | float | None]]


class TimeSeriesResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``GET /analytics/timeseries``: series ordered by ``group``. ``start``/``end`` are
    unix seconds; ``unit`` is the metric's (``"/s"`` appended for ``rate``). ``source``
    says whether rollups or raw events were read."""

    metric: SeriesMetric
    aggregation: Aggregation
    unit: str
    window: Window
    group_by: GroupBy | None
    filters: dict[str, str]
    fill: Fill
    start: int
    end: int
    source: Source
    series: list[Series]


def _check(
    metric: str, aggregation: str | None, window: str, group_by: str | None, fill_mode: str
) -> str:
    if metric not in METRICS:
        raise QueryError("metric", f"must be one of {', '.join(METRICS)}")
    allowed = METRICS[metric]
    agg = allowed[0] if aggregation is None else aggregation
    if agg not in AGGREGATIONS:
        raise QueryError("aggregation", f"must be one of {', '.join(AGGREGATIONS)}")
    if agg not in allowed:
        raise QueryError(
            "aggregation", f"{agg} of {metric} means nothing: use one of {', '.join(allowed)}"
        )
    if window not in WINDOWS:
        raise QueryError("window", f"must be one of {', '.join(WINDOWS)}")
    if group_by is not None and group_by not in GROUP_BY:
        raise QueryError("group_by", f"must be one of {', '.join(GROUP_BY)}")
    if fill_mode not in FILLS:
        raise QueryError("fill", f"must be one of {', '.join(FILLS)}")
    return agg


def _round_div(num: int, den: int) -> int:
    """``num / den`` rounded half up, in integers."""
    return (2 * num + den) // (2 * den)


def _latency(m: Metric, agg: str) -> Value | None:
    if agg == "count":
        return m.count
    if not m.count:
        return None
    if agg == "avg":
        return m.sum / m.count
    if agg == "min":
        return m.min
    if agg == "max":
        return m.max
    p50, p95, p99 = m.percentiles()
    return {"p50": p50, "p95": p95, "p99": p99}[agg]


def value_of(r: Rollup, metric: str, agg: str, seconds: float) -> Value | None:
    """The ``agg`` of ``metric`` over the requests of ``r`` (a bucket of ``seconds``
    inside the range)."""
    if metric in ("duration_ms", "ttft_ms"):
        return _latency(r.duration if metric == "duration_ms" else r.ttft, agg)
    n = r.requests
    if metric == "error_rate":
        return r.failed_requests / n if n else None
    total: int
    if metric == "requests":
        total = n
    elif metric == "errors":
        total = r.failed_requests
    elif metric == "input_tokens":
        total = r.input_tokens
    elif metric == "output_tokens":
        total = r.output_tokens
    elif metric == "total_tokens":
        total = r.input_tokens + r.output_tokens
    elif metric == "cost_nanos":
        return r.cost_nanos if agg == "sum" else _round_div(r.cost_nanos, n) if n else None
    else:  # cost_micros
        if agg == "sum":
            return nanos_to_micros(r.cost_nanos)
        return _round_div(r.cost_nanos, 1000 * n) if n else None
    if agg == "rate":
        return total / seconds if seconds > 0 else None
    if agg == "avg":
        return total / n if n else None
    return total


def _matcher(filters: Mapping[str, str]) -> Callable[[RequestRow], bool]:
    """Whether a raw request row matches every filter."""
    status = filters.get("status")
    columns = [(_GROUP_INDEX[f], v) for f, v in filters.items() if f != "status"]

    def match(row: RequestRow) -> bool:
        if status is not None and status_of(row[2]) != status:
            return False
        return all(row[i] == want for i, want in columns)

    return match


async def _fold(
    storage: QueryStorage,
    start_ms: int,
    end_ms: int,
    window_ms: int,
    group_by: GroupBy | None,
    filters: dict[str, str],
    use_rollups: bool,
) -> tuple[dict[tuple[int, str], Rollup | StoredRollup], bool]:
    """The (bucket, group value) cells, and whether rollups were read."""
    facet: GroupBy | None = group_by
    wanted: str | None = None
    if use_rollups and filters:
        facets = set(filters)
        if len(facets) == 1 and (group_by is None or facets == {group_by}):
            (only,) = facets
            facet, wanted = cast(GroupBy, only), filters[only]
        else:
            use_rollups = False  # rollups keep one facet per row: scan raw events
    fold = _Fold(start_ms, window_ms, facet)
    raw_ranges = [(start_ms, end_ms)] if start_ms < end_ms else []
    if use_rollups:
        p = plan(start_ms, end_ms, window_ms)
        tiers = [(HOUR_MS, p.hours)] if p.hours else []
        tiers += [(MINUTE_MS, r) for r in p.minutes]
        for period, (lo, hi) in tiers:

            async def rollup_page(
                after: Cursor | None, period: int = period, lo: int = lo, hi: int = hi
            ) -> list[RollupRow]:
                return await storage.scan_rollups(
                    period, facet or "", lo, hi, after=after, limit=PAGE
                )

            def fold_rollups(rows: list[RollupRow]) -> None:
                fold.rollups(rows if wanted is None else [r for r in rows if r[1] == wanted])

            await _pages(rollup_page, fold_rollups)
        raw_ranges = p.raw
    match = _matcher(filters) if filters else None
    for lo, hi in raw_ranges:

        async def request_page(
            after: Cursor | None, lo: int = lo, hi: int = hi
        ) -> list[RequestRow]:
            return await storage.scan_requests(lo, hi, after=after, limit=PAGE)

        def fold_requests(rows: list[RequestRow]) -> None:
            fold.requests(rows if match is None else [r for r in rows if match(r)])

        await _pages(request_page, fold_requests)
    if facet is not None and group_by is None:  # filtered on a facet, not grouped
        return {(b, ""): c for (b, _), c in fold.cells.items()}, use_rollups
    return fold.cells, use_rollups


async def timeseries(
    storage: QueryStorage,
    metric: str,
    start_ms: int,
    end_ms: int,
    *,
    window: str = "1m",
    aggregation: str | None = None,
    group_by: str | None = None,
    filters: Mapping[str, str] | None = None,
    fill: str = "none",
    source: Literal["auto", "rollups", "raw"] = "auto",
) -> TimeSeriesResult:
    """The ``aggregation`` of ``metric`` per ``window`` bucket of ``[start_ms, end_ms)``,
    one series per ``group_by`` value, over the requests matching every ``filters``
    entry (``{facet: value}``, facets as in ``GROUP_BY``). Every series has one point per
    bucket (aligned like ``aggregate``'s; the first may start before ``start_ms``).

    Raises ``QueryError`` naming the bad argument: ``end`` before ``start``, an unknown
    ``metric``, ``window``, ``group_by``, filter facet or ``fill``, a ``status`` filter
    other than ``STATUSES``, an ``aggregation``
    that means nothing for the metric, more than ``MAX_BUCKETS`` buckets or more than
    ``MAX_CELLS`` points. Storage errors propagate.
    """
    check_range(start_ms, end_ms)
    agg = _check(metric, aggregation, window, group_by, fill)
    mode = cast(Fill, fill)
    flt = dict(filters or {})
    for facet, value in flt.items():
        if facet not in GROUP_BY:
            raise QueryError(facet, f"cannot filter on it: filters are {', '.join(GROUP_BY)}")
        if facet == "status" and value not in STATUSES:
            raise QueryError("status", f"must be one of {', '.join(STATUSES)}")
    window_ms = WINDOWS[window]
    first = bucket_start(start_ms, window_ms)
    buckets = range(first, end_ms, window_ms) if start_ms < end_ms else range(0)
    if len(buckets) > MAX_BUCKETS:  # counted before any is made: a range can be ~10^9 minutes
        raise QueryError("window", f"makes more than {MAX_BUCKETS} buckets: widen it")
    grid = list(buckets)
    gb: GroupBy | None = group_by  # type: ignore[assignment]
    use_rollups = source == "rollups" or (source == "auto" and storage.has_rollups)
    cells, used_rollups = await _fold(storage, start_ms, end_ms, window_ms, gb, flt, use_rollups)
    groups = sorted({value for _, value in cells})
    if len(groups) * len(grid) > MAX_CELLS:
        raise QueryError(
            "group_by", f"more than {MAX_CELLS} points: narrow the range or widen the window"
        )
    series: list[Series] = []
    for value in groups:
        points: list[Point] = []
        for b in grid:
            cell = cells.get((b, value))
            if cell is None:
                points.append((b // 1000, None))
                continue
            r = cell if isinstance(cell, Rollup) else rollup_from_row(cell)
            seconds = (min(b + window_ms, end_ms) - max(b, start_ms)) / 1000
            points.append((b // 1000, value_of(r, metric, agg, seconds)))
        series.append(
            Series(group=(value or None) if gb else None, points=fill_points(points, mode))
        )
    return TimeSeriesResult(
        metric=metric,  # type: ignore[arg-type]
        aggregation=agg,  # type: ignore[arg-type]
        unit=_UNITS[metric] + ("/s" if agg == "rate" else ""),
        window=window,  # type: ignore[arg-type]
        group_by=gb,
        filters=flt,
        fill=mode,
        start=start_ms // 1000,
        end=-(-end_ms // 1000),
        source="rollups" if used_rollups else "raw",
        series=series,
    )

"""``timeseries``: every point equals an independent computation over the raw events
(counters exact, percentiles within the sketch's ±1%), on SQLite and PostgreSQL, from
rollups and from raw events alike; nonsense arguments name the parameter."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest

from llmtally.events import AnalyticsEvent, LlmRequestFailed
from llmtally.query import QueryError, timeseries
from llmtally.query.aggregate import bucket_start
from llmtally.query.timeseries import METRICS
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage
from llmtally.storage.rollups import HOUR_MS, MINUTE_MS

from ..storage.factory import T0, random_requests, request

START = T0 + 37_123  # ragged: not on a minute
END = T0 + 3 * HOUR_MS + 12 * MINUTE_MS + 7_000
WINDOW_MS = {"1m": MINUTE_MS, "15m": 15 * MINUTE_MS, "1h": HOUR_MS, "1d": 86_400_000}
FACET_OF = {
    "model": lambda e: e.payload.model,
    "provider": lambda e: e.payload.provider,
    "agent": lambda e: e.agent_id or "",
    "provider_id": lambda e: e.payload.provider_id or "",
    "endpoint": lambda e: e.payload.endpoint or "",
    "status": lambda e: "failure" if isinstance(e.payload, LlmRequestFailed) else "success",
}


def expected(
    events: list[AnalyticsEvent],
    metric: str,
    agg: str,
    window: str,
    group_by: str | None,
    filters: dict[str, str],
) -> dict[str | None, dict[int, Any]]:
    """``{group: {bucket_start_s: value}}`` for non-empty buckets, from the events."""
    w = WINDOW_MS[window]
    cells: dict[tuple[str | None, int], list[AnalyticsEvent]] = defaultdict(list)
    for e in events:
        if not START <= e.timestamp_ms < END:
            continue
        if any(FACET_OF[f](e) != v for f, v in filters.items()):
            continue
        group = (FACET_OF[group_by](e) or None) if group_by else None
        cells[(group, bucket_start(e.timestamp_ms, w))].append(e)
    out: dict[str | None, dict[int, Any]] = defaultdict(dict)
    for (group, b), es in cells.items():
        seconds = (min(b + w, END) - max(b, START)) / 1000
        out[group][b // 1000] = _value(es, metric, agg, seconds)
    return out


def _value(es: list[AnalyticsEvent], metric: str, agg: str, seconds: float) -> Any:
    n = len(es)
    failed = sum(isinstance(e.payload, LlmRequestFailed) for e in es)
    if metric in ("duration_ms", "ttft_ms"):
        values = sorted(v for e in es if (v := getattr(e.payload, metric)) is not None)
        if agg == "count":
            return len(values)
        if not values:
            return None
        if agg == "avg":
            return sum(values) / len(values)
        if agg in ("min", "max"):
            return values[0] if agg == "min" else values[-1]
        q = {"p50": 0.5, "p95": 0.95, "p99": 0.99}[agg]
        return values[math.floor(q * (len(values) - 1))]
    if metric == "error_rate":
        return failed / n
    cost = sum(e.payload.cost_nanos for e in es)  # type: ignore[union-attr]
    if metric == "cost_nanos":
        return cost if agg == "sum" else (2 * cost + n) // (2 * n)
    if metric == "cost_micros":
        return (cost + 500) // 1000 if agg == "sum" else (2 * cost + 1000 * n) // (2000 * n)
    total = {
        "requests": n,
        "errors": failed,
        "input_tokens": sum(e.payload.input_tokens for e in es),  # type: ignore[union-attr]
        "output_tokens": sum(e.payload.output_tokens for e in es),  # type: ignore[union-attr]
        "total_tokens": sum(e.payload.input_tokens + e.payload.output_tokens for e in es),  # type: ignore[union-attr]
    }[metric]
    return total / seconds if agg == "rate" else total / n if agg == "avg" else total


def _close(got: Any, want: Any, agg: str) -> bool:
    if want is None or got is None:
        return got is want
    if isinstance(want, int) and agg not in ("avg", "rate"):
        return type(got) is int and got == want
    if agg in ("p50", "p95", "p99"):
        return abs(got - want) <= 0.01 * abs(want) + 1e-9
    return got == pytest.approx(want)


@pytest.fixture
async def loaded(storage: QueryStorage) -> tuple[QueryStorage, list[AnalyticsEvent]]:
    events = random_requests(500, seed=31, start_ms=T0 - HOUR_MS, span_ms=5 * HOUR_MS)
    await storage.ingest(events[:250])
    await storage.write_batch(events[250:])
    return storage, events


CASES: list[tuple[str, str, str, str | None, dict[str, str]]] = [
    ("requests", "count", "15m", None, {}),  # requests-count
    ("requests", "rate", "1h", "model", {}),  # requests-rate-by-model
    ("errors", "sum", "15m", "provider", {}),  # errors-by-provider
    ("error_rate", "avg", "1h", "agent", {}),  # error-rate-by-agent
    ("input_tokens", "sum", "1m", None, {"model": "gpt-4o"}),  # input-1m-filtered
    ("output_tokens", "avg", "1h", "endpoint", {}),  # output-avg
    ("total_tokens", "rate", "1d", "status", {}),  # total-rate-1d
    ("cost_nanos", "sum", "1h", "model", {"model": "gpt-4o"}),  # nanos-same-facet
    ("cost_nanos", "avg", "15m", "provider_id", {}),  # nanos-avg
    ("cost_micros", "sum", "1h", None, {}),  # micros-sum
    ("cost_micros", "avg", "1h", "model", {}),  # micros-avg
    ("duration_ms", "p95", "1h", "model", {}),  # duration-p95
    ("duration_ms", "p50", "15m", None, {}),  # duration-p50
    ("duration_ms", "max", "1h", "agent", {"model": "gpt-4o-mini"}),  # cross-facet
    ("ttft_ms", "p99", "1h", None, {"status": "success"}),  # ttft-p99-status
    ("ttft_ms", "avg", "1h", "provider", {}),  # ttft-avg
    ("ttft_ms", "min", "15m", None, {}),  # ttft-min
    ("duration_ms", "count", "1h", None, {}),  # duration-count
]


async def test_points_equal_the_raw_events(
    loaded: tuple[QueryStorage, list[AnalyticsEvent]],
) -> None:
    # One storage for every case: loading it is what costs.
    storage, events = loaded
    for case in CASES:
        metric, agg, window, group_by, filters = case
        want = expected(events, metric, agg, window, group_by, filters)
        assert want, case
        grid = list(range(bucket_start(START, WINDOW_MS[window]), END, WINDOW_MS[window]))
        for source in ("auto", "raw"):
            result = await timeseries(
                storage,
                metric,
                START,
                END,
                window=window,
                aggregation=agg,
                group_by=group_by,
                filters=filters,
                source=source,  # type: ignore[arg-type]
            )
            cross = len(set(filters) - {group_by}) > (0 if group_by else 1)
            assert result.source == ("raw" if source == "raw" or cross else "rollups"), case
            assert [s.group for s in result.series] == sorted(want, key=lambda g: g or ""), case
            for s in result.series:
                assert [t for t, _ in s.points] == [b // 1000 for b in grid], case
                for t, got in s.points:
                    assert _close(got, want[s.group].get(t), agg), (case, source, s.group, t, got)


async def test_fill_modes_apply_to_empty_buckets(storage: QueryStorage) -> None:
    await storage.ingest(
        [request(T0 + m * MINUTE_MS + 5, cost_nanos=1_000 * m) for m in (0, 0, 3, 4, 9)]
    )
    kw: dict[str, Any] = {"window": "1m", "aggregation": "sum"}
    end = T0 + 10 * MINUTE_MS

    async def values(fill: str) -> list[Any]:
        r = await timeseries(storage, "cost_nanos", T0, end, fill=fill, **kw)
        assert r.unit == "nanodollars"
        (s,) = r.series
        return [v for _, v in s.points]

    assert await values("none") == [0, None, None, 3000, 4000, None, None, None, None, 9000]
    assert await values("zero") == [0, 0, 0, 3000, 4000, 0, 0, 0, 0, 9000]
    assert await values("previous") == [0, 0, 0, 3000, 4000, 4000, 4000, 4000, 4000, 9000]
    linear = await values("linear")
    assert linear[:5] == [0, 1000, 2000, 3000, 4000]
    assert linear[5:9] == pytest.approx([5000, 6000, 7000, 8000])


async def test_hour_rollups_serve_day_windows_after_raw_expiry(storage: QueryStorage) -> None:
    day = bucket_start(T0, 86_400_000)
    await storage.ingest([request(day + i * 7 * MINUTE_MS, failed=i % 4 == 0) for i in range(40)])
    await storage.expire(day + 40 * 86_400_000)  # raw events gone, rollups kept
    assert await storage.count_events() == 0
    r = await timeseries(storage, "errors", day, day + 2 * 86_400_000, window="1d")
    assert r.series[0].points == [(day // 1000, 10), (day // 1000 + 86_400, None)]


async def test_memory_storage_reads_raw_events() -> None:
    m = MemoryStorage()
    await m.write_batch([request(T0 + 1_000), request(T0 + 2_000, failed=True)])
    r = await timeseries(m, "error_rate", T0, T0 + MINUTE_MS)
    assert (r.source, r.aggregation, r.unit) == ("raw", "avg", "ratio")
    assert r.series[0].points == [(T0 // 1000, 0.5)]


async def test_an_empty_range_has_no_series() -> None:
    r = await timeseries(MemoryStorage(), "requests", T0, T0)
    assert r.series == []


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        pytest.param({"metric": "latency"}, "metric", id="metric"),
        pytest.param({"aggregation": "median"}, "aggregation", id="unknown-aggregation"),
        pytest.param({"aggregation": "p95"}, "aggregation", id="p95-of-requests"),
        pytest.param({"metric": "error_rate", "aggregation": "sum"}, "aggregation", id="rate-sum"),
        pytest.param(
            {"metric": "cost_nanos", "aggregation": "rate"}, "aggregation", id="cost-rate"
        ),
        pytest.param({"metric": "duration_ms", "aggregation": "sum"}, "aggregation", id="lat-sum"),
        pytest.param({"metric": "input_tokens", "aggregation": "max"}, "aggregation", id="tok-max"),
        pytest.param({"window": "2m"}, "window", id="window"),
        pytest.param({"group_by": "colour"}, "group_by", id="group_by"),
        pytest.param({"fill": "spline"}, "fill", id="fill"),
        pytest.param({"filters": {"region": "eu"}}, "region", id="filter"),
        pytest.param({"start_ms": 10, "end_ms": 5}, "end", id="end-before-start"),
        pytest.param({"end_ms": 400 * 86_400_000}, "window", id="too-many-buckets"),
    ],
)
async def test_nonsense_names_the_parameter(kwargs: dict[str, Any], parameter: str) -> None:
    args: dict[str, Any] = {"metric": "requests", "start_ms": 0, "end_ms": HOUR_MS, **kwargs}
    with pytest.raises(QueryError) as info:
        await timeseries(MemoryStorage(), **args)
    assert info.value.parameter == parameter


def test_every_metric_has_a_default_aggregation() -> None:
    assert all(aggs for aggs in METRICS.values())

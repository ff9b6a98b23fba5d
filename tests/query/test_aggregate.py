"""``aggregate``: rollups give the raw scan's answer (counters exact, percentiles within the
sketch's ±1%), on SQLite and PostgreSQL; the range plan; argument errors."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from llmtally.events import LlmRequestFailed
from llmtally.query import WINDOWS, AggregateGroup, QueryError, aggregate
from llmtally.query.aggregate import Plan, bucket_start, plan
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage
from llmtally.storage.rollups import HOUR_MS, MINUTE_MS

from ..storage.factory import T0, random_requests, request

START = T0 + 37_123  # ragged: not on a minute
END = T0 + 5 * HOUR_MS + 12 * MINUTE_MS + 7_000
COUNTERS = (
    "total_requests",
    "successful_requests",
    "failed_requests",
    "total_input_tokens",
    "total_output_tokens",
    "total_cached_input_tokens",
    "total_cost_micros",
    "unpriced_requests",
    "models_used",
    "backends_used",
    "endpoints_hit",
    "period_start",
    "period_end",
    "group",
)


def _same_counters(a: AggregateGroup, b: AggregateGroup) -> None:
    for name in COUNTERS:
        assert getattr(a, name) == getattr(b, name), name
    for metric in ("duration_ms", "ttft_ms"):
        x, y = getattr(a, metric), getattr(b, metric)
        assert (x.count, x.min, x.max, x.p50, x.p95, x.p99) == (
            y.count,
            y.min,
            y.max,
            y.p50,
            y.p95,
            y.p99,
        ), metric
        assert x.avg == pytest.approx(y.avg)


@pytest.fixture
async def loaded(storage: QueryStorage) -> QueryStorage:
    events = random_requests(600, seed=21, start_ms=T0 - HOUR_MS, span_ms=7 * HOUR_MS)
    await storage.ingest(events[:300])
    await storage.write_batch(events[300:])
    return storage


@pytest.mark.parametrize(
    ("group_by", "window"),
    [
        pytest.param(None, None, id="total"),
        pytest.param("model", "1h", id="model-1h"),
        pytest.param("agent", "15m", id="agent-15m"),
        pytest.param("provider_id", "6h", id="provider_id-6h"),
        pytest.param("endpoint", None, id="endpoint"),
        pytest.param("status", "1m", id="status-1m"),
        pytest.param("provider", "1d", id="provider-1d"),
    ],
)
async def test_rollups_answer_what_the_raw_scan_answers(
    loaded: QueryStorage, group_by: str | None, window: str | None
) -> None:
    fast = await aggregate(loaded, START, END, group_by=group_by, window=window)
    slow = await aggregate(loaded, START, END, group_by=group_by, window=window, source="raw")
    assert (fast.source, slow.source) == ("rollups", "raw")
    assert len(fast.buckets) == len(slow.buckets) > 0
    _same_counters(fast, slow)
    for a, b in zip(fast.buckets, slow.buckets, strict=True):
        _same_counters(a, b)


async def test_percentiles_from_rollups_are_within_the_sketch_error(loaded: QueryStorage) -> None:
    result = await aggregate(loaded, START, END, group_by="model", window="1h")
    events = await loaded.snapshot()
    exact: dict[tuple[int, str], list[float]] = defaultdict(list)
    for e in events:
        if START <= e.timestamp_ms < END and e.payload.duration_ms is not None:  # type: ignore[union-attr]
            hour = bucket_start(e.timestamp_ms, HOUR_MS)
            exact[(max(hour, START) // 1000, e.payload.model)].append(e.payload.duration_ms)  # type: ignore[union-attr]
    assert len(result.buckets) == len(exact)
    for b in result.buckets:
        values = sorted(exact[(b.period_start, b.group or "")])
        assert b.duration_ms.count == len(values)
        assert b.duration_ms.min == values[0]
        assert b.duration_ms.max == values[-1]
        assert b.duration_ms.avg == pytest.approx(sum(values) / len(values))
        for q, got in (
            (0.5, b.duration_ms.p50),
            (0.95, b.duration_ms.p95),
            (0.99, b.duration_ms.p99),
        ):
            want = values[math.floor(q * (len(values) - 1))]
            assert got is not None
            assert abs(got - want) <= 0.01 * want + 1e-9, (q, got, want)


async def test_long_ranges_read_rollups_not_events(storage: QueryStorage) -> None:
    events = [request(T0 + i * 7 * MINUTE_MS, failed=i % 4 == 0) for i in range(40)]
    await storage.ingest(events)
    await storage.expire(T0 + 400 * 86_400_000 - 1)  # raw TTL passed: events gone, rollups kept
    assert await storage.count_events() == 0
    result = await aggregate(storage, T0, T0 + 6 * HOUR_MS, window="1h")
    assert result.total_requests == 40
    assert result.failed_requests == 10
    per_hour = [
        sum(1 for e in events if T0 + h * HOUR_MS <= e.timestamp_ms < T0 + (h + 1) * HOUR_MS)
        for h in range(6)
    ]
    assert [b.total_requests for b in result.buckets] == [n for n in per_hour if n]
    assert result.buckets[0].period_start == T0 // 1000
    assert result.buckets[0].period_end == (T0 + HOUR_MS) // 1000


async def test_buckets_are_ordered_and_grouped(loaded: QueryStorage) -> None:
    result = await aggregate(loaded, START, END, group_by="status", window="1h")
    keys = [(b.period_start, b.group or "") for b in result.buckets]
    assert keys == sorted(keys)
    assert {b.group for b in result.buckets} == {"success", "failure"}
    assert result.period_start == START // 1000
    assert result.period_end == math.ceil(END / 1000)
    assert result.buckets[0].period_start == START // 1000  # clipped to the range
    assert result.buckets[-1].period_end == math.ceil(END / 1000)
    assert result.total_requests == sum(b.total_requests for b in result.buckets)
    assert result.models_used == {
        m: sum(b.models_used.get(m, 0) for b in result.buckets) for m in result.models_used
    }


async def test_memory_storage_aggregates_raw_events() -> None:
    m = MemoryStorage()
    events = random_requests(200, seed=22, start_ms=T0, span_ms=2 * HOUR_MS)
    await m.write_batch(events)
    result = await aggregate(m, T0, T0 + 2 * HOUR_MS, group_by="model")
    assert result.source == "raw"
    assert result.total_requests == 200
    assert result.failed_requests == sum(isinstance(e.payload, LlmRequestFailed) for e in events)


async def test_empty_range_and_no_data() -> None:
    m = MemoryStorage()
    result = await aggregate(m, T0, T0)
    assert (result.total_requests, result.buckets, result.duration_ms.p50) == (0, [], None)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        pytest.param({"start_ms": 10, "end_ms": 5}, "end", id="end-before-start"),
        pytest.param({"group_by": "color"}, "group_by", id="group_by"),
        pytest.param({"window": "2h"}, "window", id="window"),
        pytest.param({"window": "1m", "end_ms": 400 * 86_400_000}, "window", id="too-many-buckets"),
    ],
)
async def test_bad_arguments_name_the_parameter(kwargs: dict[str, object], parameter: str) -> None:
    args: dict[str, object] = {"start_ms": 0, "end_ms": HOUR_MS, **kwargs}
    with pytest.raises(QueryError) as info:
        await aggregate(MemoryStorage(), **args)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_plan_cuts_ragged_edges() -> None:
    assert plan(START, END, None) == Plan(
        hours=(T0 + HOUR_MS, T0 + 5 * HOUR_MS),
        minutes=[
            (T0 + MINUTE_MS, T0 + HOUR_MS),
            (T0 + 5 * HOUR_MS, T0 + 5 * HOUR_MS + 12 * MINUTE_MS),
        ],
        raw=[(START, T0 + MINUTE_MS), (T0 + 5 * HOUR_MS + 12 * MINUTE_MS, END)],
    )
    assert plan(START, END, WINDOWS["15m"]) == Plan(
        minutes=[(T0 + MINUTE_MS, T0 + 5 * HOUR_MS + 12 * MINUTE_MS)],
        raw=[(START, T0 + MINUTE_MS), (T0 + 5 * HOUR_MS + 12 * MINUTE_MS, END)],
    )
    assert plan(T0, T0 + 2 * HOUR_MS, WINDOWS["1d"]) == Plan(hours=(T0, T0 + 2 * HOUR_MS))
    assert plan(T0 + 5, T0 + 50, None) == Plan(raw=[(T0 + 5, T0 + 50)])
    assert plan(T0, T0, None) == Plan()


def test_weeks_start_on_monday_utc() -> None:
    monday = 1_700_438_400_000  # 2023-11-20 00:00 UTC, a Monday
    assert bucket_start(monday + 3 * 86_400_000 + 5, WINDOWS["1w"]) == monday
    assert bucket_start(monday - 1, WINDOWS["1w"]) == monday - WINDOWS["1w"]
    assert bucket_start(monday + 90_000, WINDOWS["1d"]) == monday

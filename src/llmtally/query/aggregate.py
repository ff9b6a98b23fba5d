"""``aggregate``: totals per time bucket and group, from rollups where they cover the range.

The range ``[start_ms, end_ms)`` is cut into pieces read from the coarsest source that
covers them exactly (``plan``): whole hours from hour rollups (when the window is a
multiple of an hour, or absent), whole minutes from minute rollups, and the partial
minutes at either end from raw events. Each piece lies inside one bucket, so the answer
is what a scan of every raw event would give — counters exact, percentiles within the
sketch's ±1% — while a month of data costs a few thousand rollup rows.

Raw events expire before rollups (``DEFAULT_RAW_TTL_MS``): past that, the partial minutes
at the ends of a range are missing from an answer. Folding runs in a worker thread, page
by page, so a large aggregate does not stall the event loop; memory is bounded by
``MAX_CELLS`` (bucket, group) cells.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final, Literal, TypeVar

import anyio

from ..events import nanos_to_micros
from ..storage.base import Cursor, QueryStorage, RequestRow, RollupRow, StoredRollup
from ..storage.rollups import (
    COUNTERS,
    HOUR_MS,
    MINUTE_MS,
    Metric,
    Rollup,
    rollup_from_row,
    status_of,
)
from ._types import (
    GROUP_BY,
    MAX_BUCKETS,
    MAX_CELLS,
    WINDOWS,
    AggregateGroup,
    AggregateResult,
    GroupBy,
    LatencyStats,
    QueryError,
    Source,
    Window,
)
from .events import check_range

__all__ = ["Plan", "aggregate", "bucket_start", "cost_by", "plan"]

PAGE: Final = 5_000
_WEEK_ORIGIN_MS: Final = 4 * 86_400_000  # 1970-01-05, a Monday

_COST_COLUMN: Final = COUNTERS.index("cost_nanos")  # in a ``StoredRollup``
_RAW_COST: Final = 12  # in a ``RequestRow``
_Cell = tuple[int, str]  # (bucket start, group value)
_GROUP_INDEX: Final[dict[str | None, int]] = {
    "model": 3,
    "provider": 4,
    "agent": 5,
    "provider_id": 6,
    "endpoint": 7,
}


def bucket_start(t: int, window_ms: int) -> int:
    """The start of the window-aligned bucket holding ``t`` (weeks start on Monday)."""
    origin = _WEEK_ORIGIN_MS if window_ms == WINDOWS["1w"] else 0
    return t - (t - origin) % window_ms


@dataclass(frozen=True)
class Plan:
    """Where each part of a range is read from: half-open ``(lo, hi)`` intervals."""

    hours: tuple[int, int] | None = None
    minutes: list[tuple[int, int]] = field(default_factory=list)
    raw: list[tuple[int, int]] = field(default_factory=list)


def _ceil(t: int, unit: int) -> int:
    return -(-t // unit) * unit


def plan(start_ms: int, end_ms: int, window_ms: int | None) -> Plan:
    """Cut ``[start_ms, end_ms)`` into hour-rollup, minute-rollup and raw pieces. Hour
    rows are used only when every hour lies inside one bucket (``window_ms`` is ``None``
    or a multiple of an hour)."""
    if start_ms >= end_ms:
        return Plan()
    m_lo, m_hi = _ceil(start_ms, MINUTE_MS), end_ms - end_ms % MINUTE_MS
    if m_lo >= m_hi:
        return Plan(raw=[(start_ms, end_ms)])
    raw = [r for r in ((start_ms, m_lo), (m_hi, end_ms)) if r[0] < r[1]]
    if window_ms is None or window_ms % HOUR_MS == 0:
        h_lo, h_hi = _ceil(start_ms, HOUR_MS), end_ms - end_ms % HOUR_MS
        if h_lo < h_hi:
            minutes = [r for r in ((m_lo, h_lo), (h_hi, m_hi)) if r[0] < r[1]]
            return Plan(hours=(h_lo, h_hi), minutes=minutes, raw=raw)
    return Plan(minutes=[(m_lo, m_hi)], raw=raw)


class _Fold:
    """The (bucket, group) accumulators of one aggregate. Touched by one thread at a time."""

    def __init__(
        self,
        start_ms: int,
        window_ms: int | None,
        group_by: GroupBy | None,
        *,
        spanning: bool = False,
    ) -> None:
        # A cell holds one stored row as it came (decoded when a second row arrives, or
        # at the end), or the rollup that rows were merged into.
        self.cells: dict[_Cell, Rollup | StoredRollup] = {}
        self.start_ms = start_ms
        self.window_ms = window_ms
        self.group_by = group_by
        # A cell that many rows merge into: pre-sized bins, and rows are never adopted.
        self.spanning = spanning

    def _cell(self, t: int, value: str) -> Rollup:
        key = (self.start_ms if self.window_ms is None else bucket_start(t, self.window_ms), value)
        r = self.cells.get(key)
        if r is not None and not isinstance(r, Rollup):
            r = self.cells[key] = rollup_from_row(r)
        if r is None:
            if len(self.cells) >= MAX_CELLS:
                raise QueryError(
                    "group_by" if self.group_by else "window",
                    f"more than {MAX_CELLS} buckets x groups: narrow the range or widen the window",
                )
            r = self.cells[key] = Rollup.spanning() if self.spanning else Rollup()
        return r

    def rollups(self, rows: list[RollupRow]) -> None:
        window, cells = self.window_ms, self.cells
        for t, value, stored in rows:
            key = (self.start_ms if window is None else bucket_start(t, window), value)
            if not self.spanning and key not in cells and len(cells) < MAX_CELLS:
                cells[key] = stored  # kept encoded until needed
            else:
                self._cell(t, value).merge(rollup_from_row(stored))

    def requests(self, rows: list[RequestRow]) -> None:
        group_by = self.group_by
        index = _GROUP_INDEX.get(group_by)
        # Latencies are bucketed per cell once per page (``Metric.add_many``).
        latencies: dict[int, tuple[Rollup, list[float], list[float]]] = {}
        for row in rows:
            failed = row[2]
            if index is not None:
                value: str = row[index]  # type: ignore[assignment]
            else:
                value = status_of(failed) if group_by == "status" else ""
            r = self._cell(row[0], value)
            r.add(failed, *row[8:13], row[13], None, None)
            model, provider, endpoint = row[3], row[4], row[7]
            r.models[model] = r.models.get(model, 0) + 1
            r.providers[provider] = r.providers.get(provider, 0) + 1
            if endpoint:
                r.endpoints[endpoint] = r.endpoints.get(endpoint, 0) + 1
            slot = latencies.get(id(r))
            if slot is None:
                slot = latencies[id(r)] = (r, [], [])
            if row[14] is not None:
                slot[1].append(row[14])
            if row[15] is not None:
                slot[2].append(row[15])
        for r, durations, ttfts in latencies.values():
            r.duration.add_many(durations)
            r.ttft.add_many(ttfts)


def _latency(m: Metric) -> LatencyStats:
    avg, lo, hi, (p50, p95, p99) = m.summary()
    return LatencyStats(count=m.count, avg=avg, min=lo, max=hi, p50=p50, p95=p95, p99=p99)


def _group(r: Rollup, period_start: int, period_end: int, group: str | None) -> AggregateGroup:
    duration = _latency(r.duration)
    return AggregateGroup(
        period_start=period_start,
        period_end=period_end,
        group=group,
        total_requests=r.requests,
        successful_requests=r.requests - r.failed_requests,
        failed_requests=r.failed_requests,
        total_input_tokens=r.input_tokens,
        total_output_tokens=r.output_tokens,
        total_cached_input_tokens=r.cached_input_tokens,
        total_cache_write_input_tokens=r.cache_write_input_tokens,
        total_cost_micros=nanos_to_micros(r.cost_nanos),
        unpriced_requests=r.unpriced_requests,
        avg_duration_ms=duration.avg,
        duration_ms=duration,
        ttft_ms=_latency(r.ttft),
        models_used=r.models,
        backends_used=r.providers,
        endpoints_hit=r.endpoints,
    )


def _decoded(cell: Rollup | StoredRollup) -> Rollup:
    return cell if isinstance(cell, Rollup) else rollup_from_row(cell)


def _result(
    fold: _Fold,
    totals: _Fold | None,
    start_ms: int,
    end_ms: int,
    group_by: GroupBy | None,
    window: Window | None,
    window_ms: int | None,
    source: Source,
) -> AggregateResult:
    if totals is not None:
        cell = next(iter(totals.cells.values()), None)
        total = Rollup() if cell is None else _decoded(cell)
    else:
        total = Rollup.spanning() if len(fold.cells) > 1 else Rollup()
    buckets: list[AggregateGroup] = []
    # Decoded one at a time: only the buckets' answers outlive the loop.
    for (b, value), cell in sorted(fold.cells.items(), key=itemgetter(0)):
        r = _decoded(cell)
        if totals is None:
            total.merge(r)
        lo = b if window_ms is None else max(b, start_ms)
        hi = end_ms if window_ms is None else min(b + window_ms, end_ms)
        buckets.append(_group(r, lo // 1000, -(-hi // 1000), (value or None) if group_by else None))
    whole = _group(total, start_ms // 1000, -(-end_ms // 1000), None)
    return AggregateResult(
        **{f: getattr(whole, f) for f in whole.__struct_fields__},
        group_by=group_by,
        window=window,
        source=source,
        buckets=buckets,
    )


_Row = TypeVar("_Row", RequestRow, RollupRow)


async def _pages(
    fetch: Callable[[Cursor | None], Awaitable[list[_Row]]], fold: Callable[[list[_Row]], None]
) -> None:
    """Fetch keyset pages until exhausted, folding each in a worker thread."""
    after: Cursor | None = None
    while True:
        rows = await fetch(after)
        if not rows:
            return
        await anyio.to_thread.run_sync(fold, rows)
        if len(rows) < PAGE:
            return
        after = (rows[-1][0], rows[-1][1])


async def aggregate(
    storage: QueryStorage,
    start_ms: int,
    end_ms: int,
    *,
    group_by: str | None = None,
    window: str | None = None,
    source: Literal["auto", "rollups", "raw"] = "auto",
) -> AggregateResult:
    """Totals over ``[start_ms, end_ms)``, per ``window`` bucket and ``group_by`` value.

    ``source="auto"`` reads rollups when the storage keeps them, else raw events;
    ``"raw"`` scans every raw event of the range (the exact reference, slow on long
    ranges). Raises ``QueryError`` naming the bad argument: ``end`` before ``start``, an
    unknown ``group_by`` or ``window``, a ``window`` that makes more than ``MAX_BUCKETS``
    buckets, or more than ``MAX_CELLS`` (bucket, group) cells. Storage errors propagate.
    """
    check_range(start_ms, end_ms)
    if group_by is not None and group_by not in GROUP_BY:
        raise QueryError("group_by", f"must be one of {', '.join(GROUP_BY)}")
    window_ms: int | None = None
    if window is not None:
        if window not in WINDOWS:
            raise QueryError("window", f"must be one of {', '.join(WINDOWS)}")
        window_ms = WINDOWS[window]
        if (end_ms - start_ms) // window_ms > MAX_BUCKETS:
            raise QueryError("window", f"makes more than {MAX_BUCKETS} buckets: widen it")
    gb: GroupBy | None = group_by  # type: ignore[assignment]
    win: Window | None = window  # type: ignore[assignment]
    use_rollups = source == "rollups" or (source == "auto" and storage.has_rollups)
    fold = _Fold(start_ms, window_ms, gb)
    # Grouped: the totals come from the all-requests rows, not from merging every group.
    totals = _Fold(start_ms, None, None, spanning=True) if gb and use_rollups else None
    raw_ranges: list[tuple[int, int]]
    if use_rollups:
        p = plan(start_ms, end_ms, window_ms)
        tiers = [(HOUR_MS, p.hours)] if p.hours else []
        tiers += [(MINUTE_MS, r) for r in p.minutes]
        scans = [(gb or "", fold)] + ([("", totals)] if totals is not None else [])
        for period, (lo, hi) in tiers:
            for dim, into in scans:

                async def rollup_page(
                    after: Cursor | None,
                    period: int = period,
                    dim: str = dim,
                    lo: int = lo,
                    hi: int = hi,
                ) -> list[RollupRow]:
                    return await storage.scan_rollups(period, dim, lo, hi, after=after, limit=PAGE)

                await _pages(rollup_page, into.rollups)
        raw_ranges = p.raw
    else:
        raw_ranges = [(start_ms, end_ms)] if start_ms < end_ms else []
    for lo, hi in raw_ranges:

        async def request_page(
            after: Cursor | None, lo: int = lo, hi: int = hi
        ) -> list[RequestRow]:
            return await storage.scan_requests(lo, hi, after=after, limit=PAGE)

        def fold_requests(rows: list[RequestRow]) -> None:
            fold.requests(rows)
            if totals is not None:
                totals.requests(rows)

        await _pages(request_page, fold_requests)
    return _result(
        fold, totals, start_ms, end_ms, gb, win, window_ms, "rollups" if use_rollups else "raw"
    )


async def cost_by(storage: QueryStorage, start_ms: int, end_ms: int, dim: str) -> dict[str, int]:
    """The cost (nano-dollars, exact) of the request events in ``[start_ms, end_ms)`` per
    value of the facet ``dim`` (``""``: every request, under ``""``; ``"model"``,
    ``"agent"``, ``"provider_id"``, ...; an absent agent or API key is ``""``).

    Read like ``aggregate``: whole hours and minutes from rollup rows (only their cost
    column, nothing decoded), the ragged ends from raw events; raw events only where the
    storage keeps no rollups. Raises ``QueryError`` for ``end`` before ``start`` or an
    unknown facet; storage errors propagate.
    """
    check_range(start_ms, end_ms)
    if dim != "" and dim not in _GROUP_INDEX:
        raise QueryError("dim", f"must be one of {', '.join(map(str, _GROUP_INDEX))} or empty")
    totals: dict[str, int] = {}
    if storage.has_rollups:
        p = plan(start_ms, end_ms, None)
        tiers = [(HOUR_MS, p.hours)] if p.hours else []
        tiers += [(MINUTE_MS, r) for r in p.minutes]
        for period, (lo, hi) in tiers:
            after: Cursor | None = None
            while True:
                rows = await storage.scan_rollups(period, dim, lo, hi, after=after, limit=PAGE)
                for _, group, stored in rows:
                    totals[group] = totals.get(group, 0) + stored[_COST_COLUMN]
                if len(rows) < PAGE:
                    break
                after = (rows[-1][0], rows[-1][1])
        raw_ranges = p.raw
    else:
        raw_ranges = [(start_ms, end_ms)] if start_ms < end_ms else []
    index = _GROUP_INDEX.get(dim)
    for lo, hi in raw_ranges:
        cursor: Cursor | None = None
        while True:
            requests = await storage.scan_requests(lo, hi, after=cursor, limit=PAGE)
            for row in requests:
                value = "" if index is None else str(row[index])
                totals[value] = totals.get(value, 0) + int(row[_RAW_COST])
            if len(requests) < PAGE:
                break
            cursor = (requests[-1][0], requests[-1][1])
    return totals

"""What queries answer: msgspec Structs (the HTTP API returns them as they are) and the
validation error every query raises for a bad argument.

The answers are ``gc=False`` Structs: an aggregate or export builds thousands of them,
and they never form reference cycles, so the cyclic collector need not walk them.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

import msgspec

from .._exceptions import LlmTallyError

__all__ = [
    "FORMATS",
    "GROUP_BY",
    "MAX_BUCKETS",
    "MAX_CELLS",
    "MAX_LIMIT",
    "WINDOWS",
    "AggregateGroup",
    "AggregateResult",
    "CorrelationChain",
    "EventPage",
    "EventRecord",
    "ExportFormat",
    "GroupBy",
    "LatencyStats",
    "QueryError",
    "Source",
    "Window",
]

Window: TypeAlias = Literal["1m", "5m", "15m", "1h", "6h", "1d", "1w"]
GroupBy: TypeAlias = Literal["model", "provider", "agent", "provider_id", "endpoint", "status"]
ExportFormat: TypeAlias = Literal["csv", "json", "jsonl"]
Source: TypeAlias = Literal["rollups", "raw"]

WINDOWS: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "6h": 21_600_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
"""Window lengths in milliseconds. Buckets are aligned to the unix epoch (UTC); weeks
start on Monday 00:00 UTC."""
GROUP_BY: Final = ("model", "provider", "agent", "provider_id", "endpoint", "status")
FORMATS: Final = ("csv", "json", "jsonl")
MAX_LIMIT: Final = 1_000
"""The most events one ``events`` page returns."""
MAX_BUCKETS: Final = 10_000
"""The most time buckets one ``aggregate`` may span (range / window)."""
MAX_CELLS: Final = 200_000
"""The most (bucket, group) cells one ``aggregate`` may hold: memory stays bounded."""


class QueryError(LlmTallyError, ValueError):
    """A query argument is invalid; ``parameter`` names it (as the HTTP API spells it)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class EventRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One stored event, flat: the Protocol 012 fields, plus ``timestamp`` (unix seconds,
    as Routiium has it), ``success`` (``None`` for lifecycle and budget events) and, for
    those, their ``payload``; and the envelope (``severity`` resolved to the event type's
    default when the event names none; ``tags`` ``{}`` when it has none)."""

    event_id: str
    event_type: str
    timestamp: int
    timestamp_ms: int
    success: bool | None
    agent_id: str | None = None
    provider_id: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cost_micros: int = 0
    cost_nanos: int = 0
    pricing_status: str | None = None
    duration_ms: float | None = None
    ttft_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    endpoint: str | None = None
    itl_mean_ms: float | None = None
    itl_p95_ms: float | None = None
    output_tokens_per_s: float | None = None
    usage_missing: bool = False
    payload: dict[str, Any] | None = None
    schema_version: str = "1.0.0"
    correlation_id: str | None = None
    parent_event_id: str | None = None
    severity: str = "info"
    environment: str | None = None
    tags: dict[str, str] = {}


class EventPage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A page of events (Routiium's ``/analytics/events`` shape plus ``next_cursor``):
    pass ``next_cursor`` back to get the next page; ``None`` means there is none."""

    events: list[EventRecord]
    count: int
    start: int
    end: int
    next_cursor: str | None = None


class CorrelationChain(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The events sharing one ``correlation_id``, oldest first (``(timestamp_ms,
    event_id)`` order); each names its ``parent_event_id``. ``next_cursor``: more events
    follow (pass it back as ``cursor``); ``None`` means this is the end of the chain."""

    correlation_id: str
    events: list[EventRecord]
    count: int
    next_cursor: str | None = None


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A latency in milliseconds: exact ``count``/``avg``/``min``/``max``; percentiles
    from the log-bucket sketch, within ±1% of the exact sample percentiles."""

    count: int = 0
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class AggregateGroup(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Totals of one time bucket and group (Routiium's ``/analytics/aggregate`` fields,
    extended with cost, cached tokens and percentiles). ``period_start``/``period_end``
    are unix seconds, the bucket clipped to the queried range. ``group`` is the value of
    the ``group_by`` facet (``None`` when not grouped, or for requests without an agent,
    API key or endpoint). ``backends_used`` counts requests per provider,
    ``endpoints_hit`` per endpoint (requests recorded without one are not in it)."""

    period_start: int
    period_end: int
    group: str | None = None
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cached_input_tokens: int = 0
    total_cache_write_input_tokens: int = 0
    total_cost_micros: int = 0
    unpriced_requests: int = 0
    avg_duration_ms: float | None = None
    duration_ms: LatencyStats = LatencyStats()
    ttft_ms: LatencyStats = LatencyStats()
    models_used: dict[str, int] = {}
    backends_used: dict[str, int] = {}
    endpoints_hit: dict[str, int] = {}


class AggregateResult(AggregateGroup, frozen=True, kw_only=True, gc=False):
    """Totals over the whole range (flat, like Routiium's answer), plus ``buckets``: one
    entry per non-empty (window, group), ordered by ``period_start`` then ``group``.
    ``source`` says whether rollups or raw events were read."""

    group_by: GroupBy | None = None
    window: Window | None = None
    source: Source = "rollups"
    buckets: list[AggregateGroup] = []

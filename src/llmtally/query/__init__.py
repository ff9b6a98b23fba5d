"""Queries over a storage: ``events`` (keyset pages), ``aggregate`` (per window and
group, from rollups), ``timeseries`` (one metric per bucket and group, for charts),
``export`` (CSV, JSON or JSON Lines, streamed) and ``correlate`` (the events of one
``correlation_id``).

All take a ``QueryStorage`` (SQLite, PostgreSQL or memory) and times in unix
milliseconds, ranges half-open (``start_ms <= t < end_ms``). A bad argument raises
``QueryError`` naming it; storage errors propagate unchanged.
"""

from __future__ import annotations

from ._types import (
    FORMATS,
    GROUP_BY,
    MAX_BUCKETS,
    MAX_CELLS,
    MAX_LIMIT,
    WINDOWS,
    AggregateGroup,
    AggregateResult,
    CorrelationChain,
    EventPage,
    EventRecord,
    ExportFormat,
    GroupBy,
    LatencyStats,
    QueryError,
    Window,
)
from .aggregate import aggregate
from .correlate import correlate
from .events import events
from .export import CSV_COLUMNS, export, neutralise
from .fill import FILLS, Fill, fill
from .timeseries import (
    AGGREGATIONS,
    METRICS,
    Aggregation,
    Series,
    SeriesMetric,
    TimeSeriesResult,
    timeseries,
)

__all__ = [
    "AGGREGATIONS",
    "CSV_COLUMNS",
    "FILLS",
    "FORMATS",
    "GROUP_BY",
    "MAX_BUCKETS",
    "MAX_CELLS",
    "MAX_LIMIT",
    "METRICS",
    "WINDOWS",
    "AggregateGroup",
    "AggregateResult",
    "Aggregation",
    "CorrelationChain",
    "EventPage",
    "EventRecord",
    "ExportFormat",
    "Fill",
    "GroupBy",
    "LatencyStats",
    "QueryError",
    "Series",
    "SeriesMetric",
    "TimeSeriesResult",
    "Window",
    "aggregate",
    "correlate",
    "events",
    "export",
    "fill",
    "neutralise",
    "timeseries",
]

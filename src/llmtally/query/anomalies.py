"""``anomalies``: the stored ``anomaly_detected`` events of a range, newest first.

The detector (``llmtally.server.detector``) stores one event per (series, metric, episode),
timestamped with the episode's first minute; this reads them back for ``GET
/analytics/anomalies`` and the dashboard (``recent_anomalies``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final, TypeVar

import msgspec

from ..events import AnalyticsEvent, AnomalyDetected
from ..storage.base import DAY_MS, Cursor, EventFilter, QueryStorage
from ._types import MAX_LIMIT, QueryError
from .events import check_range

__all__ = [
    "AnomalyPage",
    "AnomalyRecord",
    "LiveAnomaly",
    "anomalies",
    "live_anomaly",
    "record_of_anomaly",
    "recent_anomalies",
]

_PAGE: Final = 1_000


class AnomalyRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One detected anomaly episode: ``metric`` of the ``dim`` ``value`` (a model or
    provider) had a ``kind`` (``spike``/``drop``) starting in the minute at ``minute_ms``
    (``timestamp``: the same, in unix seconds). ``observed`` (over the
    ``window_minutes`` ending with that minute) and ``baseline`` are per minute in the
    metric's unit (requests/minute, failed/requests, ms, nano-dollars/minute); ``score``
    is the test's z-score."""

    event_id: str
    timestamp: int
    minute_ms: int
    dim: str
    value: str
    metric: str
    kind: str
    observed: int | float
    baseline: int | float
    score: float
    window_minutes: int = 1


class LiveAnomaly(AnomalyRecord, frozen=True, tag="anomaly_detected", tag_field="event_type"):
    """An ``AnomalyRecord`` with ``"event_type": "anomaly_detected"`` (first), as
    ``GET /analytics/live`` sends it (``event: anomaly``), so a reader of mixed lines
    tells it from a request event."""


class AnomalyPage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``GET /analytics/anomalies``: the newest ``limit`` anomalies of the range, newest
    first (``start``/``end`` in unix seconds)."""

    anomalies: list[AnomalyRecord]
    count: int
    start: int
    end: int


_R = TypeVar("_R", bound="AnomalyRecord")


def record_of_anomaly(event: AnalyticsEvent) -> AnomalyRecord | None:
    """The record of an ``anomaly_detected`` event; ``None`` for any other event."""
    return _record(event, AnomalyRecord)


def live_anomaly(event: AnalyticsEvent) -> LiveAnomaly | None:
    """The live stream's form of an ``anomaly_detected`` event; ``None`` for others."""
    return _record(event, LiveAnomaly)


def _record(event: AnalyticsEvent, cls: type[_R]) -> _R | None:
    p = event.payload
    if not isinstance(p, AnomalyDetected):
        return None
    return cls(
        event_id=event.event_id,
        timestamp=p.minute_ms // 1000,
        minute_ms=p.minute_ms,
        dim=p.dim,
        value=p.value,
        metric=p.metric,
        kind=p.kind,
        observed=p.observed,
        baseline=p.baseline,
        score=p.score,
        window_minutes=p.window_minutes,
    )


async def anomalies(
    storage: QueryStorage, start_ms: int, end_ms: int, *, limit: int = 100
) -> AnomalyPage:
    """The newest ``limit`` anomalies judged in ``[start_ms, end_ms)``, newest first.

    Raises ``QueryError`` for ``end`` before ``start`` or ``limit`` outside
    ``1..MAX_LIMIT``. Reads every anomaly of the range (they are few); memory holds at
    most ``limit`` of them. Storage errors propagate."""
    check_range(start_ms, end_ms)
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    flt = EventFilter(start_ms=start_ms, end_ms=end_ms, event_type="anomaly_detected")
    newest: deque[AnomalyRecord] = deque(maxlen=limit)
    after: Cursor | None = None
    while True:
        page = await storage.query_events(flt, after=after, limit=_PAGE)
        newest.extend(r for e in page if (r := record_of_anomaly(e)) is not None)
        if len(page) < _PAGE:
            break
        after = (page[-1].timestamp_ms, page[-1].event_id)
    found = list(reversed(newest))
    return AnomalyPage(
        anomalies=found, count=len(found), start=start_ms // 1000, end=-(-end_ms // 1000)
    )


async def recent_anomalies(
    storage: QueryStorage,
    *,
    now_ms: int | None = None,
    within_ms: int = DAY_MS,
    limit: int = 50,
) -> list[AnomalyRecord]:
    """The newest ``limit`` anomalies of the last ``within_ms`` before ``now_ms``
    (default: the wall clock), newest first — what a dashboard shows."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    page = await anomalies(storage, max(0, now - within_ms), now + 1, limit=limit)
    return page.anomalies

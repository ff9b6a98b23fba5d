"""The detector loop over real storage (SQLite, PostgreSQL): judges closed minutes of the
minute rollups, stores each anomaly episode once — across passes and restarts — and lists
them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from llmtally.analysis.anomaly import DetectorConfig
from llmtally.events import AnalyticsEvent, AnomalyDetected
from llmtally.query.anomalies import anomalies, recent_anomalies
from llmtally.server.detector import anomaly_event_id, run_detector
from llmtally.storage.base import QueryStorage
from llmtally.storage.rollups import MINUTE_MS

from ..storage.backends import storage
from ..storage.factory import T0, request

__all__ = ["storage"]

SPIKE = 80  # the minute with 6x the traffic
SETTLE_S = 90.0


def traffic(spike_minutes: int = 1) -> list[AnalyticsEvent]:
    """90 minutes of 25-35 requests/minute of one model, and 180 in the
    ``spike_minutes`` from minute ``SPIKE``."""
    events = []
    for m in range(90):
        n = 180 if SPIKE <= m < SPIKE + spike_minutes else 25 + (m * 7) % 11
        events += [
            request(T0 + m * MINUTE_MS + i * 300, duration_ms=300.0 + (i * 37) % 50)
            for i in range(n)
        ]
    return events


class _Stop(Exception):
    pass


async def _stop(seconds: float) -> None:
    raise _Stop


async def one_pass(storage: QueryStorage, now_ms: int, **kw: object) -> list[AnalyticsEvent]:
    """One pass of the loop at ``now_ms``: what it stored."""
    stored: list[AnalyticsEvent] = []
    sleep: Callable[[float], Awaitable[None]] = _stop
    with pytest.raises(_Stop):
        await run_detector(
            storage,
            clock=lambda: now_ms / 1000,
            sleep=sleep,
            settle_s=SETTLE_S,
            on_pass=stored.extend,
            **kw,  # type: ignore[arg-type]
        )
    return stored


async def test_a_spike_is_found_stored_once_and_listed(storage: QueryStorage) -> None:
    await storage.ingest(traffic())
    now_ms = T0 + 90 * MINUTE_MS + int(SETTLE_S * 1000) + 5_000  # minute 89 just closed
    stored = await one_pass(storage, now_ms)
    found = {(e.payload.dim, e.payload.metric, e.payload.kind, e.timestamp_ms) for e in stored}  # type: ignore[union-attr]
    spike_ms = T0 + SPIKE * MINUTE_MS
    assert found == {
        (dim, metric, "spike", spike_ms)
        for dim in ("model", "provider")
        for metric in ("request_rate", "cost_rate")
    }
    for e in stored:
        p = e.payload
        assert isinstance(p, AnomalyDetected)
        assert e.event_id == anomaly_event_id(p.dim, p.value, p.metric, p.minute_ms)
        assert p.window_minutes == 1
        assert p.observed == (180 if p.metric == "request_rate" else 180 * 1_000)
        assert p.baseline < 40 * (1 if p.metric == "request_rate" else 1_000)
    # A restart judges the same minutes again: nothing new is stored.
    assert await one_pass(storage, now_ms) == []
    page = await anomalies(storage, T0, now_ms)
    assert page.count == 4
    assert all(
        a.minute_ms == spike_ms and a.value in ("gpt-4o-mini", "openai") for a in page.anomalies
    )
    recent = await recent_anomalies(storage, now_ms=now_ms, limit=2)
    assert len(recent) == 2


async def test_open_minutes_and_warm_up_are_not_judged(storage: QueryStorage) -> None:
    await storage.ingest(traffic())
    # The spike minute ended 30 s ago: not settled yet.
    assert await one_pass(storage, T0 + (SPIKE + 1) * MINUTE_MS + 30_000) == []
    # A baseline longer than the history: still warming up.
    cfg = DetectorConfig(baseline_minutes=120, warmup_minutes=100)
    assert await one_pass(storage, T0 + 90 * MINUTE_MS + 100_000, config=cfg) == []
    # Now settled, with the default configuration.
    assert len(await one_pass(storage, T0 + (SPIKE + 1) * MINUTE_MS + 95_000)) == 4


async def test_an_episode_over_several_passes_is_stored_once(storage: QueryStorage) -> None:
    await storage.ingest(traffic(spike_minutes=6))
    settled = int(SETTLE_S * 1000) + 5_000
    first = await one_pass(storage, T0 + (SPIKE + 1) * MINUTE_MS + settled)
    assert {e.timestamp_ms for e in first} == {T0 + SPIKE * MINUTE_MS}
    assert len(first) == 4
    # Later passes (and restarts) judge the episode's other minutes: nothing new.
    for end in range(SPIKE + 2, 90):
        assert await one_pass(storage, T0 + end * MINUTE_MS + settled) == []
    page = await anomalies(storage, T0, T0 + 90 * MINUTE_MS)
    assert page.count == 4


def test_anomaly_ids_are_deterministic_time_ordered_uuids() -> None:
    a = anomaly_event_id("model", "gpt-4o", "request_rate", T0)
    assert a == anomaly_event_id("model", "gpt-4o", "request_rate", T0)
    assert a != anomaly_event_id("model", "gpt-4o", "cost_rate", T0)
    assert a < anomaly_event_id("model", "gpt-4o", "request_rate", T0 + MINUTE_MS)
    assert len(a) == 36 and a[14] == "8" and a[19] in "89ab"
    assert int(a[:8] + a[9:13], 16) == T0

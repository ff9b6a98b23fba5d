"""The anomaly detector's loop: judge each closed minute of each model and provider, store
each anomaly episode as one ``anomaly_detected`` event. The collector runs it in its
lifespan.

Every ``interval_s`` the loop judges the minutes that closed since its last pass: a
minute is closed ``settle_s`` after it ends (routers sync every 30 s, so a minute's events
arrive up to then). It reads the minute rollups of those minutes and of the history the
detector needs before them (``DetectorConfig.history_minutes`` plus
``episode_gap_minutes``; ``scan_rollups``, ``dim`` ``model`` and ``provider``), and finds
the episodes that start in them with ``llmtally.analysis.anomaly.episodes`` in a worker
thread.

Idempotent: an anomaly's event id is derived from (dim, value, metric, episode start
minute) (``anomaly_event_id``), the episodes are a pure function of the rollups, and
``storage.ingest`` stores each id once — so a restart that judges the same minutes again,
or several collector replicas judging the same minutes, store each anomaly once. After a
start (or a failed pass) it catches up on at most ``catch_up_minutes``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, NoReturn

import anyio

from ..analysis.anomaly import DetectorConfig, Finding, MinuteSample, episodes
from ..events import AnalyticsEvent, AnomalyDetected
from ..storage.base import Cursor, QueryStorage, RollupRow
from ..storage.rollups import MINUTE_MS, rollup_from_row

__all__ = [
    "DEFAULT_CATCH_UP_MINUTES",
    "DEFAULT_DETECT_INTERVAL_S",
    "DEFAULT_SETTLE_S",
    "DIMS",
    "MAX_SERIES",
    "anomaly_event",
    "anomaly_event_id",
    "detect_minutes",
    "run_detector",
]

DEFAULT_DETECT_INTERVAL_S: Final = 60.0
DEFAULT_SETTLE_S: Final = 90.0
DEFAULT_CATCH_UP_MINUTES: Final = 60
DIMS: Final = ("model", "provider")
MAX_SERIES: Final = 1_000
"""Series judged per dimension and pass; the rest are skipped (and logged)."""
_PAGE: Final = 5_000

logger: Final = logging.getLogger("llmtally.server.detector")


def anomaly_event_id(dim: str, value: str, metric: str, minute_ms: int) -> str:
    """A deterministic, time-ordered UUID (version 8, RFC 9562) for one anomaly: the
    minute's unix milliseconds in the first 48 bits, like the UUIDv7 event ids, then 74
    bits of SHA-256 over the series and metric."""
    digest = hashlib.sha256(f"{dim}\0{value}\0{metric}\0{minute_ms}".encode()).hexdigest()
    t = f"{minute_ms:012x}"
    variant = "89ab"[int(digest[3], 16) % 4]
    return f"{t[:8]}-{t[8:]}-8{digest[:3]}-{variant}{digest[4:7]}-{digest[7:19]}"


def anomaly_event(dim: str, value: str, minute_ms: int, finding: Finding) -> AnalyticsEvent:
    """The ``anomaly_detected`` event of an episode that starts with ``finding`` in the
    minute at ``minute_ms``."""
    return AnalyticsEvent(
        event_id=anomaly_event_id(dim, value, finding.metric, minute_ms),
        timestamp_ms=minute_ms,
        payload=AnomalyDetected(
            dim=dim,
            value=value,
            metric=finding.metric,
            kind=finding.kind,
            minute_ms=minute_ms,
            observed=finding.observed,
            baseline=finding.baseline,
            score=round(finding.score, 3),
            window_minutes=finding.window,
        ),
    )


def _judge_rows(
    dim: str,
    rows: Sequence[RollupRow],
    read_from: int,
    lo_ms: int,
    hi_ms: int,
    config: DetectorConfig,
) -> list[AnalyticsEvent]:
    """The anomaly episodes starting in ``[lo_ms, hi_ms)`` of every series in ``rows``
    (which hold the minutes from ``read_from``)."""
    series: dict[str, dict[int, MinuteSample]] = {}
    for start_ms, value, stored in rows:
        per_minute = series.get(value)
        if per_minute is None:
            if len(series) >= MAX_SERIES:
                continue
            per_minute = series[value] = {}
        r = rollup_from_row(stored)
        p95 = r.duration.percentiles()[1] if r.duration.count else None
        per_minute[start_ms] = MinuteSample(
            r.requests, r.failed_requests, r.cost_nanos, p95, r.duration.count
        )
    if len(series) >= MAX_SERIES:
        logger.warning("more than %d %s series: only the first are judged", MAX_SERIES, dim)
    out: list[AnalyticsEvent] = []
    judged = (hi_ms - lo_ms) // MINUTE_MS
    for value, samples in series.items():
        history = [samples.get(m) for m in range(read_from, hi_ms, MINUTE_MS)]
        out.extend(
            anomaly_event(dim, value, read_from + e.start * MINUTE_MS, e.finding)
            for e in episodes(history, config, judged=judged)
        )
    return out


async def detect_minutes(
    storage: QueryStorage,
    lo_ms: int,
    hi_ms: int,
    config: DetectorConfig,
    *,
    dims: Sequence[str] = DIMS,
) -> list[AnalyticsEvent]:
    """The ``anomaly_detected`` events of the episodes that start in ``[lo_ms, hi_ms)``
    (minute aligned), oldest first per series; nothing is stored. Storage errors
    propagate."""
    out: list[AnalyticsEvent] = []
    if lo_ms >= hi_ms:
        return out
    before = config.history_minutes + config.episode_gap_minutes
    read_from = lo_ms - before * MINUTE_MS
    for dim in dims:
        rows: list[RollupRow] = []
        after: Cursor | None = None
        while True:
            page = await storage.scan_rollups(
                MINUTE_MS, dim, read_from, hi_ms, after=after, limit=_PAGE
            )
            rows.extend(page)
            if len(page) < _PAGE:
                break
            after = (page[-1][0], page[-1][1])
        out.extend(
            await anyio.to_thread.run_sync(_judge_rows, dim, rows, read_from, lo_ms, hi_ms, config)
        )
    return out


async def run_detector(
    storage: QueryStorage,
    *,
    config: DetectorConfig | None = None,
    interval_s: float = DEFAULT_DETECT_INTERVAL_S,
    settle_s: float = DEFAULT_SETTLE_S,
    catch_up_minutes: int = DEFAULT_CATCH_UP_MINUTES,
    write_lock: anyio.Lock | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    on_pass: Callable[[list[AnalyticsEvent]], None] | None = None,
) -> NoReturn:
    """Judge closed minutes now and every ``interval_s`` seconds until cancelled, storing
    new anomalies with ``storage.ingest`` (under ``write_lock``, shared with the ingest
    route). Never raises a storage error (it is logged; the next pass retries those
    minutes). ``clock`` gives unix seconds; ``on_pass`` is called with the anomalies
    each pass stored (for tests and live views)."""
    if interval_s <= 0 or settle_s < 0 or catch_up_minutes < 1:
        raise ValueError("interval_s must be positive, settle_s >= 0, catch_up_minutes >= 1")
    cfg = config or DetectorConfig()
    lock = write_lock or anyio.Lock()
    done_until: int | None = None
    while True:
        now_ms = int(clock() * 1000)
        closed = (now_ms - int(settle_s * 1000)) // MINUTE_MS * MINUTE_MS
        lo = closed - catch_up_minutes * MINUTE_MS
        if done_until is not None:
            lo = max(lo, done_until)
        if lo < closed:
            try:
                found = await detect_minutes(storage, lo, closed, cfg)
                stored: list[AnalyticsEvent] = []
                if found:
                    async with lock:
                        with anyio.CancelScope(shield=True):
                            stored = (await storage.ingest(found)).inserted
            except Exception:
                logger.warning("anomaly detection pass failed; retrying", exc_info=True)
            else:
                done_until = closed
                for e in stored:
                    p = e.payload
                    assert isinstance(p, AnomalyDetected)
                    logger.warning(
                        "anomaly: %s %s of %s %s at %d: %s (baseline %s)",
                        p.metric,
                        p.kind,
                        p.dim,
                        p.value,
                        p.minute_ms // 1000,
                        p.observed,
                        p.baseline,
                    )
                if on_pass is not None:
                    on_pass(stored)
        await sleep(interval_s)

"""Anomaly detection on per-minute series: robust z-scores against a trailing baseline.

Pure and synchronous. A series is one model's (or provider's) per-minute traffic; each
minute is judged against the ``baseline_minutes`` before it, on four metrics:

=================  =======================================================================
``request_rate``   requests in the minute (a minute without a row is 0)
``error_rate``     failed / requests in the minute
``p95_latency_ms`` the minute's p95 request duration (minutes with enough samples only)
``cost_rate``      cost of the minute in nano-dollars (an integer; a minute without a row
                   is 0)
=================  =======================================================================

The baseline is the median of the window and the scale its MAD (× 1.4826, the normal
consistency constant), floored by the noise the metric must have anyway: √median for
counts (Poisson), the binomial √(p(1-p)/n) for the error rate (``p`` pooled over the
middle 60% of the window's minutes, so that neither bursts nor lulls move it), and a
fraction (``relative_floor``) of the median for latency and cost. Medians ignore up to
half the window being anomalous, so an ongoing spike does not become its own baseline
for ``baseline_minutes / 2`` minutes.

A minute is a *spike* when its robust z-score is at least ``sensitivity`` **and** it is
at least ``min_ratio`` times the baseline; a *drop* when both hold downwards. Both
conditions must hold: the z-score keeps Poisson noise at low volume quiet, the ratio keeps
tiny-but-significant wiggles at high volume quiet. Nothing is judged before
``warmup_minutes`` of the window have traffic, nor below the minimum volume
(``min_requests`` per minute: the baseline's for drops, the larger of the minute's and the
baseline's for spikes; error-rate spikes also need ``min_errors`` failed requests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median, median_low
from typing import Final, Literal, NamedTuple, TypeAlias

import msgspec

__all__ = [
    "ANOMALY_METRICS",
    "AnomalyKind",
    "AnomalyMetric",
    "DetectorConfig",
    "Finding",
    "MinuteSample",
    "judge",
]

AnomalyMetric: TypeAlias = Literal["request_rate", "error_rate", "p95_latency_ms", "cost_rate"]
AnomalyKind: TypeAlias = Literal["spike", "drop"]
ANOMALY_METRICS: Final = ("request_rate", "error_rate", "p95_latency_ms", "cost_rate")

_MAD_TO_SIGMA: Final = 1.4826
_TRIM: Final = 0.2  # error-rate baseline: pool the minutes between these quantiles of rate


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the detector judges a minute (see the module docstring). Raises
    ``ValueError`` for values that make no sense."""

    baseline_minutes: int = 60
    warmup_minutes: int = 30
    sensitivity: float = 5.0
    min_ratio: float = 2.0
    min_requests: int = 20
    min_errors: int = 5
    min_latency_samples: int = 20
    relative_floor: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.warmup_minutes <= self.baseline_minutes:
            raise ValueError("warmup_minutes must be between 1 and baseline_minutes")
        if self.sensitivity <= 0 or self.min_ratio <= 1 or self.relative_floor < 0:
            raise ValueError("sensitivity must be > 0, min_ratio > 1, relative_floor >= 0")
        if self.min_requests < 1 or self.min_errors < 1 or self.min_latency_samples < 1:
            raise ValueError("minimum volumes must be at least 1")


class MinuteSample(NamedTuple):
    """One minute of one series (what its minute rollup row holds)."""

    requests: int
    failed: int = 0
    cost_nanos: int = 0
    p95_ms: float | None = None
    latency_samples: int = 0


class Finding(NamedTuple):
    """One metric of the judged minute left its baseline. ``score`` is the robust
    z-score (negative for drops); ``observed``/``baseline`` are integers for cost."""

    metric: AnomalyMetric
    kind: AnomalyKind
    observed: int | float
    baseline: int | float
    score: float


_EMPTY: Final = MinuteSample(0)


def _mad(xs: Sequence[float], center: float) -> float:
    return _MAD_TO_SIGMA * median(abs(x - center) for x in xs)


def _verdict(
    metric: AnomalyMetric,
    x: float,
    base: float,
    scale: float,
    cfg: DetectorConfig,
    *,
    spike_ok: bool,
    drop_ok: bool,
) -> Finding | None:
    if scale <= 0:
        return None
    z = (x - base) / scale
    if spike_ok and z >= cfg.sensitivity and x >= cfg.min_ratio * base:
        return Finding(metric, "spike", x, base, z)
    if drop_ok and z <= -cfg.sensitivity and x * cfg.min_ratio <= base:
        return Finding(metric, "drop", x, base, z)
    return None


def _error_rate(
    now: MinuteSample, window: Sequence[MinuteSample], cfg: DetectorConfig
) -> Finding | None:
    n = now.requests
    busy = [m for m in window if m.requests >= cfg.min_requests]
    if n < cfg.min_requests or len(busy) < cfg.warmup_minutes:
        return None
    busy.sort(key=lambda m: m.failed / m.requests)
    cut = int(len(busy) * _TRIM)
    middle = busy[cut : len(busy) - cut]
    pooled_n = sum(m.requests for m in middle)
    p0 = sum(m.failed for m in middle) / pooled_n
    rates = [m.failed / m.requests for m in busy]
    p = max(p0, 0.5 / pooled_n)  # never a zero-width binomial
    scale = max(_mad(rates, median(rates)), math.sqrt(p * (1 - p) / n))
    x = now.failed / n
    return _verdict(
        "error_rate",
        x,
        p0,
        scale,
        cfg,
        spike_ok=now.failed >= cfg.min_errors,
        drop_ok=n * p0 >= cfg.min_errors,
    )


def _latency(
    now: MinuteSample, window: Sequence[MinuteSample], cfg: DetectorConfig
) -> Finding | None:
    if now.p95_ms is None or now.latency_samples < cfg.min_latency_samples:
        return None
    xs = [
        m.p95_ms
        for m in window
        if m.p95_ms is not None and m.latency_samples >= cfg.min_latency_samples
    ]
    if len(xs) < cfg.warmup_minutes:
        return None
    base = median(xs)
    scale = max(_mad(xs, base), cfg.relative_floor * base)
    return _verdict("p95_latency_ms", now.p95_ms, base, scale, cfg, spike_ok=True, drop_ok=True)


def judge(history: Sequence[MinuteSample | None], config: DetectorConfig) -> list[Finding]:
    """What is anomalous about the last minute of ``history``, judged against the (at
    most ``baseline_minutes``) minutes before it. ``None`` is a minute without requests.
    Returns ``[]`` during warm-up and below the minimum volume."""
    if not history:
        return []
    cfg = config
    now = history[-1] or _EMPTY
    window = [m or _EMPTY for m in history[-1 - cfg.baseline_minutes : -1]]
    if sum(1 for m in window if m.requests) < cfg.warmup_minutes:
        return []
    counts = [m.requests for m in window]
    base_n = median(counts)
    spike_ok = max(now.requests, base_n) >= cfg.min_requests
    drop_ok = base_n >= cfg.min_requests
    found: list[Finding] = []
    rate = _verdict(
        "request_rate",
        now.requests,
        base_n,
        max(_mad(counts, base_n), math.sqrt(max(base_n, 1.0))),
        cfg,
        spike_ok=spike_ok,
        drop_ok=drop_ok,
    )
    if rate is not None:
        found.append(rate)
    for finding in (_error_rate(now, window, cfg), _latency(now, window, cfg)):
        if finding is not None:
            found.append(finding)
    costs = [m.cost_nanos for m in window]
    base_cost = median_low(costs)
    cost = _verdict(
        "cost_rate",
        now.cost_nanos,
        base_cost,
        max(_mad(costs, base_cost), cfg.relative_floor * base_cost),
        cfg,
        spike_ok=spike_ok,
        drop_ok=drop_ok,
    )
    if cost is not None:
        found.append(cost)
    return found

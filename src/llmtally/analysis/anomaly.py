"""Anomaly detection on per-minute series: count-based tests of trailing windows against a
robust baseline, one anomaly per episode.

Pure, synchronous and deterministic. A series is one model's (or provider's) per-minute
traffic (``None`` or a missing minute: no requests). Four metrics:

=================  =======================================================================
``request_rate``   requests per minute
``error_rate``     failed / requests
``p95_latency_ms`` p95 request duration (minutes with a few samples only)
``cost_rate``      cost per minute in nano-dollars (reported as integers)
=================  =======================================================================

**Windows.** Minute ``t`` is judged on each trailing window of ``windows`` minutes ending
at ``t`` (default 1, 3, 5, 10 and 15): one minute catches a sharp spike; pooling several
minutes catches a sustained change too small to see in one minute (a 5% → 1% error rate
at 60 requests/minute). Each window is compared with the same **baseline**: the
``baseline_minutes`` before the longest window, so an episode as long as that window
never leaks into its own baseline, and medians ignore up to half the baseline being
anomalous.

**Tests.** Counts are tested as counts, not as noisy per-minute ratios, with the signed
root of the likelihood-ratio (deviance) statistic — close to a normal z-score, exact in
its tails for small counts, O(1) to compute:

- requests: Poisson, mean = window × the baseline's median requests/minute, quasi-Poisson
  dispersion from the baseline's minute-to-minute differences (at least 1, Poisson);
- failures: binomial over the window's requests, ``p`` = the median of the failure rates
  of six blocks of the baseline (robust to an error burst in it);
- cost: quasi-Poisson in "cost units" (variance/mean of the baseline's minute costs, the
  compound-Poisson scale; a minute's spread is at least ``relative_floor`` of its median);
- p95 latency: a z-score of the window's mean log p95 against the baseline's median log
  p95 and its MAD (at least ``log1p(relative_floor)``).

Each statistic is deflated by the uncertainty of the baseline itself (its variance grows
with window/baseline length), so longer windows are not overconfident.

A window is a *spike* when its score is at least ``sensitivity`` **and** it is at least
``min_ratio`` times the baseline; a *drop* when both hold downwards. The score keeps noise
at low volume quiet; the ratio keeps tiny-but-significant wiggles (and a baseline lagging a
daily trend) quiet at high volume. A one-minute window needs ``single_minute_margin`` more
score: it is tested most often and pools nothing, so its noise is the least normal (one
costly request, a burst); longer windows are the persistence requirement. Per metric and
direction the strongest window wins.

**Minimum volume** (per window, so a quiet series is judged on its pooled windows):
requests and cost need ``min_requests`` requests expected in the window (drops) or the
larger of observed and expected (spikes); error-rate spikes also need ``min_errors``
failures, error-rate drops ``min_errors`` expected failures; latency needs
``min_latency_samples`` samples in the window, from minutes of at least a quarter of that.
Nothing is judged until ``warmup_minutes`` of the baseline have traffic; the baseline
starts at the series' first request in it. Statistically, a 5× drop of a count is only
visible when the baseline expects about 40 events (38 requests or failures, found 9 times
in 10 by an ideal test at sensitivity 5) over the drop; a 5× spike needs about 6. A 5%
error rate falling to 1% for 10 minutes is therefore visible from about 76 requests/minute,
for 3 minutes from about 250; below that no test can tell it from noise without many false
alarms (``bench/README.md``).

**Episodes** (``episodes``): consecutive flagged minutes of one metric and direction, with
gaps shorter than ``episode_gap_minutes``, are one episode, reported once at its first
minute — a pure function of the data, so judging the same minutes again (a restart,
another replica) finds the same episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from statistics import median, median_low
from typing import Final, Literal, NamedTuple, TypeAlias

import msgspec

__all__ = [
    "ANOMALY_METRICS",
    "AnomalyKind",
    "AnomalyMetric",
    "DetectorConfig",
    "Episode",
    "Finding",
    "MinuteSample",
    "episodes",
    "judge",
]

AnomalyMetric: TypeAlias = Literal["request_rate", "error_rate", "p95_latency_ms", "cost_rate"]
AnomalyKind: TypeAlias = Literal["spike", "drop"]
ANOMALY_METRICS: Final = ("request_rate", "error_rate", "p95_latency_ms", "cost_rate")

_MAD_TO_SIGMA: Final = 1.4826
_MEDIAN_VARIANCE: Final = math.pi / 2  # variance of a median over that of a mean (normal)
_ERROR_BLOCKS: Final = 6


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the detector judges a minute (see the module docstring). Raises
    ``ValueError`` for values that make no sense."""

    baseline_minutes: int = 60
    warmup_minutes: int = 30
    windows: tuple[int, ...] = (1, 3, 5, 10, 15)
    sensitivity: float = 5.0
    min_ratio: float = 2.0
    min_requests: int = 20
    min_errors: int = 5
    min_latency_samples: int = 20
    single_minute_margin: float = 1.0
    relative_floor: float = 0.1
    episode_gap_minutes: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.warmup_minutes <= self.baseline_minutes:
            raise ValueError("warmup_minutes must be between 1 and baseline_minutes")
        if not self.windows or any(not 1 <= w <= self.baseline_minutes for w in self.windows):
            raise ValueError("windows must be between 1 and baseline_minutes minutes")
        if self.sensitivity <= 0 or self.min_ratio <= 1 or self.relative_floor < 0:
            raise ValueError("sensitivity must be > 0, min_ratio > 1, relative_floor >= 0")
        if self.single_minute_margin < 0:
            raise ValueError("single_minute_margin must be >= 0")
        if self.min_requests < 1 or self.min_errors < 1 or self.min_latency_samples < 1:
            raise ValueError("minimum volumes must be at least 1")
        if self.episode_gap_minutes < 1:
            raise ValueError("episode_gap_minutes must be at least 1")

    @property
    def history_minutes(self) -> int:
        """Minutes of history ``judge`` looks at: the baseline, then the longest window."""
        return self.baseline_minutes + max(self.windows)


class MinuteSample(NamedTuple):
    """One minute of one series (what its minute rollup row holds)."""

    requests: int
    failed: int = 0
    cost_nanos: int = 0
    p95_ms: float | None = None
    latency_samples: int = 0


class Finding(NamedTuple):
    """One metric of the judged minute's trailing ``window`` minutes left its baseline.
    ``observed``/``baseline`` are per minute (integers for cost); ``score`` is the
    z-score equivalent of the test (negative for drops)."""

    metric: AnomalyMetric
    kind: AnomalyKind
    observed: int | float
    baseline: int | float
    score: float
    window: int = 1


class Episode(NamedTuple):
    """An anomaly episode that starts at index ``start`` of the history, and what was
    found in its first minute."""

    start: int
    finding: Finding


_EMPTY: Final = MinuteSample(0)


def _mad(xs: Sequence[float], center: float) -> float:
    return _MAD_TO_SIGMA * median(abs(x - center) for x in xs)


def _diff_variance(xs: Sequence[float]) -> float:
    """Robust minute-to-minute variance (half the variance of first differences), blind
    to a slow trend."""
    diffs = [b - a for a, b in pairwise(xs)]
    return _mad(diffs, median(diffs)) ** 2 / 2


def _poisson_z(x: float, mu: float) -> float:
    """Signed root of the Poisson deviance of ``x`` against mean ``mu``, with a
    continuity correction towards ``mu``."""
    x = max(mu, x - 0.5) if x > mu else min(mu, x + 0.5)
    d = 2 * (x * math.log(x / mu) - (x - mu)) if x > 0 else 2 * mu
    return math.copysign(math.sqrt(max(d, 0.0)), x - mu)


def _binomial_z(k: float, n: int, p: float) -> float:
    """Signed root of the binomial deviance of ``k`` of ``n`` against rate ``p``."""
    mu = n * p
    k = max(mu, k - 0.5) if k > mu else min(mu, k + 0.5)
    d = 0.0
    if k > 0:
        d += k * math.log(k / mu)
    if n - k > 0:
        d += (n - k) * math.log((n - k) / (n - mu))
    return math.copysign(math.sqrt(max(2 * d, 0.0)), k - mu)


class _Baseline(NamedTuple):
    requests: float  # median requests/minute
    request_dispersion: float  # quasi-Poisson variance/mean, >= 1
    cost: int  # median cost/minute
    cost_unit: float  # variance/mean of the minute cost (0: no cost)
    error_p: float | None  # failure rate, None below volume
    error_requests: int  # requests behind error_p
    log_p95: float | None
    log_p95_scale: float
    latency_minutes: int


def _baseline(window: Sequence[MinuteSample], cfg: DetectorConfig) -> _Baseline:
    counts = [m.requests for m in window]
    base_n = median(counts)
    dispersion = max(1.0, _diff_variance(counts) / base_n) if base_n > 0 else 1.0
    costs = [m.cost_nanos for m in window]
    base_cost = median_low(costs)
    cost_var = max(_diff_variance(costs), (cfg.relative_floor * base_cost) ** 2)
    cost_unit = cost_var / base_cost if base_cost > 0 else 0.0
    m = len(window)
    rates = []
    for b in range(_ERROR_BLOCKS):
        block = window[b * m // _ERROR_BLOCKS : (b + 1) * m // _ERROR_BLOCKS]
        n = sum(s.requests for s in block)
        if n:
            rates.append(sum(s.failed for s in block) / n)
    total = sum(counts)
    error_p = median(rates) if len(rates) >= _ERROR_BLOCKS // 2 else None
    if error_p is not None:
        error_p = max(error_p, 0.5 / total)  # never a zero-width binomial
    per_minute = max(1, cfg.min_latency_samples // 4)
    logs = [
        math.log(s.p95_ms)
        for s in window
        if s.p95_ms is not None and s.p95_ms > 0 and s.latency_samples >= per_minute
    ]
    log_p95 = median(logs) if len(logs) >= cfg.warmup_minutes else None
    scale = math.log1p(cfg.relative_floor)
    if log_p95 is not None:
        scale = max(scale, _mad(logs, log_p95))
    return _Baseline(
        base_n, dispersion, base_cost, cost_unit, error_p, total, log_p95, scale, len(logs)
    )


def _verdict(
    metric: AnomalyMetric,
    window: int,
    observed: float,
    base: float,
    z: float,
    cfg: DetectorConfig,
    *,
    spike_ok: bool,
    drop_ok: bool,
) -> Finding | None:
    """A finding when the score and the ratio both clear their thresholds."""
    threshold = cfg.sensitivity + (cfg.single_minute_margin if window == 1 else 0.0)
    if spike_ok and z >= threshold and observed >= cfg.min_ratio * base:
        return Finding(metric, "spike", observed, base, z, window)
    if drop_ok and z <= -threshold and observed * cfg.min_ratio <= base:
        return Finding(metric, "drop", observed, base, z, window)
    return None


class _Tally(NamedTuple):
    """The trailing window's sums."""

    minutes: int = 0
    requests: int = 0
    failed: int = 0
    cost: int = 0
    latency_minutes: int = 0
    latency_samples: int = 0
    log_p95_sum: float = 0.0  # sample-weighted

    def add(self, m: MinuteSample, per_minute: int) -> _Tally:
        """These sums and minute ``m`` (its p95 counts with ``per_minute`` samples)."""
        lat_minutes, lat_samples, log_sum = 0, 0, 0.0
        if m.p95_ms is not None and m.p95_ms > 0 and m.latency_samples >= per_minute:
            lat_minutes, lat_samples = 1, m.latency_samples
            log_sum = m.latency_samples * math.log(m.p95_ms)
        return _Tally(
            self.minutes + 1,
            self.requests + m.requests,
            self.failed + m.failed,
            self.cost + m.cost_nanos,
            self.latency_minutes + lat_minutes,
            self.latency_samples + lat_samples,
            self.log_p95_sum + log_sum,
        )


def _judge_window(
    tally: _Tally, base: _Baseline, m: int, cfg: DetectorConfig
) -> list[Finding | None]:
    w, n = tally.minutes, tally.requests
    deflate = math.sqrt(1 + _MEDIAN_VARIANCE * w / m)  # the baseline's own uncertainty
    expected_n = base.requests * w
    spike_ok = max(n, expected_n) >= cfg.min_requests
    drop_ok = expected_n >= cfg.min_requests
    out: list[Finding | None] = []
    if expected_n > 0:
        phi = base.request_dispersion
        z = _poisson_z(n / phi, expected_n / phi) / deflate
        out.append(
            _verdict(
                "request_rate", w, n / w, base.requests, z, cfg, spike_ok=spike_ok, drop_ok=drop_ok
            )
        )
    if base.error_p is not None and n >= cfg.min_requests:
        p = base.error_p
        z = _binomial_z(tally.failed, n, p)
        z /= math.sqrt(1 + _MEDIAN_VARIANCE * n / base.error_requests)
        ok_spike, ok_drop = tally.failed >= cfg.min_errors, n * p >= cfg.min_errors
        out.append(
            _verdict(
                "error_rate", w, tally.failed / n, p, z, cfg, spike_ok=ok_spike, drop_ok=ok_drop
            )
        )
    if base.log_p95 is not None and tally.latency_samples >= cfg.min_latency_samples:
        x = tally.log_p95_sum / tally.latency_samples
        spread = base.log_p95_scale * math.sqrt(
            1 / tally.latency_minutes + _MEDIAN_VARIANCE / base.latency_minutes
        )
        z = (x - base.log_p95) / spread
        observed, baseline = math.exp(x), math.exp(base.log_p95)
        out.append(
            _verdict("p95_latency_ms", w, observed, baseline, z, cfg, spike_ok=True, drop_ok=True)
        )
    if base.cost_unit > 0:
        unit = base.cost_unit
        z = _poisson_z(tally.cost / unit, base.cost * w / unit) / deflate
        out.append(
            _verdict(
                "cost_rate",
                w,
                tally.cost // w,
                base.cost,
                z,
                cfg,
                spike_ok=spike_ok,
                drop_ok=drop_ok,
            )
        )
    return out


def _judge_at(history: Sequence[MinuteSample | None], t: int, cfg: DetectorConfig) -> list[Finding]:
    longest = max(cfg.windows)
    lo = max(0, t + 1 - longest - cfg.baseline_minutes)
    window = [m or _EMPTY for m in history[lo : max(lo, t + 1 - longest)]]
    # Minutes before a series' first request are not zeros: it did not exist yet (or
    # was idle long enough to warm up again).
    first = next((i for i, m in enumerate(window) if m.requests), len(window))
    window = window[first:]
    if sum(1 for m in window if m.requests) < cfg.warmup_minutes:
        return []
    base = _baseline(window, cfg)
    per_minute = max(1, cfg.min_latency_samples // 4)
    best: dict[tuple[str, str], Finding] = {}
    tally = _Tally()
    for i in range(longest):
        tally = tally.add(history[t - i] or _EMPTY, per_minute)
        if tally.minutes not in cfg.windows:
            continue
        for f in _judge_window(tally, base, len(window), cfg):
            if f is None:
                continue
            key = (f.metric, f.kind)
            if key not in best or abs(f.score) > abs(best[key].score):
                best[key] = f
    return sorted(best.values(), key=lambda f: (ANOMALY_METRICS.index(f.metric), f.kind))


def judge(history: Sequence[MinuteSample | None], config: DetectorConfig) -> list[Finding]:
    """What is anomalous about the last minute of ``history`` (and the trailing windows
    ending with it), against the baseline before the longest window; at most one finding
    per metric and direction, the strongest window's. Only the last
    ``config.history_minutes + 1`` minutes matter. Returns ``[]`` during warm-up and below
    the minimum volume."""
    if not history:
        return []
    return _judge_at(history, len(history) - 1, config)


def episodes(
    history: Sequence[MinuteSample | None], config: DetectorConfig, *, judged: int
) -> list[Episode]:
    """The anomaly episodes that start in the last ``judged`` minutes of ``history``,
    oldest first. A minute starts an episode of a metric and direction when it is flagged
    for it and the ``episode_gap_minutes`` before it are not (those are judged too, so
    ``history`` should hold ``config.history_minutes + episode_gap_minutes`` minutes
    before the judged ones)."""
    n = len(history)
    first = max(0, n - judged)
    gap = config.episode_gap_minutes
    last_flag: dict[tuple[str, str], int] = {}
    out: list[Episode] = []
    for t in range(max(0, first - gap), n):
        for f in _judge_at(history, t, config):
            key = (f.metric, f.kind)
            previous = last_flag.get(key)
            last_flag[key] = t
            if t >= first and (previous is None or t - previous > gap):
                out.append(Episode(t, f))
    return out

"""The anomaly detector on small synthetic per-minute series: quiet on noise, finds 5x
spikes and drops of each metric, respects warm-up and minimum volume."""

from __future__ import annotations

import math
import random

import pytest

from llmtally.analysis.anomaly import DetectorConfig, MinuteSample, judge

CFG = DetectorConfig()


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def noise(rng: random.Random, minutes: int, rate: float = 60.0) -> list[MinuteSample | None]:
    """Poisson requests (5% failed), p95 ~ 400 ms, cost ~ 1e5 nanos per request."""
    out: list[MinuteSample | None] = []
    for _ in range(minutes):
        n = poisson(rng, rate)
        failed = sum(1 for _ in range(n) if rng.random() < 0.05)
        p95 = 400.0 * rng.uniform(0.9, 1.1)
        cost = sum(int(rng.uniform(5e4, 1.5e5)) for _ in range(n))
        out.append(MinuteSample(n, failed, cost, p95, n) if n else None)
    return out


def findings_over(series: list[MinuteSample | None], cfg: DetectorConfig = CFG) -> list[tuple]:
    return [
        (t, f.metric, f.kind)
        for t in range(len(series))
        for f in judge(series[max(0, t - cfg.baseline_minutes) : t + 1], cfg)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noise_only_raises_no_alarm(seed: int) -> None:
    series = noise(random.Random(seed), 400)
    assert findings_over(series) == []


def _with(series: list[MinuteSample | None], t: int, sample: MinuteSample | None) -> list:
    out = series.copy()
    out[t] = sample
    return out


def test_spike_and_drop_of_request_rate() -> None:
    series = noise(random.Random(7), 120)
    spike = _with(series, 100, MinuteSample(300, 15, 300 * 100_000, 400.0, 300))
    assert (100, "request_rate", "spike") in findings_over(spike)
    drop = _with(series, 100, MinuteSample(12, 1, 12 * 100_000, 400.0, 12))
    found = findings_over(drop)
    assert (100, "request_rate", "drop") in found
    assert (100, "cost_rate", "drop") in found
    assert {t for t, _, _ in found} == {100}


def test_traffic_stopping_is_a_drop() -> None:
    series = _with(noise(random.Random(8), 120), 110, None)
    assert (110, "request_rate", "drop") in findings_over(series)


@pytest.mark.parametrize(
    ("sample", "metric", "kind"),
    [
        pytest.param(MinuteSample(60, 15, 6_000_000, 400.0, 60), "error_rate", "spike", id="err"),
        pytest.param(
            MinuteSample(60, 3, 6_000_000, 2_000.0, 60), "p95_latency_ms", "spike", id="lat"
        ),
        pytest.param(MinuteSample(60, 3, 6_000_000, 80.0, 60), "p95_latency_ms", "drop", id="fast"),
        pytest.param(MinuteSample(60, 3, 30_000_000, 400.0, 60), "cost_rate", "spike", id="cost"),
    ],
)
def test_each_metric_alone(sample: MinuteSample, metric: str, kind: str) -> None:
    found = findings_over(_with(noise(random.Random(9), 120), 100, sample))
    assert found == [(100, metric, kind)]


def test_nothing_is_judged_during_warm_up() -> None:
    series = noise(random.Random(10), CFG.warmup_minutes - 1)
    series.append(MinuteSample(1_000, 500, 10**9, 10_000.0, 1_000))
    assert findings_over(series) == []


def test_low_volume_is_not_judged() -> None:
    series = noise(random.Random(11), 120, rate=3.0)
    # 5x, and far outside Poisson(3) noise, but below the minimum volume of 20/min.
    series[100] = MinuteSample(15, 0, 15 * 100_000, 400.0, 15)
    assert findings_over(series) == []


def test_a_long_incident_is_flagged_throughout_its_first_half_window() -> None:
    series = noise(random.Random(12), 160)
    for t in range(100, 120):
        series[t] = MinuteSample(300, 15, 300 * 100_000, 400.0, 300)
    spikes = {t for t, m, k in findings_over(series) if (m, k) == ("request_rate", "spike")}
    assert spikes == set(range(100, 120))


def test_higher_sensitivity_flags_less() -> None:
    series = _with(noise(random.Random(13), 120), 100, MinuteSample(130, 6, 13_000_000, 400.0, 130))
    assert (100, "request_rate", "spike") in findings_over(series)
    strict = DetectorConfig(sensitivity=12.0)
    assert findings_over(series, strict) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"warmup_minutes": 0}, id="warmup"),
        pytest.param({"warmup_minutes": 61}, id="warmup-over-baseline"),
        pytest.param({"sensitivity": 0}, id="sensitivity"),
        pytest.param({"min_ratio": 1.0}, id="ratio"),
        pytest.param({"min_requests": 0}, id="volume"),
    ],
)
def test_nonsense_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        DetectorConfig(**kwargs)  # type: ignore[arg-type]

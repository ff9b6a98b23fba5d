"""The anomaly detector on small synthetic per-minute series: quiet on noise, finds 5x
spikes and drops of each metric (pooling minutes when one is not enough), respects
warm-up and minimum volume, and reports one episode per incident, whatever minutes a
pass judges."""

from __future__ import annotations

import math
import random

import pytest

from llmtally.analysis.anomaly import DetectorConfig, MinuteSample, episodes, judge

CFG = DetectorConfig()
BEFORE = CFG.history_minutes + CFG.episode_gap_minutes


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


def alarms(series: list[MinuteSample | None], cfg: DetectorConfig = CFG) -> list[tuple]:
    """``(first minute, metric, kind)`` of each episode, judging every minute."""
    return [
        (e.start, e.finding.metric, e.finding.kind)
        for e in episodes(series, cfg, judged=len(series))
    ]


def flagged(series: list[MinuteSample | None], cfg: DetectorConfig = CFG) -> list[tuple]:
    """``(minute, metric, kind)`` of every flagged minute."""
    return [
        (t, f.metric, f.kind)
        for t in range(len(series))
        for f in judge(series[max(0, t - cfg.history_minutes) : t + 1], cfg)
    ]


def _with(series: list[MinuteSample | None], t: int, *samples: MinuteSample | None) -> list:
    out = series.copy()
    out[t : t + len(samples)] = samples
    return out


@pytest.mark.parametrize(
    ("seed", "rate"),
    [
        pytest.param(1, 60.0, id="60/min"),
        pytest.param(2, 600.0, id="600/min"),
        pytest.param(3, 8.0, id="8/min"),
    ],
)
def test_noise_only_raises_no_alarm(seed: int, rate: float) -> None:
    assert flagged(noise(random.Random(seed), 300, rate)) == []


def test_spike_and_drop_of_request_rate() -> None:
    series = noise(random.Random(7), 120)
    spike = _with(series, 100, MinuteSample(300, 15, 300 * 100_000, 400.0, 300))
    assert (100, "request_rate", "spike") in alarms(spike)
    drop = _with(series, 100, MinuteSample(12, 1, 12 * 100_000, 400.0, 12))
    found = alarms(drop)
    assert (100, "request_rate", "drop") in found
    assert (100, "cost_rate", "drop") in found
    assert {t for t, _, _ in found} == {100}


def test_traffic_stopping_is_a_drop() -> None:
    series = _with(noise(random.Random(8), 120), 110, None)
    assert alarms(series) == [(110, "request_rate", "drop"), (110, "cost_rate", "drop")]


@pytest.mark.parametrize(
    ("sample", "metric", "kind"),
    [
        pytest.param(MinuteSample(60, 20, 6_000_000, 400.0, 60), "error_rate", "spike", id="err"),
        pytest.param(
            MinuteSample(60, 3, 6_000_000, 2_000.0, 60), "p95_latency_ms", "spike", id="lat"
        ),
        pytest.param(MinuteSample(60, 3, 6_000_000, 80.0, 60), "p95_latency_ms", "drop", id="fast"),
        pytest.param(MinuteSample(60, 3, 30_000_000, 400.0, 60), "cost_rate", "spike", id="cost"),
    ],
)
def test_each_metric_alone(sample: MinuteSample, metric: str, kind: str) -> None:
    assert alarms(_with(noise(random.Random(9), 120), 100, sample)) == [(100, metric, kind)]


def test_an_error_rate_drop_invisible_per_minute_is_found_over_pooled_minutes() -> None:
    # 60 requests/minute, 5% failing, then none failing for 10 minutes: about 3 failures
    # a minute are missing, which no single minute can tell from noise.
    series = noise(random.Random(14), 130)
    for t in range(100, 110):
        m = series[t]
        assert m is not None
        series[t] = m._replace(failed=0)
    one_minute = DetectorConfig(windows=(1,))
    assert [a for a in alarms(series, one_minute) if a[1] == "error_rate"] == []
    found = [e for e in episodes(series, CFG, judged=len(series)) if e.finding.kind == "drop"]
    assert [(e.finding.metric, e.finding.window) for e in found] == [("error_rate", 10)]
    assert 100 < found[0].start < 110


def test_a_quiet_series_is_judged_on_pooled_windows_above_the_minimum_volume() -> None:
    # Requests stop for 15 minutes: 3/min expects 45 requests in that window (judged),
    # 1/min only 15, below min_requests (20): too few to tell a drop from noise.
    for rate, expected in ((3.0, True), (1.0, False)):
        series = noise(random.Random(15), 150, rate=rate)
        series[120:135] = [None] * 15
        found = [a for a in alarms(series) if a[1:] == ("request_rate", "drop")]
        assert bool(found) is expected, rate
        assert all(120 <= t < 135 for t, _, _ in found)


def test_nothing_is_judged_during_warm_up() -> None:
    # The baseline is the 60 minutes before the longest window (15): it needs 30 minutes
    # with traffic first.
    rng = random.Random(10)
    burst = MinuteSample(1_000, 500, 10**9, 10_000.0, 1_000)
    longest = max(CFG.windows)
    assert judge([*noise(rng, longest + CFG.warmup_minutes - 2), burst], CFG) == []
    found = judge([*noise(rng, longest + CFG.warmup_minutes - 1), burst], CFG)
    assert {(f.metric, f.kind) for f in found} >= {
        ("request_rate", "spike"),
        ("error_rate", "spike"),
    }


def test_a_new_series_is_not_a_spike_of_its_empty_past() -> None:
    series = [None] * 60 + noise(random.Random(18), 90)
    assert flagged(series) == []


def test_low_volume_is_not_judged() -> None:
    series = noise(random.Random(11), 120, rate=0.5)
    # 10x, and far outside Poisson(0.5) noise, but below the minimum volume of 20.
    series[100] = MinuteSample(15, 0, 15 * 100_000, 400.0, 15)
    assert flagged(series) == []


def test_a_long_incident_is_flagged_throughout_and_reported_once() -> None:
    series = noise(random.Random(12), 160)
    for t in range(100, 120):
        series[t] = MinuteSample(300, 15, 300 * 100_000, 400.0, 300)
    spikes = {t for t, m, k in flagged(series) if (m, k) == ("request_rate", "spike")}
    assert set(range(100, 120)) <= spikes
    assert alarms(series) == [(100, "request_rate", "spike"), (100, "cost_rate", "spike")]


def test_incidents_further_apart_than_the_gap_are_separate_episodes() -> None:
    spike = MinuteSample(300, 15, 300 * 100_000, 400.0, 300)
    series = _with(noise(random.Random(16), 160), 100, spike, spike)
    close = _with(series, 105, spike)  # 2 quiet minutes between: one episode
    assert [a[0] for a in alarms(close) if a[1] == "request_rate"] == [100]
    far = _with(series, 130, spike)
    assert [a[0] for a in alarms(far) if a[1] == "request_rate"] == [100, 130]


def test_episodes_do_not_depend_on_how_minutes_are_split_into_passes() -> None:
    series = noise(random.Random(17), 200)
    for t in range(150, 158):
        series[t] = MinuteSample(8, 0, 800_000, 3_000.0, 8)
    at_once = episodes(series, CFG, judged=120)
    # The collector judges a minute or a few per pass, each pass with its own history.
    passes = []
    for end in range(83, 201, 3):  # minutes 80-199, three a pass
        history = series[end - 3 - BEFORE : end]
        offset = end - len(history)
        passes += [e._replace(start=e.start + offset) for e in episodes(history, CFG, judged=3)]
    assert passes == at_once
    assert {(e.start, e.finding.metric) for e in at_once} >= {(150, "request_rate")}


def test_higher_sensitivity_flags_less() -> None:
    sample = MinuteSample(140, 7, 14_000_000, 400.0, 140)
    series = _with(noise(random.Random(13), 120), 100, sample)
    assert (100, "request_rate", "spike") in alarms(series)
    strict = DetectorConfig(sensitivity=12.0)
    assert alarms(series, strict) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"warmup_minutes": 0}, id="warmup"),
        pytest.param({"warmup_minutes": 61}, id="warmup-over-baseline"),
        pytest.param({"sensitivity": 0}, id="sensitivity"),
        pytest.param({"min_ratio": 1.0}, id="ratio"),
        pytest.param({"min_requests": 0}, id="volume"),
        pytest.param({"windows": ()}, id="no-windows"),
        pytest.param({"windows": (1, 61)}, id="window-over-baseline"),
        pytest.param({"episode_gap_minutes": 0}, id="gap"),
        pytest.param({"single_minute_margin": -1.0}, id="margin"),
    ],
)
def test_nonsense_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        DetectorConfig(**kwargs)  # type: ignore[arg-type]

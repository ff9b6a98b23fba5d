"""How well the anomaly detector finds injected 5x spikes and drops, and how quiet it is on
noise-only traffic.

Synthetic per-minute series, one simulated day each (plus an hour before it as the
detector's first baseline): a diurnal request rate (mean ``L * (1 + 0.6 sin(2pi t/1440 +
phase))``, ``L`` log-uniform in ``[--min-volume, --max-volume]`` requests/minute) with
Poisson noise; each request fails with probability 5%, takes a log-normal duration
(median 400 ms) and costs a log-normal integer number of nano-dollars. The detector sees
what a minute rollup holds: requests, failures, cost, and the p95 of the durations.

Half the days get eight injected episodes (3-10 minutes each, one per metric and
direction): request rate x5 / /5, error probability x5 / /5, every duration x5 / /5,
every cost x5 / /5. The other half are noise only.

- recall: an episode is found when the detector flags its metric and direction in at
  least one of its minutes;
- precision: alarms inside an episode's minutes over all alarms;
- false alarms per noise-only day (all metrics of the series).

    .venv/bin/python bench/anomaly.py [--days 40] [--seed 1] [--sensitivity 6]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from dataclasses import dataclass

from llmtally.analysis.anomaly import ANOMALY_METRICS, DetectorConfig, MinuteSample, judge

DAY = 1_440
ERROR_P = 0.05
EFFECTS = [(m, k) for m in ANOMALY_METRICS for k in ("spike", "drop")]


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson variate (Knuth below 10, else Hörmann's PTRS, as numpy draws them)."""
    if lam < 10:
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= (
            -lam + k * loglam - math.lgamma(k + 1)
        ):
            return k


@dataclass(frozen=True)
class Episode:
    metric: str
    kind: str
    start: int  # minute of the day
    length: int


def minute(rng: random.Random, mean: float, effect: tuple[str, str] | None) -> MinuteSample | None:
    factor = {"spike": 5.0, "drop": 0.2}
    metric, kind = effect if effect else ("", "")
    f = factor.get(kind, 1.0)
    n = poisson(rng, mean * (f if metric == "request_rate" else 1.0))
    if n == 0:
        return None
    p = ERROR_P * (f if metric == "error_rate" else 1.0)
    failed = sum(1 for _ in range(n) if rng.random() < p)
    lat_f = f if metric == "p95_latency_ms" else 1.0
    durations = sorted(rng.lognormvariate(6.0, 0.5) * lat_f for _ in range(n))
    cost_f = f if metric == "cost_rate" else 1.0
    cost = sum(int(rng.lognormvariate(12.0, 0.8) * cost_f) for _ in range(n))
    p95 = durations[math.floor(0.95 * (n - 1))]
    return MinuteSample(n, failed, cost, p95, n)


def episodes(rng: random.Random) -> list[Episode]:
    """One episode per effect, in shuffled 180-minute slots of the day."""
    effects = EFFECTS.copy()
    rng.shuffle(effects)
    out = []
    for slot, (metric, kind) in enumerate(effects):
        length = rng.randint(3, 10)
        out.append(Episode(metric, kind, slot * 180 + rng.randint(0, 180 - length), length))
    return out


def simulate_day(
    rng: random.Random, cfg: DetectorConfig, lo: float, hi: float, injected: list[Episode]
) -> tuple[list[tuple[int, str, str]], list[float]]:
    """The alarms ``(minute, metric, kind)`` of one series-day, and its mean request rate
    per minute."""
    level = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    phase = rng.uniform(0, 2 * math.pi)
    effect_at: dict[int, tuple[str, str]] = {}
    for e in injected:
        for t in range(e.start, e.start + e.length):
            effect_at[t] = (e.metric, e.kind)
    history: list[MinuteSample | None] = []
    alarms = []
    means = []
    for t in range(-cfg.baseline_minutes, DAY):
        mean = level * (1 + 0.6 * math.sin(2 * math.pi * t / DAY + phase))
        means.append(mean)
        history.append(minute(rng, mean, effect_at.get(t)))
        history = history[-(cfg.baseline_minutes + 1) :]
        if t >= 0:
            alarms.extend((t, f.metric, f.kind) for f in judge(history, cfg))
    return alarms, means[cfg.baseline_minutes :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=40, help="series-days (half noise-only)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sensitivity", type=float, default=DetectorConfig().sensitivity)
    ap.add_argument("--min-volume", type=float, default=30.0)
    ap.add_argument("--max-volume", type=float, default=600.0)
    ap.add_argument("--busy", type=float, default=100.0, help="requests/minute of a busy series")
    args = ap.parse_args()
    cfg = DetectorConfig(sensitivity=args.sensitivity)
    rng = random.Random(args.seed)
    found: Counter[tuple[str, str, bool]] = Counter()
    total: Counter[tuple[str, str, bool]] = Counter()
    true_alarms = all_alarms = noise_alarms = 0
    noise_days = worst_noise_day = 0
    started = time.perf_counter()
    for day in range(args.days):
        injected = episodes(rng) if day % 2 == 0 else []
        alarms, means = simulate_day(rng, cfg, args.min_volume, args.max_volume, injected)
        all_alarms += len(alarms)
        if not injected:
            noise_days += 1
            noise_alarms += len(alarms)
            worst_noise_day = max(worst_noise_day, len(alarms))
        inside = {t for e in injected for t in range(e.start, e.start + e.length)}
        true_alarms += sum(1 for t, _, _ in alarms if t in inside)
        for e in injected:
            busy = means[e.start] >= args.busy
            total[(e.metric, e.kind, busy)] += 1
            if any(
                e.start <= t < e.start + e.length and m == e.metric and k == e.kind
                for t, m, k in alarms
            ):
                found[(e.metric, e.kind, busy)] += 1
    elapsed = time.perf_counter() - started
    print(
        f"{args.days} series-days ({noise_days} noise-only), volume "
        f"{args.min_volume:g}-{args.max_volume:g} req/min x diurnal 0.4-1.6, "
        f"sensitivity {cfg.sensitivity:g}, min_ratio {cfg.min_ratio:g}, "
        f"baseline {cfg.baseline_minutes} min, seed {args.seed} ({elapsed:.0f} s)"
    )
    print(f"recall (found/total) below and above {args.busy:g} requests/minute at the episode")
    print(f"{'metric':<16}{'kind':<7}{'quiet':>14}{'busy':>14}{'all':>14}")

    def cell(keys: list[tuple[str, str, bool]]) -> str:
        f, n = sum(found[k] for k in keys), sum(total[k] for k in keys)
        return f"{f:>4}/{n:<3} {f / max(n, 1):.2f}"

    for m, k in EFFECTS:
        parts = [cell([(m, k, False)]), cell([(m, k, True)]), cell([(m, k, b) for b in (0, 1)])]
        print(f"{m:<16}{k:<7}" + "".join(f"{p:>14}" for p in parts))
    everything = list(total)
    quiet = [k for k in everything if not k[2]]
    busy_keys = [k for k in everything if k[2]]
    print(f"{'all':<23}{cell(quiet):>14}{cell(busy_keys):>14}{cell(everything):>14}")
    print(f"precision: {true_alarms}/{all_alarms} = {true_alarms / max(all_alarms, 1):.3f}")
    print(
        f"false alarms on noise-only days: {noise_alarms} in {noise_days} days "
        f"({noise_alarms / max(noise_days, 1):.2f}/day, worst day {worst_noise_day})"
    )


if __name__ == "__main__":
    main()

"""How well the anomaly detector finds injected 5x spikes and drops, and how quiet it is on
noise-only traffic.

Synthetic per-minute series, one simulated day each (plus the detector's history before
it): a diurnal request rate (mean ``L * (1 + 0.6 sin(2pi t/1440 + phase))``, ``L``
log-uniform in ``[--min-volume, --max-volume]`` requests/minute) with Poisson noise; each
request fails with probability 5%, takes a log-normal duration (median 400 ms) and costs a
log-normal integer number of nano-dollars. The detector sees what a minute rollup holds:
requests, failures, cost, and the p95 of the durations.

Half the days get eight injected episodes (3-10 minutes each, one per metric and
direction): request rate x5 / /5, error probability x5 / /5, every duration x5 / /5,
every cost x5 / /5. The other half are noise only. The detector reports episodes
(``llmtally.analysis.anomaly.episodes``): one alarm per run of flagged minutes, with the
window whose evidence flagged its first minute.

- recall: an injected episode is found when an alarm of its metric and direction has
  evidence (its window) overlapping the episode; reported over all episodes and over the
  *detectable* ones (below);
- precision: alarms whose evidence overlaps an injected episode, over all alarms;
- false alarms per noise-only day (all metrics of the series): mean and worst day.

Detectable (the documented minimum volume): take the whole episode and the events its
baseline expects in it: requests (request rate), failures
(error rate), "effective requests" requests / E[c^2]/E[c]^2 (cost: a compound-Poisson sum
of log-normal costs is that many Poisson events), latency samples. A count change is
detectable when an ideal test at the detector's threshold (Poisson likelihood ratio,
baseline known exactly, pooling the whole episode) finds it with probability >= 0.9, and
the episode meets the detector's minimum volumes (``min_requests``, ``min_errors``, ``min_latency_samples``).

    .venv/bin/python bench/anomaly.py [--days 100] [--seed 1] [--sensitivity 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from dataclasses import dataclass

from llmtally.analysis.anomaly import ANOMALY_METRICS, DetectorConfig, MinuteSample, episodes

DAY = 1_440
ERROR_P = 0.05
COST_SIGMA = 0.8
EFFECTS = [(m, k) for m in ANOMALY_METRICS for k in ("spike", "drop")]
FACTOR = {"spike": 5.0, "drop": 0.2}
POWER = 0.9


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
class Injected:
    metric: str
    kind: str
    start: int  # minute of the day
    length: int

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether minutes ``[lo, hi]`` overlap the episode."""
        return lo < self.start + self.length and hi >= self.start


def minute(rng: random.Random, mean: float, effect: tuple[str, str] | None) -> MinuteSample | None:
    metric, kind = effect if effect else ("", "")
    f = FACTOR.get(kind, 1.0)
    n = poisson(rng, mean * (f if metric == "request_rate" else 1.0))
    if n == 0:
        return None
    p = ERROR_P * (f if metric == "error_rate" else 1.0)
    failed = sum(1 for _ in range(n) if rng.random() < p)
    lat_f = f if metric == "p95_latency_ms" else 1.0
    durations = sorted(rng.lognormvariate(6.0, 0.5) * lat_f for _ in range(n))
    cost_f = f if metric == "cost_rate" else 1.0
    cost = sum(int(rng.lognormvariate(12.0, COST_SIGMA) * cost_f) for _ in range(n))
    p95 = durations[math.floor(0.95 * (n - 1))]
    return MinuteSample(n, failed, cost, p95, n)


def injected_episodes(rng: random.Random) -> list[Injected]:
    """One episode per effect, in shuffled 180-minute slots of the day."""
    effects = EFFECTS.copy()
    rng.shuffle(effects)
    out = []
    for slot, (metric, kind) in enumerate(effects):
        length = rng.randint(3, 10)
        out.append(Injected(metric, kind, slot * 180 + rng.randint(0, 180 - length), length))
    return out


def poisson_z(x: float, mu: float) -> float:
    """Signed root of the Poisson deviance, continuity-corrected (as the detector)."""
    x = max(mu, x - 0.5) if x > mu else min(mu, x + 0.5)
    d = 2 * (x * math.log(x / mu) - (x - mu)) if x > 0 else 2 * mu
    return math.copysign(math.sqrt(max(d, 0.0)), x - mu)


def ideal_power(expected: float, factor: float, threshold: float) -> float:
    """P(an ideal Poisson test at ``threshold`` flags a change of ``expected`` events by
    ``factor``): the observed count is Poisson(factor * expected)."""
    if expected <= 0:
        return 0.0
    lam = factor * expected
    if lam > 2_000:
        return 1.0
    total, k, log_pmf = 0.0, 0, -lam
    while k <= lam + 12 * math.sqrt(lam) + 20:
        z = poisson_z(k, expected)
        if (z <= -threshold) if factor < 1 else (z >= threshold):
            total += math.exp(log_pmf)
        k += 1
        log_pmf += math.log(lam) - math.log(k)
    return total


def detectable(e: Injected, mean: float, cfg: DetectorConfig) -> bool:
    """The documented rule (module docstring)."""
    w = e.length  # an ideal test pools the whole episode, whatever the detector's windows
    f = FACTOR[e.kind]
    requests = mean * w
    if e.metric == "p95_latency_ms":
        return requests >= cfg.min_latency_samples
    if e.metric == "error_rate":
        volume_ok = requests >= cfg.min_requests and ERROR_P * requests * f >= cfg.min_errors
        if e.kind == "drop":
            volume_ok = volume_ok and ERROR_P * requests >= cfg.min_errors
        events = ERROR_P * requests
    else:
        requests_seen = requests * (f if e.metric == "request_rate" else 1.0)
        big = requests if e.kind == "drop" else max(requests, requests_seen)
        volume_ok = big >= cfg.min_requests
        events = requests if e.metric == "request_rate" else requests / math.exp(COST_SIGMA**2)
    return volume_ok and ideal_power(events, f, cfg.sensitivity) >= POWER


def simulate_day(
    rng: random.Random, cfg: DetectorConfig, lo: float, hi: float, injected: list[Injected]
) -> tuple[list[tuple[int, int, str, str]], list[float], float]:
    """The alarms ``(minute, window, metric, kind)`` of one series-day, its mean request
    rate per minute, and the seconds the detector took."""
    level = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    phase = rng.uniform(0, 2 * math.pi)
    effect_at: dict[int, tuple[str, str]] = {}
    for e in injected:
        for t in range(e.start, e.start + e.length):
            effect_at[t] = (e.metric, e.kind)
    before = cfg.history_minutes + cfg.episode_gap_minutes
    history: list[MinuteSample | None] = []
    means = []
    for t in range(-before, DAY):
        mean = level * (1 + 0.6 * math.sin(2 * math.pi * t / DAY + phase))
        means.append(mean)
        history.append(minute(rng, mean, effect_at.get(t)))
    started = time.perf_counter()
    found = episodes(history, cfg, judged=DAY)
    took = time.perf_counter() - started
    alarms = [(a.start - before, a.finding.window, a.finding.metric, a.finding.kind) for a in found]
    return alarms, means[before:], took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=100, help="series-days (half noise-only)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sensitivity", type=float, default=DetectorConfig().sensitivity)
    ap.add_argument("--windows", default="", help="detector windows, e.g. 1,5,15")
    ap.add_argument("--min-volume", type=float, default=30.0)
    ap.add_argument("--max-volume", type=float, default=600.0)
    args = ap.parse_args()
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else None
    cfg = DetectorConfig(sensitivity=args.sensitivity, windows=windows or DetectorConfig().windows)
    rng = random.Random(args.seed)
    found: Counter[tuple[str, str, bool]] = Counter()
    total: Counter[tuple[str, str, bool]] = Counter()
    delays: list[int] = []
    true_alarms = all_alarms = 0
    noise_per_day: list[int] = []
    false_by_metric: Counter[tuple[str, str, int]] = Counter()
    judge_s = 0.0
    started = time.perf_counter()
    for day in range(args.days):
        injected = injected_episodes(rng) if day % 2 == 0 else []
        alarms, means, took = simulate_day(rng, cfg, args.min_volume, args.max_volume, injected)
        judge_s += took
        all_alarms += len(alarms)
        if not injected:
            noise_per_day.append(len(alarms))
        for t, w, m, k in alarms:
            if any(e.overlaps(t - w + 1, t) for e in injected):
                true_alarms += 1
            else:
                false_by_metric[(m, k, w)] += 1
        for e in injected:
            ok = detectable(e, means[e.start], cfg)
            total[(e.metric, e.kind, ok)] += 1
            hits = [
                t
                for t, w, m, k in alarms
                if m == e.metric and k == e.kind and e.overlaps(t - w + 1, t)
            ]
            if hits:
                found[(e.metric, e.kind, ok)] += 1
                delays.append(min(hits) - e.start)
    elapsed = time.perf_counter() - started
    noise_days = len(noise_per_day)
    print(
        f"{args.days} series-days ({noise_days} noise-only), volume "
        f"{args.min_volume:g}-{args.max_volume:g} req/min x diurnal 0.4-1.6, "
        f"sensitivity {cfg.sensitivity:g}, min_ratio {cfg.min_ratio:g}, windows "
        f"{'/'.join(map(str, cfg.windows))} min, baseline {cfg.baseline_minutes} min, "
        f"seed {args.seed} ({elapsed:.0f} s)"
    )
    print("recall (found/total): detectable episodes (documented rule), others, all")
    print(f"{'metric':<16}{'kind':<7}{'detectable':>14}{'not':>14}{'all':>14}")

    def cell(keys: list[tuple[str, str, bool]]) -> str:
        f, n = sum(found[k] for k in keys), sum(total[k] for k in keys)
        return f"{f:>4}/{n:<3} {f / max(n, 1):.2f}"

    for m, k in EFFECTS:
        parts = [cell([(m, k, True)]), cell([(m, k, False)]), cell([(m, k, b) for b in (1, 0)])]
        print(f"{m:<16}{k:<7}" + "".join(f"{p:>14}" for p in parts))
    everything = list(total)
    yes = [k for k in everything if k[2]]
    no = [k for k in everything if not k[2]]
    print(f"{'all':<23}{cell(yes):>14}{cell(no):>14}{cell(everything):>14}")
    delays.sort()
    if delays:
        print(
            f"detection delay (alarm minute - episode start): median "
            f"{delays[len(delays) // 2]} min, p90 {delays[int(0.9 * (len(delays) - 1))]} min"
        )
    print(f"precision: {true_alarms}/{all_alarms} = {true_alarms / max(all_alarms, 1):.3f}")
    noise_alarms = sum(noise_per_day)
    print(
        f"false alarms on noise-only days: {noise_alarms} in {noise_days} days "
        f"({noise_alarms / max(noise_days, 1):.2f}/day, worst day {max(noise_per_day, default=0)}, "
        f"days with more than one: {sum(1 for n in noise_per_day if n > 1)})"
    )
    if false_by_metric:
        print("false alarms by metric/kind/window:", dict(sorted(false_by_metric.items())))
    per_minute = judge_s / max(args.days * (DAY + cfg.episode_gap_minutes), 1)
    print(f"detector: {per_minute * 1e6:.0f} us per series-minute judged")


if __name__ == "__main__":
    main()

"""Rollups: per-minute and per-hour summaries of request events, written beside the events.

Pure and synchronous (no I/O); both backends call it inside their write transaction.

A rollup row is keyed ``(period_ms, dim, start_ms, value)``:

- ``period_ms`` is ``MINUTE_MS`` or ``HOUR_MS`` (two tiers: an aggregate over a long range
  reads hour rows, its ragged edges minute rows, and only the last partial minutes raw
  events);
- ``dim`` is one *facet*: ``""`` (every request), ``"model"``, ``"provider"``, ``"agent"``,
  ``"provider_id"``, ``"endpoint"`` or ``"status"`` (``"success"``/``"failure"``), and
  ``value`` the facet's value (``""`` for an absent agent, API key or endpoint).

Each request event adds to one row per facet and tier (14 rows), so an aggregate grouped
by one facet reads ``buckets x values`` rows whatever the cardinality of the others.
A row holds the counters of ``Tally.COUNTERS``, exact count/sum/min/max of duration and
TTFT, their log-bucket counts (the ``LogSketch`` buckets, ±1% relative error, mergeable)
and how many requests each model, provider and endpoint served (``models_used``,
``backends_used``, ``endpoints_hit``).

Buckets are kept dense (``Bins``: a first bucket and a list of counts) so that merging
is a C-level ``map(add)`` and a quantile a ``bisect`` over block sums: reading a month of
hourly rows must take milliseconds, not seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, repeat, zip_longest
from operator import add, mul
from typing import Any, Final, TypeAlias

import msgspec

from ..analysis.sketch import (
    MAX_VALUE,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    ZERO_BUCKET,
    bucket_of,
    value_of,
)
from ..analysis.stats import Tally
from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed

__all__ = [
    "DIMENSIONS",
    "GROUP_DIMENSIONS",
    "HOUR_MS",
    "MINUTE_MS",
    "ROLLUP_COLUMNS",
    "Bins",
    "Metric",
    "Rollup",
    "RollupKey",
    "rollup_events",
    "rollup_from_row",
    "rollup_to_row",
    "status_of",
]

# The same expression as ``sketch.py``'s, so ``add_many`` buckets exactly like ``bucket_of``.
_INV_LOG_GAMMA: Final = 1.0 / math.log((1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY))
_log: Final = math.log
_ceil: Final = math.ceil
_BLOCK: Final = 16  # buckets per block sum in ``Bins.quantiles``
_MIN_BUCKET: Final = _ceil(_log(MIN_VALUE) * _INV_LOG_GAMMA)
_MAX_BUCKET: Final = _ceil(_log(MAX_VALUE) * _INV_LOG_GAMMA)

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000

GROUP_DIMENSIONS: Final = ("model", "provider", "agent", "provider_id", "endpoint", "status")
"""The facets an aggregate can be grouped by."""
DIMENSIONS: Final = ("", *GROUP_DIMENSIONS)
"""Every facet a rollup row can have; ``""`` is the row of all requests."""

RollupKey: TypeAlias = tuple[int, str, int, str]
"""``(period_ms, dim, start_ms, value)``."""

COUNTERS: Final = Tally.COUNTERS

ROLLUP_COLUMNS: Final = (
    "period_ms",
    "dim",
    "start_ms",
    "value",
    *COUNTERS,
    "duration_count",
    "duration_sum",
    "duration_min",
    "duration_max",
    "ttft_count",
    "ttft_sum",
    "ttft_min",
    "ttft_max",
    "sketches",
    "mix",
)
"""Column order of a rollup row (the key, then what ``rollup_to_row`` returns)."""


def status_of(failed: bool) -> str:
    """The ``status`` facet value of a request."""
    return "failure" if failed else "success"


class Bins(msgspec.Struct, gc=False):
    """Dense log-bucket counts: ``counts[i]`` values fell in bucket ``lo + i``; ``zero``
    values were ≤ 0. Same buckets and quantile convention as ``LogSketch``.

    Counts, not running totals: most are below 256, which Python (and the msgpack
    decoder) share as cached ints, so decoding thousands of rows allocates next to
    nothing; ``quantiles`` finds ranks through block sums instead (see there).

    ``Bins``, ``Metric`` and ``Rollup`` are msgspec Structs with ``gc=False``: an
    aggregate decodes thousands of them, and untracked objects keep the cyclic garbage
    collector from walking them (they never form cycles).
    """

    lo: int = 0
    counts: list[int] = msgspec.field(default_factory=list)
    zero: int = 0

    @classmethod
    def spanning(cls) -> Bins:
        """Empty bins already spanning every bucket a value can fall in: merging into
        them never reallocates (for accumulating many rows into one total)."""
        return cls(_MIN_BUCKET, [0] * (_MAX_BUCKET - _MIN_BUCKET + 1))

    @classmethod
    def from_counts(cls, counts: dict[int, int]) -> Bins:
        """Bins holding ``{bucket: count}`` (``ZERO_BUCKET`` for values ≤ 0)."""
        zero = counts.get(ZERO_BUCKET, 0)
        buckets = [b for b in counts if b != ZERO_BUCKET]
        if not buckets:
            return cls(0, [], zero)
        lo = min(buckets)
        dense = [0] * (max(buckets) - lo + 1)
        for b in buckets:
            dense[b - lo] = counts[b]
        return cls(lo, dense, zero)

    def add_bucket(self, b: int, n: int = 1) -> None:
        """Count ``n`` values of bucket ``b``."""
        if b == ZERO_BUCKET:
            self.zero += n
            return
        counts = self.counts
        if not counts:
            self.lo = b
            counts.append(n)
            return
        i = b - self.lo
        if i < 0:
            self.counts = [n] + [0] * (-i - 1) + counts
            self.lo = b
        elif i >= len(counts):
            counts.extend([0] * (i - len(counts)))
            counts.append(n)
        else:
            counts[i] += n

    def merge(self, other: Bins) -> None:
        """Add ``other``'s counts into this one (``other`` is unchanged)."""
        self.zero += other.zero
        theirs = other.counts
        if not theirs:
            return
        mine = self.counts
        if not mine:
            self.lo = other.lo
            self.counts = theirs.copy()
            return
        lo = min(self.lo, other.lo)
        hi = max(self.lo + len(mine), other.lo + len(theirs))
        if lo < self.lo or hi > self.lo + len(mine):
            mine = [0] * (self.lo - lo) + mine + [0] * (hi - self.lo - len(mine))
            self.counts = mine
            self.lo = lo
        off = other.lo - lo
        end = off + len(theirs)
        mine[off:end] = map(add, mine[off:end], theirs)

    def total(self) -> int:
        """How many values were counted."""
        return self.zero + sum(self.counts)

    def quantiles(self, qs: Sequence[float], count: int | None = None) -> list[float | None]:
        """The ``qs`` quantiles (lower-rank convention ``rank = q * (count - 1)``), each
        within ±1% of the exact sample quantile; ``None`` when empty. ``count`` must
        equal ``total()`` when given.

        Sums of ``_BLOCK`` buckets are made in C (``zip`` + ``sum``), a ``bisect`` picks
        the block of each rank and a short scan the bucket: about a tenth of the Python
        work of running totals over every bucket.
        """
        n = self.total() if count is None else count
        if n <= 0:
            return [None] * len(qs)
        counts, zero, lo = self.counts, self.zero, self.lo
        starts = list(accumulate(map(sum, zip_longest(*[iter(counts)] * _BLOCK, fillvalue=0))))
        out: list[float | None] = []
        for q in qs:
            rank = q * (n - 1) - zero
            if rank < 0:
                out.append(0.0)
                continue
            block = bisect_right(starts, rank)  # the first block whose end passes rank
            seen = starts[block - 1] if block else 0
            i = block * _BLOCK
            for c in counts[i : i + _BLOCK]:
                seen += c
                if seen > rank:
                    break
                i += 1
            out.append(value_of(lo + min(i, len(counts) - 1)))
        return out

    def sparse(self) -> dict[int, int]:
        """``{bucket: count}`` without empty buckets (``LogSketch.bins`` form)."""
        out = {self.lo + i: n for i, n in enumerate(self.counts) if n}
        if self.zero:
            out[ZERO_BUCKET] = self.zero
        return out


_QS: Final = (0.5, 0.95, 0.99)


class Metric(msgspec.Struct, gc=False):
    """One latency metric of a rollup: exact count, sum, min, max, and its ``Bins``.

    ``q`` caches p50/p95/p99 of ``bins`` as stored with the row (computed once on write,
    where the counts are at hand, instead of on every read of a month of rows); any
    change to the metric drops it.
    """

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    bins: Bins = msgspec.field(default_factory=Bins)
    q: list[float | None] | None = None

    def add(self, value: float) -> None:
        """Count one value."""
        self.q = None
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.bins.add_bucket(bucket_of(value))

    def add_many(self, values: Sequence[float]) -> None:
        """``add`` each value; the bucket maths runs in C when every value is within
        ``[MIN_VALUE, MAX_VALUE]`` (the same buckets as ``bucket_of``)."""
        if not values:
            return
        self.q = None
        lo, hi = min(values), max(values)
        self.count += len(values)
        self.sum += sum(values)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        if lo >= MIN_VALUE and hi <= MAX_VALUE:
            buckets = Counter(map(_ceil, map(mul, map(_log, values), repeat(_INV_LOG_GAMMA))))
        else:
            buckets = Counter(map(bucket_of, values))
        new = Bins.from_counts(buckets)
        if self.bins.counts or self.bins.zero:
            self.bins.merge(new)
        else:
            self.bins = new

    def merge(self, other: Metric) -> None:
        """Add ``other`` into this metric."""
        if not other.count:
            return
        self.q = None
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.bins.merge(other.bins)

    def percentiles(self) -> list[float | None]:
        """``[p50, p95, p99]`` (``None``s when empty), from the cache when valid."""
        if self.q is None:
            self.q = self.bins.quantiles(_QS, self.count) if self.count else [None] * 3
        return self.q

    def summary(self) -> tuple[float | None, float | None, float | None, list[float | None]]:
        """``(avg, min, max, [p50, p95, p99])``; ``None``s when empty."""
        if not self.count:
            return None, None, None, [None, None, None]
        return self.sum / self.count, self.min, self.max, self.percentiles()


class Rollup(msgspec.Struct, gc=False):
    """Counters, latency metrics and model/provider/endpoint mix of request events."""

    requests: int = 0
    failed_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cost_nanos: int = 0
    unpriced_requests: int = 0
    unpriced_input_tokens: int = 0
    unpriced_output_tokens: int = 0
    duration: Metric = msgspec.field(default_factory=Metric)
    ttft: Metric = msgspec.field(default_factory=Metric)
    models: dict[str, int] = msgspec.field(default_factory=dict)
    providers: dict[str, int] = msgspec.field(default_factory=dict)
    endpoints: dict[str, int] = msgspec.field(default_factory=dict)

    @classmethod
    def spanning(cls) -> Rollup:
        """An empty rollup whose bins are pre-sized (``Bins.spanning``): for a total that
        many rows are merged into."""
        return cls(duration=Metric(bins=Bins.spanning()), ttft=Metric(bins=Bins.spanning()))

    def add(
        self,
        failed: bool,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        cache_write_input_tokens: int,
        cost_nanos: int,
        unpriced: bool,
        duration_ms: float | None,
        ttft_ms: float | None,
    ) -> None:
        """Count one request (the caller maintains ``models``, ``providers`` and
        ``endpoints``)."""
        self.requests += 1
        if failed:
            self.failed_requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_input_tokens += cached_input_tokens
        self.cache_write_input_tokens += cache_write_input_tokens
        self.cost_nanos += cost_nanos
        if unpriced:
            self.unpriced_requests += 1
            self.unpriced_input_tokens += input_tokens
            self.unpriced_output_tokens += output_tokens
        if duration_ms is not None:
            self.duration.add(duration_ms)
        if ttft_ms is not None:
            self.ttft.add(ttft_ms)

    def merge(self, other: Rollup) -> None:
        """Add ``other`` into this rollup (``other`` is unchanged)."""
        self.requests += other.requests
        self.failed_requests += other.failed_requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cache_write_input_tokens += other.cache_write_input_tokens
        self.cost_nanos += other.cost_nanos
        self.unpriced_requests += other.unpriced_requests
        self.unpriced_input_tokens += other.unpriced_input_tokens
        self.unpriced_output_tokens += other.unpriced_output_tokens
        self.duration.merge(other.duration)
        self.ttft.merge(other.ttft)
        for mine, theirs in (
            (self.models, other.models),
            (self.providers, other.providers),
            (self.endpoints, other.endpoints),
        ):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n

    def counters(self) -> tuple[int, ...]:
        """The counters in ``Tally.COUNTERS`` order."""
        return (
            self.requests,
            self.failed_requests,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_input_tokens,
            self.cost_nanos,
            self.unpriced_requests,
            self.unpriced_input_tokens,
            self.unpriced_output_tokens,
        )


class _SketchBlob(msgspec.Struct, array_like=True, gc=False):
    """The ``sketches`` column: both metrics' bins, as one msgpack array."""

    d_zero: int
    d_lo: int
    d_counts: list[int]
    t_zero: int
    t_lo: int
    t_counts: list[int]
    d_q: list[float | None] | None = None
    t_q: list[float | None] | None = None


_MixBlob: TypeAlias = tuple[dict[str, int], dict[str, int], dict[str, int]]
_encode: Final = msgspec.msgpack.Encoder().encode
_decode_sketches: Final = msgspec.msgpack.Decoder(_SketchBlob).decode
_decode_mix: Final = msgspec.msgpack.Decoder(_MixBlob).decode


def _metric_columns(m: Metric) -> tuple[int, float, float | None, float | None]:
    if not m.count:
        return 0, 0.0, None, None
    return m.count, m.sum, m.min, m.max


def rollup_to_row(r: Rollup, *, percentiles: bool = False) -> tuple[Any, ...]:
    """The stored columns of ``r`` (``ROLLUP_COLUMNS`` after the four key columns).

    ``percentiles=True`` stores p50/p95/p99 with the row, for rows that long-range reads
    take as they are (hour rows): computed once per write, not once per read."""
    d, t = r.duration, r.ttft
    sketches = (
        d.bins.zero,
        d.bins.lo,
        d.bins.counts,
        t.bins.zero,
        t.bins.lo,
        t.bins.counts,
        d.percentiles() if percentiles else None,
        t.percentiles() if percentiles else None,
    )
    return (
        *r.counters(),
        *_metric_columns(d),
        *_metric_columns(t),
        _encode(sketches),
        _encode((r.models, r.providers, r.endpoints)),
    )


def _metric(
    count: int,
    total: float,
    lo: float | None,
    hi: float | None,
    bins: Bins,
    q: list[float | None] | None,
) -> Metric:
    return Metric(
        count,
        total,
        lo if lo is not None else math.inf,
        hi if hi is not None else -math.inf,
        bins,
        q,
    )


def rollup_from_row(row: Sequence[Any]) -> Rollup:
    """Inverse of ``rollup_to_row``: ``row`` holds the stored columns, key excluded."""
    (
        requests,
        failed_requests,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        cost_nanos,
        unpriced_requests,
        unpriced_input_tokens,
        unpriced_output_tokens,
        d_count,
        d_sum,
        d_min,
        d_max,
        t_count,
        t_sum,
        t_min,
        t_max,
        sketches,
        mix,
    ) = row
    b = _decode_sketches(sketches) if sketches is not None else _SketchBlob(0, 0, [], 0, 0, [])
    models, providers, endpoints = _decode_mix(mix) if mix is not None else ({}, {}, {})
    return Rollup(
        requests,
        failed_requests,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        cost_nanos,
        unpriced_requests,
        unpriced_input_tokens,
        unpriced_output_tokens,
        _metric(d_count, d_sum, d_min, d_max, Bins(b.d_lo, b.d_counts, b.d_zero), b.d_q),
        _metric(t_count, t_sum, t_min, t_max, Bins(b.t_lo, b.t_counts, b.t_zero), b.t_q),
        models,
        providers,
        endpoints,
    )


_SeriesKey: TypeAlias = tuple[int, str, str, str, str, str, bool]
# The facet value of a series key, per facet (status is derived from ``failed``).
_FACETS: Final = (
    ("", lambda k: ""),
    ("model", lambda k: k[1]),
    ("provider", lambda k: k[2]),
    ("agent", lambda k: k[3]),
    ("provider_id", lambda k: k[4]),
    ("endpoint", lambda k: k[5]),
    ("status", lambda k: status_of(k[6])),
)


_Slot: TypeAlias = tuple[list[int], list[float], list[float]]
"""One series of a batch: its ten counters (``COUNTERS`` order), durations and TTFTs."""


def _fold_series(events: Iterable[AnalyticsEvent]) -> dict[_SeriesKey, _Slot]:
    # The per-event hot path of every write: no method calls in it. Latencies are kept
    # as values; they are bucketed per facet row, in C (``Metric.add_many``).
    series: dict[_SeriesKey, _Slot] = {}
    for e in events:
        p = e.payload
        cls = type(p)
        if cls is not LlmRequestCompleted and cls is not LlmRequestFailed:
            continue
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        failed = cls is LlmRequestFailed
        ts = e.timestamp_ms
        key = (
            ts - ts % MINUTE_MS,
            p.model,
            p.provider,
            e.agent_id or "",
            p.provider_id or "",
            p.endpoint or "",
            failed,
        )
        slot = series.get(key)
        if slot is None:
            slot = series[key] = ([0] * 10, [], [])
        c = slot[0]
        c[0] += 1
        if failed:
            c[1] += 1
        c[2] += p.input_tokens
        c[3] += p.output_tokens
        c[4] += p.cached_input_tokens
        c[5] += p.cache_write_input_tokens
        c[6] += p.cost_nanos
        if p.pricing_status == "unpriced":
            c[7] += 1
            c[8] += p.input_tokens
            c[9] += p.output_tokens
        if p.duration_ms is not None:
            slot[1].append(p.duration_ms)
        if p.ttft_ms is not None:
            slot[2].append(p.ttft_ms)
    return series


def _from_series(parts: list[tuple[_SeriesKey, _Slot]]) -> Rollup:
    """The rollup of some series of one minute, from their counters and raw latencies."""
    r = Rollup()
    if len(parts) == 1:
        counters = parts[0][1][0]
    else:
        counters = list(map(sum, zip(*(slot[0] for _, slot in parts), strict=True)))
    (
        r.requests,
        r.failed_requests,
        r.input_tokens,
        r.output_tokens,
        r.cached_input_tokens,
        r.cache_write_input_tokens,
        r.cost_nanos,
        r.unpriced_requests,
        r.unpriced_input_tokens,
        r.unpriced_output_tokens,
    ) = counters
    r.duration.add_many(list(chain.from_iterable(slot[1] for _, slot in parts)))
    r.ttft.add_many(list(chain.from_iterable(slot[2] for _, slot in parts)))
    for key, slot in parts:
        n = slot[0][0]
        r.models[key[1]] = r.models.get(key[1], 0) + n
        r.providers[key[2]] = r.providers.get(key[2], 0) + n
        if key[5]:
            r.endpoints[key[5]] = r.endpoints.get(key[5], 0) + n
    return r


def _merged_metric(parts: list[Metric]) -> Metric:
    """One metric holding all of ``parts``: the bins are allocated once over the union of
    their ranges, then each part is added with one C-level slice ``map(add)``."""
    full = [m for m in parts if m.count]
    if not full:
        return Metric()
    if len(full) == 1:
        m = full[0]
        return Metric(
            m.count, m.sum, m.min, m.max, Bins(m.bins.lo, m.bins.counts.copy(), m.bins.zero)
        )
    dense = [m.bins for m in full if m.bins.counts]
    lo = min(b.lo for b in dense) if dense else 0
    counts = [0] * ((max(b.lo + len(b.counts) for b in dense) - lo) if dense else 0)
    for b in dense:
        off = b.lo - lo
        end = off + len(b.counts)
        counts[off:end] = map(add, counts[off:end], b.counts)
    return Metric(
        sum(m.count for m in full),
        sum(m.sum for m in full),
        min(m.min for m in full),
        max(m.max for m in full),
        Bins(lo, counts, sum(m.bins.zero for m in full)),
    )


def _merged(parts: list[Rollup]) -> Rollup:
    """``parts`` merged into one new rollup (or the only part itself: read-only)."""
    if len(parts) == 1:
        return parts[0]
    acc = Rollup(
        duration=_merged_metric([r.duration for r in parts]),
        ttft=_merged_metric([r.ttft for r in parts]),
    )
    (
        acc.requests,
        acc.failed_requests,
        acc.input_tokens,
        acc.output_tokens,
        acc.cached_input_tokens,
        acc.cache_write_input_tokens,
        acc.cost_nanos,
        acc.unpriced_requests,
        acc.unpriced_input_tokens,
        acc.unpriced_output_tokens,
    ) = map(sum, zip(*(r.counters() for r in parts), strict=True))
    for r in parts:
        for mine, theirs in (
            (acc.models, r.models),
            (acc.providers, r.providers),
            (acc.endpoints, r.endpoints),
        ):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
    return acc


def _facet_rows(items: list[tuple[_SeriesKey, _Slot]]) -> dict[tuple[str, str], Rollup]:
    """The rows of one minute, ``(dim, value) -> rollup``, from its series.

    A facet whose values are a coarsening of another's (each model has one provider,
    say) is merged from that facet's few rows; the others are built from their series'
    raw values (one C-level bucketing pass each), never by merging per-series sketches —
    so the cost follows the batch's events, not the number of series in it.
    """
    groups: dict[str, dict[str, list[int]]] = {}
    for dim, value_of_key in _FACETS:
        by_value: dict[str, list[int]] = {}
        for i, (key, _) in enumerate(items):
            by_value.setdefault(value_of_key(key), []).append(i)
        groups[dim] = by_value
    value_at = {dim: {i: v for v, ix in g.items() for i in ix} for dim, g in groups.items()}
    rows: dict[tuple[str, str], Rollup] = {}
    done: list[str] = []
    # Finest facets first, so coarser ones can be built from them.
    for dim in sorted(groups, key=lambda d: -len(groups[d])):
        by_value = groups[dim]
        source = None
        for finer in sorted(done, key=lambda d: len(groups[d])):
            # ``finer`` refines ``dim`` when all series of each of its values share one
            # value of ``dim``; the ``dim`` rows are then merges of ``finer`` rows.
            mapping: dict[str, str] = {}
            for v, ix in groups[finer].items():
                targets = {value_at[dim][i] for i in ix}
                if len(targets) != 1:
                    break
                mapping[v] = targets.pop()
            else:
                source = (finer, mapping)
                break
        if source is None:
            for value, ix in by_value.items():
                rows[(dim, value)] = _from_series([items[i] for i in ix])
        else:
            finer, mapping = source
            parts: dict[str, list[Rollup]] = {}
            for v, target in mapping.items():
                parts.setdefault(target, []).append(rows[(finer, v)])
            for value, rs in parts.items():
                rows[(dim, value)] = _merged(rs)
        done.append(dim)
    return rows


def rollup_events(events: Iterable[AnalyticsEvent]) -> dict[RollupKey, Rollup]:
    """What ``events`` add to each rollup row (request events only; others are ignored).

    The returned rollups are read-only: one object may stand for several rows (a facet
    with a single value in a minute is the all-requests row; an hour with one minute is
    that minute). Merge them *into* other rollups, never the other way round.

    Events are folded per minute and full series in one pass; each minute's series are
    then merged per facet value (``_facet_rows``), and hours from their minutes — so a
    batch costs a few merges per series, not per event.
    """
    by_minute: dict[int, list[tuple[_SeriesKey, _Slot]]] = {}
    for key, slot in _fold_series(events).items():
        by_minute.setdefault(key[0], []).append((key, slot))
    out: dict[RollupKey, Rollup] = {}
    hours: dict[RollupKey, list[Rollup]] = {}
    for minute, items in by_minute.items():
        hour = minute - minute % HOUR_MS
        for (dim, value), row in _facet_rows(items).items():
            out[(MINUTE_MS, dim, minute, value)] = row
            hours.setdefault((HOUR_MS, dim, hour, value), []).append(row)
    for hour_key, parts in hours.items():
        out[hour_key] = _merged(parts)
    return out

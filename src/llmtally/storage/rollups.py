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
is a C-level ``map(add)`` and a quantile a ``bisect`` over running (or block) sums:
reading a month of hourly rows must take milliseconds, not seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain, zip_longest
from operator import add, itemgetter
from typing import Any, Final, TypeAlias

import msgspec

from ..analysis.sketch import (
    MAX_BUCKET,
    MAX_VALUE,
    MIN_BUCKET,
    MIN_VALUE,
    ZERO_BUCKET,
    bucket_of,
    buckets_in_range,
    value_of,
)
from ..analysis.stats import Tally
from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from .rows import COLUMNS, endpoint_of

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
    "rollup_rows",
    "rollup_to_row",
    "status_of",
]

# Buckets come from ``sketch.py`` alone (``bucket_of``, ``buckets_in_range``): the bulk
# paths below bucket exactly like ``bucket_of``, and like the aggregator's sketches.
_BLOCK: Final = 16  # buckets per block sum in ``Bins.quantiles``
_FEW_BUCKETS: Final = 512  # ``Bins.quantiles``: running totals up to this many buckets
_count_into: Final[Callable[[dict[int, int], Iterable[int]], None]] = _count_elements
"""``_count_into(d, keys)`` adds 1 to ``d[k]`` for each ``k`` of ``keys``, in C."""

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
        return cls(MIN_BUCKET, [0] * (MAX_BUCKET - MIN_BUCKET + 1))

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

        Running totals are made in C (``accumulate``) and a ``bisect`` finds each rank's
        bucket; over many buckets (``Bins.spanning``), sums of ``_BLOCK`` buckets instead,
        and a short scan within the block: about a tenth of the work.
        """
        n = self.total() if count is None else count
        if n <= 0:
            return [None] * len(qs)
        counts, zero, lo = self.counts, self.zero, self.lo
        last = len(counts) - 1
        out: list[float | None] = []
        if len(counts) <= _FEW_BUCKETS:
            ends = list(accumulate(counts))
            for q in qs:
                rank = q * (n - 1) - zero
                # The first bucket whose running total passes rank.
                out.append(0.0 if rank < 0 else value_of(lo + min(bisect_right(ends, rank), last)))
            return out
        starts = list(accumulate(map(sum, zip_longest(*[iter(counts)] * _BLOCK, fillvalue=0))))
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
            out.append(value_of(lo + min(i, last)))
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
            buckets = Counter(buckets_in_range(values))
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
"""``(minute, model, provider, agent, provider_id, endpoint, failed)``: one series of a
batch (an absent agent, API key or endpoint is ``""``)."""
_Slot: TypeAlias = tuple[list[int], list[float], list[float]]
"""One series of a batch: its ten counters (``COUNTERS`` order), durations and TTFTs."""

_COMPLETED: Final = "llm_request_completed"
# For ``isinstance``: a tuple, as ``A | B`` would build a union on every call.
_REQUEST_PAYLOADS: Final = (LlmRequestCompleted, LlmRequestFailed)
_FAILED: Final = "llm_request_failed"
# Where ``_fold_rows`` finds what it needs in a ``rows.COLUMNS`` row.
(
    _TYPE,
    _TS,
    _AGENT,
    _PROVIDER_ID,
    _PROVIDER,
    _MODEL,
    _INPUT,
    _OUTPUT,
    _CACHED,
    _CACHE_WRITE,
    _COST,
    _PRICING,
    _DURATION,
    _TTFT,
    _EXTRA,
) = map(
    COLUMNS.index,
    (
        "event_type",
        "timestamp_ms",
        "agent_id",
        "provider_id",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_input_tokens",
        "cost_nanos",
        "pricing_status",
        "duration_ms",
        "ttft_ms",
        "extra",
    ),
)


def _fold_series(events: Iterable[AnalyticsEvent]) -> dict[_SeriesKey, _Slot]:
    # The per-event hot path of every write: no method calls in it. Latencies are kept
    # as values; they are bucketed once per batch, in C (``_bucketed``).
    series: dict[_SeriesKey, _Slot] = {}
    for e in events:
        p = e.payload
        cls = type(p)
        if cls is not LlmRequestCompleted and cls is not LlmRequestFailed:
            continue
        assert isinstance(p, _REQUEST_PAYLOADS)
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


def _fold_rows(rows: Iterable[Sequence[Any]]) -> dict[_SeriesKey, _Slot]:
    """``_fold_series`` of the events ``rows`` hold, read from the rows themselves: the
    same series, in the same order (``row_to_event`` is not needed)."""
    series: dict[_SeriesKey, _Slot] = {}
    for r in rows:
        event_type = r[_TYPE]
        if event_type != _COMPLETED and event_type != _FAILED:
            continue
        failed = event_type == _FAILED
        ts = r[_TS]
        extra = r[_EXTRA]
        key = (
            ts - ts % MINUTE_MS,
            r[_MODEL],
            r[_PROVIDER],
            r[_AGENT] or "",
            r[_PROVIDER_ID] or "",
            "" if extra is None else endpoint_of(extra),
            failed,
        )
        slot = series.get(key)
        if slot is None:
            slot = series[key] = ([0] * 10, [], [])
        c = slot[0]
        input_tokens = r[_INPUT]
        output_tokens = r[_OUTPUT]
        c[0] += 1
        if failed:
            c[1] += 1
        c[2] += input_tokens
        c[3] += output_tokens
        c[4] += r[_CACHED]
        c[5] += r[_CACHE_WRITE]
        c[6] += r[_COST]
        if r[_PRICING] == "unpriced":
            c[7] += 1
            c[8] += input_tokens
            c[9] += output_tokens
        if (duration := r[_DURATION]) is not None:
            slot[1].append(duration)
        if (ttft := r[_TTFT]) is not None:
            slot[2].append(ttft)
    return series


def _bucketed(values: list[list[float]]) -> list[list[int]]:
    """Each list of ``values`` as the buckets of its values (``bucket_of``), computed in
    one C-level pass over all of them (per value, the same expression as
    ``bucket_of`` when every value is within ``[MIN_VALUE, MAX_VALUE]``)."""
    flat = list(chain.from_iterable(values))
    if not flat:
        return [[] for _ in values]
    if min(flat) >= MIN_VALUE and max(flat) <= MAX_VALUE:
        buckets = list(buckets_in_range(flat))
    else:
        buckets = list(map(bucket_of, flat))
    out: list[list[int]] = []
    start = 0
    for v in values:
        end = start + len(v)
        out.append(buckets[start:end])
        start = end
    return out


def _metric_of(values: list[float], buckets: Iterable[int]) -> Metric:
    """The metric of ``values`` (``Metric().add_many(values)``, bit for bit) from their
    ``buckets``, already computed."""
    if not values:
        return Metric()
    counts: dict[int, int] = {}
    _count_into(counts, buckets)
    zero = counts.pop(ZERO_BUCKET, 0)
    lo, hi = (min(counts), max(counts)) if counts else (0, -1)
    dense = [0] * (hi - lo + 1)
    for b, n in counts.items():
        dense[b - lo] = n
    return Metric(len(values), 0.0 + sum(values), min(values), max(values), Bins(lo, dense, zero))


class _Series:
    """A batch's series as parallel lists (index ``i`` is one series), latencies bucketed."""

    __slots__ = (
        "counters",
        "duration_buckets",
        "durations",
        "keys",
        "mix_of",
        "mixes",
        "requests",
        "ttft_buckets",
        "ttfts",
    )

    def __init__(self, series: dict[_SeriesKey, _Slot]) -> None:
        self.keys = list(series)
        slots = series.values()
        self.counters = [s[0] for s in slots]
        self.requests = [c[0] for c in self.counters]
        self.durations = [s[1] for s in slots]
        self.ttfts = [s[2] for s in slots]
        self.duration_buckets = _bucketed(self.durations)
        self.ttft_buckets = _bucketed(self.ttfts)
        # Each series' (model, provider, endpoint): what the mix columns count. A batch
        # has few of them, so a row counts its requests per mix, then spreads them.
        mixes: dict[tuple[str, str, str], int] = {}
        self.mix_of = [mixes.setdefault((k[1], k[2], k[5]), len(mixes)) for k in self.keys]
        self.mixes = list(mixes)

    def rollup(self, ix: list[int]) -> Rollup:
        """The rollup of the series ``ix`` (of one minute)."""
        if len(ix) == 1:
            (i,) = ix
            counters = self.counters[i]
            duration = _metric_of(self.durations[i], self.duration_buckets[i])
            ttft = _metric_of(self.ttfts[i], self.ttft_buckets[i])
            per_mix = {self.mix_of[i]: self.requests[i]}
        else:
            pick = itemgetter(*ix)
            counters = list(map(sum, zip(*pick(self.counters), strict=True)))
            duration = _metric_of(
                list(chain.from_iterable(pick(self.durations))),
                chain.from_iterable(pick(self.duration_buckets)),
            )
            ttft = _metric_of(
                list(chain.from_iterable(pick(self.ttfts))),
                chain.from_iterable(pick(self.ttft_buckets)),
            )
            per_mix = {}
            for m, n in zip(pick(self.mix_of), pick(self.requests), strict=True):
                per_mix[m] = per_mix.get(m, 0) + n
        models: dict[str, int] = {}
        providers: dict[str, int] = {}
        endpoints: dict[str, int] = {}
        mixes = self.mixes
        for m, n in per_mix.items():
            model, provider, endpoint = mixes[m]
            models[model] = models.get(model, 0) + n
            providers[provider] = providers.get(provider, 0) + n
            if endpoint:
                endpoints[endpoint] = endpoints.get(endpoint, 0) + n
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
        ) = counters
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
            duration,
            ttft,
            models,
            providers,
            endpoints,
        )


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


def _facet_values(keys: list[_SeriesKey]) -> dict[str, list[str]]:
    """Each facet's value of each series key (``DIMENSIONS`` order)."""
    return {
        "": [""] * len(keys),
        "model": [k[1] for k in keys],
        "provider": [k[2] for k in keys],
        "agent": [k[3] for k in keys],
        "provider_id": [k[4] for k in keys],
        "endpoint": [k[5] for k in keys],
        "status": ["failure" if k[6] else "success" for k in keys],
    }


def _facet_rows(series: _Series, ix: list[int]) -> dict[tuple[str, str], Rollup]:
    """The rows of one minute, ``(dim, value) -> rollup``, from its series ``ix``.

    A facet whose values are a coarsening of another's (each model has one provider,
    say) is merged from that facet's few rows; the others are built from their series'
    counters and bucketed values (``_Series.rollup``), never by merging per-series
    sketches — so the cost follows the batch's events, not the number of series in it.
    """
    values = _facet_values([series.keys[i] for i in ix])
    groups: dict[str, dict[str, list[int]]] = {}
    for dim, vs in values.items():
        by_value: dict[str, list[int]] = {}
        for i, v in zip(ix, vs, strict=True):
            found = by_value.get(v)
            if found is None:
                by_value[v] = [i]
            else:
                found.append(i)
        groups[dim] = by_value
    rows: dict[tuple[str, str], Rollup] = {}
    done: list[str] = []
    # Finest facets first, so coarser ones can be built from them.
    for dim in sorted(groups, key=lambda d: -len(groups[d])):
        source = None
        for finer in sorted(done, key=lambda d: len(groups[d])):
            # ``finer`` refines ``dim`` when each of its values goes with one value of
            # ``dim``; the ``dim`` rows are then merges of ``finer`` rows.
            pairs = zip(values[finer], values[dim], strict=True)
            if len(set(pairs)) == len(groups[finer]):
                source = finer, dict(zip(values[finer], values[dim], strict=True))
                break
        if source is None:
            for value, members in groups[dim].items():
                rows[(dim, value)] = series.rollup(members)
        else:
            finer, mapping = source
            parts: dict[str, list[Rollup]] = {}
            for v, target in mapping.items():
                parts.setdefault(target, []).append(rows[(finer, v)])
            for value, rs in parts.items():
                rows[(dim, value)] = _merged(rs)
        done.append(dim)
    return rows


def _rollup_series(folded: dict[_SeriesKey, _Slot]) -> dict[RollupKey, Rollup]:
    """The rollup rows of a batch's series: each minute's series merged per facet value
    (``_facet_rows``), and hours from their minutes."""
    series = _Series(folded)
    by_minute: dict[int, list[int]] = {}
    for i, key in enumerate(series.keys):
        members = by_minute.get(key[0])
        if members is None:
            by_minute[key[0]] = [i]
        else:
            members.append(i)
    out: dict[RollupKey, Rollup] = {}
    hours: dict[RollupKey, list[Rollup]] = {}
    for minute, ix in by_minute.items():
        hour = minute - minute % HOUR_MS
        for (dim, value), row in _facet_rows(series, ix).items():
            out[(MINUTE_MS, dim, minute, value)] = row
            hours.setdefault((HOUR_MS, dim, hour, value), []).append(row)
    for hour_key, parts in hours.items():
        out[hour_key] = _merged(parts)
    return out


def rollup_events(events: Iterable[AnalyticsEvent]) -> dict[RollupKey, Rollup]:
    """What ``events`` add to each rollup row (request events only; others are ignored).

    The returned rollups are read-only: one object may stand for several rows (a facet
    with a single value in a minute is the all-requests row; an hour with one minute is
    that minute). Merge them *into* other rollups, never the other way round.

    Events are folded per minute and full series in one pass, and each latency is
    bucketed once (in C); each minute's series are then merged per facet value
    (``_facet_rows``), and hours from their minutes — so a batch costs a few merges per
    series, not per event.
    """
    return _rollup_series(_fold_series(events))


def rollup_rows(rows: Iterable[Sequence[Any]]) -> dict[RollupKey, Rollup]:
    """``rollup_events`` of the events ``rows`` hold (``rows.COLUMNS`` order, as
    ``event_to_row`` builds them), read from the rows directly: the same result, without
    ``row_to_event``."""
    return _rollup_series(_fold_rows(rows))

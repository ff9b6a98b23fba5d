"""Streaming latency: time to first token, inter-token latency, decode rate.

``StreamTimings`` measures one stream from explicit monotonic timestamps in integer
nanoseconds (``time.perf_counter_ns()``/``time.monotonic_ns()`` of the caller).
``StreamingStats`` aggregates finished streams per model in mergeable sketches.

Definitions (one stream; a *chunk* is one ``token(t, n)`` call carrying ``n`` tokens):

- **TTFT** = first-token time − start. The first-token time is the one given to
  ``first_token(t)`` if called, else the arrival of the first chunk.
- **ITL** (inter-token latency): each chunk after the first gives its ``n`` tokens a
  latency of ``gap / n``, where ``gap`` is the time since the previous chunk (the
  GenAI-Perf convention; with one token per chunk, ITL is the gap between arrivals).
  ``itl_mean_ms`` is the token-weighted mean, which equals
  ``(last arrival − first arrival) / (tokens − tokens of the first chunk)`` (a.k.a. TPOT);
  ``itl_p95_ms`` the token-weighted 95th percentile (lower-rank convention, like
  ``LogSketch``): exact while the stream has at most ``max_samples`` chunks, then within
  the sketch's 1% relative accuracy.
- **tokens/s** (decode rate) = (tokens − tokens of the first chunk) / (last arrival − first
  arrival), in seconds: ``1000 / itl_mean_ms``. ``None`` with fewer than two chunks or
  when they all arrived at the same instant.
- **duration** = finish − start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal, TypeAlias

import msgspec

from .._exceptions import ValidationError
from .sketch import LogSketch, SketchSummary, bucket_of
from .stats import OTHER, Quantiles, SeriesKey, Tally

__all__ = [
    "StreamOutcome",
    "StreamResult",
    "StreamSketches",
    "StreamTimings",
    "StreamingModelStats",
    "StreamingSnapshot",
    "StreamingStats",
]

StreamOutcome: TypeAlias = Literal["completed", "failed", "cancelled"]

_NS_PER_MS: Final = 1_000_000
_NS_PER_S: Final = 1_000_000_000


class StreamResult(msgspec.Struct, frozen=True, kw_only=True):
    """The measurements of one finished stream (see the module docstring). Times in ms."""

    duration_ms: float
    ttft_ms: float | None
    itl_mean_ms: float | None
    itl_p95_ms: float | None
    output_tokens: int
    chunks: int
    tokens_per_s: float | None


def _add_weighted(sketch: LogSketch, value: float, n: int) -> None:
    """``n`` times ``sketch.add(value)``, in O(1)."""
    b = bucket_of(value)
    sketch.bins[b] = sketch.bins.get(b, 0) + n
    sketch.count += n
    sketch.sum += value * n
    if value < sketch.min:
        sketch.min = value
    if value > sketch.max:
        sketch.max = value


def _merge_into(mine: LogSketch, x: LogSketch) -> None:
    """``mine.merge(x)`` (same result), min and max by comparison (no builtin calls)."""
    bins = mine.bins
    for b, n in x.bins.items():
        bins[b] = bins.get(b, 0) + n
    mine.count += x.count
    mine.sum += x.sum
    if x.min < mine.min:
        mine.min = x.min
    if x.max > mine.max:
        mine.max = x.max


def _take(mine: LogSketch, sketches: Iterable[LogSketch], pending: list[float]) -> None:
    """Add ``sketches`` to ``mine`` in order, as ``StreamingStats.observe_series`` does: a
    sketch of one value as that value (its ``min``), appended to ``pending`` (the values
    ``mine`` adds in bulk at its next fold), a larger one merged."""
    for x in sketches:
        c = x.count
        if c == 1:
            pending.append(x.min)
        elif c:
            _merge_into(mine, x)


class StreamTimings:
    """Accumulates the timestamps of ONE stream: ``start``, ``token``…, ``finish``.

    Memory is bounded: at most ``max_samples`` chunk gaps are kept exactly, later ones go
    to a ``LogSketch``. Timestamps are integer nanoseconds from one monotonic clock and
    must not decrease; a call out of order (``token`` before ``start``, a timestamp earlier
    than the previous one, anything after ``finish``) raises ``ValidationError``.
    """

    __slots__ = (
        "_first_arrival",
        "_first_n",
        "_gaps",
        "_last_arrival",
        "_last_t",
        "_overflow",
        "_start",
        "_ttft_at",
        "chunks",
        "finished",
        "max_samples",
        "output_tokens",
    )

    def __init__(self, *, max_samples: int = 4096) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.max_samples = max_samples
        self.output_tokens = 0
        self.chunks = 0
        self.finished = False
        self._start: int | None = None
        self._ttft_at: int | None = None
        self._first_arrival: int | None = None
        self._first_n = 0
        self._last_arrival = 0
        self._last_t = 0
        self._gaps: list[tuple[int, int]] = []  # (gap_ns, tokens) per chunk after the first
        self._overflow: LogSketch | None = None  # per-token ITL in ms, once _gaps is full

    def _advance(self, t_ns: int, what: str) -> None:
        if self._start is None:
            raise ValidationError(f"{what} before start()")
        if self.finished:
            raise ValidationError(f"{what} after finish()")
        if t_ns < self._last_t:
            raise ValidationError(f"{what} at {t_ns} ns is before the previous timestamp")
        self._last_t = t_ns

    def start(self, t_ns: int) -> None:
        """The request was sent at ``t_ns``. Raises ``ValidationError`` if called twice."""
        if self._start is not None:
            raise ValidationError("start() called twice")
        self._start = self._last_t = t_ns

    def first_token(self, t_ns: int) -> None:
        """Mark the first token's arrival for TTFT, without counting tokens (use it when
        tokens are counted elsewhere); ignored after the first token is known."""
        self._advance(t_ns, "first_token()")
        if self._ttft_at is None:
            self._ttft_at = t_ns

    def token(self, t_ns: int, n: int = 1) -> None:
        """A chunk of ``n >= 1`` output tokens arrived at ``t_ns``."""
        if n < 1:
            raise ValidationError(f"a chunk carries at least 1 token, got {n}")
        self._advance(t_ns, "token()")
        self.output_tokens += n
        self.chunks += 1
        if self._first_arrival is None:
            self._first_arrival = t_ns
            self._first_n = n
            if self._ttft_at is None:
                self._ttft_at = t_ns
        else:
            gap = t_ns - self._last_arrival
            if self._overflow is not None:
                _add_weighted(self._overflow, gap / n / _NS_PER_MS, n)
            elif len(self._gaps) < self.max_samples:
                self._gaps.append((gap, n))
            else:
                sketch = self._overflow = LogSketch()
                for g, k in self._gaps:
                    _add_weighted(sketch, g / k / _NS_PER_MS, k)
                self._gaps.clear()
                _add_weighted(sketch, gap / n / _NS_PER_MS, n)
        self._last_arrival = t_ns

    def itl_quantile(self, q: float) -> float | None:
        """The token-weighted ``q``-quantile of per-token ITL so far, in ms (``None``
        before a second chunk). Exact up to ``max_samples`` chunks, then ±1%.
        Raises ``ValueError`` unless ``0 <= q <= 1``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self._overflow is not None:
            return self._overflow.quantile(q)
        if not self._gaps:
            return None
        # Token-weighted lower-rank quantile: rank over tokens, each chunk's n at gap/n.
        ordered = sorted(self._gaps, key=lambda gn: gn[0] / gn[1])
        rank = q * (sum(n for _, n in ordered) - 1)
        seen = 0
        for gap, n in ordered:
            seen += n
            if seen > rank:
                return gap / n / _NS_PER_MS
        gap, n = ordered[-1]  # pragma: no cover - seen ends at total > rank
        return gap / n / _NS_PER_MS

    def finish(self, t_ns: int) -> StreamResult:
        """The stream ended at ``t_ns`` (completed, failed or cancelled: the caller tells
        ``StreamingStats``); returns its measurements."""
        self._advance(t_ns, "finish()")
        self.finished = True
        start = self._start
        assert start is not None
        after_first = self.output_tokens - self._first_n
        span = self._last_arrival - (self._first_arrival or 0)
        decoding = self.chunks > 1
        return StreamResult(
            duration_ms=(t_ns - start) / _NS_PER_MS,
            ttft_ms=None if self._ttft_at is None else (self._ttft_at - start) / _NS_PER_MS,
            itl_mean_ms=span / after_first / _NS_PER_MS if decoding else None,
            itl_p95_ms=self.itl_quantile(0.95) if decoding else None,
            output_tokens=self.output_tokens,
            chunks=self.chunks,
            tokens_per_s=after_first * _NS_PER_S / span if decoding and span > 0 else None,
        )


# --- aggregate across streams -----------------------------------------------------------


class StreamingModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """Streams of one model (or of all models).

    ``active_streams`` is started minus finished (never below 0). ``completion_rate`` is
    completed / (completed + failed + cancelled), ``None`` before any stream finished.
    Percentiles are across streams, one value per stream: its TTFT, its mean ITL, its
    decode rate (``tokens_per_s``, in tokens per second, not ms) and its duration.
    """

    active_streams: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    completion_rate: float | None = None
    output_tokens: int = 0
    ttft_ms: Quantiles = Quantiles()
    itl_ms: Quantiles = Quantiles()
    tokens_per_s: Quantiles = Quantiles()
    duration_ms: Quantiles = Quantiles()


class StreamingSnapshot(StreamingModelStats, frozen=True, kw_only=True):
    """Streams of all models, and ``by_model`` (models past the cardinality limit are
    counted under ``"(other)"``)."""

    by_model: dict[str, StreamingModelStats] = {}


def _quantiles(s: LogSketch) -> Quantiles:
    p50, p95, p99 = s.quantiles(0.5, 0.95, 0.99)
    return Quantiles(p50=p50, p95=p95, p99=p99, count=s.count)


class StreamSketches(msgspec.Struct, frozen=True, kw_only=True):
    """The latency sketches of one model's streams, summarized for exporters (ms, except
    ``tokens_per_s``)."""

    ttft_ms: SketchSummary
    itl_ms: SketchSummary
    tokens_per_s: SketchSummary
    duration_ms: SketchSummary


FOLD_AT: Final = 512
"""``observe_many`` collects values and adds them to the sketches this many at a time (a
bulk add has a fixed cost; small batches would pay it often). Reads fold first."""


class _Streams:
    __slots__ = (
        "active",
        "cancelled",
        "completed",
        "duration",
        "failed",
        "itl",
        "output_tokens",
        "pending",
        "started",
        "tps",
        "ttft",
    )

    def __init__(self) -> None:
        self.active = 0
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.output_tokens = 0
        self.ttft = LogSketch()
        self.itl = LogSketch()
        self.tps = LogSketch()
        self.duration = LogSketch()
        # Values not yet in the sketches: ttft, itl, tps, duration (see FOLD_AT).
        self.pending: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])

    def fold(self) -> None:
        """Add the pending values to the sketches."""
        for sketch, values in zip(
            (self.ttft, self.itl, self.tps, self.duration), self.pending, strict=True
        ):
            if values:
                sketch.add_many(values)
                values.clear()

    def settle(self) -> None:
        """Fold once ``FOLD_AT`` values are pending (after each call that adds some)."""
        ttft, itl, tps, duration = self.pending
        if len(ttft) + len(itl) + len(tps) + len(duration) >= FOLD_AT:
            self.fold()

    def count(self, outcome: StreamOutcome, n: int = 1) -> None:
        if outcome == "completed":
            self.completed += n
        elif outcome == "failed":
            self.failed += n
        else:
            self.cancelled += n

    def merge(self, other: _Streams) -> None:
        other.fold()
        self.active += other.active
        self.started += other.started
        self.completed += other.completed
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.output_tokens += other.output_tokens
        self.ttft.merge(other.ttft)
        self.itl.merge(other.itl)
        self.tps.merge(other.tps)
        self.duration.merge(other.duration)

    def freeze(self) -> StreamingModelStats:
        self.fold()
        ended = self.completed + self.failed + self.cancelled
        return StreamingModelStats(
            active_streams=self.active,
            started=self.started,
            completed=self.completed,
            failed=self.failed,
            cancelled=self.cancelled,
            completion_rate=self.completed / ended if ended else None,
            output_tokens=self.output_tokens,
            ttft_ms=_quantiles(self.ttft),
            itl_ms=_quantiles(self.itl),
            tokens_per_s=_quantiles(self.tps),
            duration_ms=_quantiles(self.duration),
        )


class StreamingStats:
    """Streams across models: an active gauge, outcomes, and latency sketches per model.

    At most ``max_models`` models get their own entry; streams of further models are
    counted under ``"(other)"``. Sketches are kept per model only; the totals across
    models are merged when a snapshot is taken. Not thread-safe: used from one thread (the
    aggregator actor feeds outcomes and latencies; ``EventStore.track_stream`` moves the
    active gauge with ``started``/``ended`` — synchronous calls on the same event loop).
    """

    __slots__ = ("_by_model", "max_models")

    def __init__(self, *, max_models: int = 1000) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self._by_model: dict[str, _Streams] = {}

    def _slot(self, model: str) -> _Streams:
        s = self._by_model.get(model)
        if s is None:
            if len(self._by_model) >= self.max_models:
                model = OTHER
                s = self._by_model.get(model)
            if s is None:
                s = self._by_model[model] = _Streams()
        return s

    @property
    def active_streams(self) -> int:
        """Streams started and not yet finished."""
        return sum(s.active for s in self._by_model.values())

    def started(self, model: str) -> None:
        """A stream of ``model`` started."""
        s = self._slot(model)
        s.started += 1
        s.active += 1

    def ended(self, model: str) -> None:
        """A stream of ``model`` ended: only the active gauge moves (never below 0); its
        outcome and numbers come separately through ``observe``/``observe_many``."""
        s = self._slot(model)
        if s.active:
            s.active -= 1

    def finished(
        self,
        model: str,
        result: StreamResult | None = None,
        *,
        outcome: StreamOutcome = "completed",
    ) -> None:
        """A stream of ``model`` ended with ``outcome``; ``result`` (if measured) feeds the
        sketches whatever the outcome. The active gauge never goes below 0, so ``started``
        is optional for callers that only see ends."""
        self.ended(model)
        if result is None:
            self.observe(model, outcome=outcome)
        else:
            self.observe(
                model,
                outcome=outcome,
                ttft_ms=result.ttft_ms,
                itl_ms=result.itl_mean_ms,
                tokens_per_s=result.tokens_per_s,
                duration_ms=result.duration_ms,
                output_tokens=result.output_tokens,
            )

    def observe(
        self,
        model: str,
        *,
        outcome: StreamOutcome = "completed",
        ttft_ms: float | None = None,
        itl_ms: float | None = None,
        tokens_per_s: float | None = None,
        duration_ms: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """Count a finished stream from its numbers (e.g. from a recorded event's
        ``ttft_ms``); does not touch the active gauge. ``None`` values are skipped.
        Raises ``ValidationError`` for an unknown outcome."""
        if outcome not in ("completed", "failed", "cancelled"):
            raise ValidationError(f"unknown stream outcome: {outcome!r}")
        s = self._slot(model)
        s.count(outcome)
        s.output_tokens += output_tokens
        if ttft_ms is not None:
            s.ttft.add(ttft_ms)
        if itl_ms is not None:
            s.itl.add(itl_ms)
        if tokens_per_s is not None:
            s.tps.add(tokens_per_s)
        if duration_ms is not None:
            s.duration.add(duration_ms)

    def observe_many(
        self,
        model: str,
        *,
        completed: int = 0,
        failed: int = 0,
        cancelled: int = 0,
        output_tokens: int = 0,
        ttft_ms: Sequence[float] = (),
        itl_ms: Sequence[float] = (),
        tokens_per_s: Sequence[float] = (),
        duration_ms: Sequence[float] = (),
        ttft_sketches: Iterable[LogSketch] = (),
        duration_sketches: Iterable[LogSketch] = (),
    ) -> None:
        """``observe`` for many finished streams of one model at once (the aggregator's
        per-batch form): outcome counts, their output tokens, and the values to add to
        each sketch (``ttft_sketches``/``duration_sketches``: values already in sketches,
        merged in, a sketch of one value added as that value with the pending ones). Raises
        ``ValidationError`` for a negative count."""
        if min(completed, failed, cancelled, output_tokens) < 0:
            raise ValidationError("stream counts must not be negative")
        s = self._slot(model)
        s.completed += completed
        s.failed += failed
        s.cancelled += cancelled
        s.output_tokens += output_tokens
        ttft, itl, tps, duration = s.pending
        _take(s.ttft, ttft_sketches, ttft)
        _take(s.duration, duration_sketches, duration)
        ttft += ttft_ms
        itl += itl_ms
        tps += tokens_per_s
        duration += duration_ms
        s.settle()

    def observe_series(
        self,
        series: Mapping[SeriesKey, Tally],
        cancelled: Mapping[str, int],
    ) -> None:
        """Count every request of a batch's series as a finished stream of its model (the
        aggregator's form when every request of the batch is a stream): completed or
        failed, of which ``cancelled[model]`` cancelled; output tokens; TTFT and
        duration sketches merged in. Same result as one ``observe_many`` per model with
        the counts and sketches of its series. ``cancelled`` must not exceed a model's
        failed requests.

        One pass over the series with no per-model call: in small batches (a few
        requests per series) the per-call and per-list overhead was most of the cost.
        """
        by_model = self._by_model
        if OTHER in by_model or len(by_model) + len(series) > self.max_models:
            # Models of the batch may share the "(other)" slot (rare): one observe_many per
            # model, in order of appearance, so the slot sees what it would see then.
            self._observe_series_by_model(series, cancelled)
            return
        slots: dict[str, _Streams] = {}
        for key, t in series.items():
            s = slots.get(key[0])
            if s is None:
                s = slots[key[0]] = self._slot(key[0])
            failed = t.failed_requests
            s.completed += t.requests - failed
            s.failed += failed
            s.output_tokens += t.output_tokens
            # _take, inlined for the TTFT and the duration: most series of a small batch
            # hold one value, which joins the pending values (appended, then bucketed in
            # bulk at the fold: ~2,600 instructions, against ~3,500 to merge its sketch).
            x = t.ttft
            if x.count == 1:
                s.pending[0].append(x.min)
            elif x.count:
                _merge_into(s.ttft, x)
            x = t.duration
            if x.count == 1:
                s.pending[3].append(x.min)
            elif x.count:
                _merge_into(s.duration, x)
        for model, n in cancelled.items():
            s = slots[model]
            s.failed -= n
            s.cancelled += n
        for s in slots.values():  # s.settle(), inlined
            ttft, itl, tps, duration = s.pending
            if len(ttft) + len(itl) + len(tps) + len(duration) >= FOLD_AT:
                s.fold()

    def _observe_series_by_model(
        self, series: Mapping[SeriesKey, Tally], cancelled: Mapping[str, int]
    ) -> None:
        groups: dict[str, list[Tally]] = {}
        for key, t in series.items():
            groups.setdefault(key[0], []).append(t)
        for model, tallies in groups.items():
            failed = sum(t.failed_requests for t in tallies)
            n_cancelled = cancelled.get(model, 0)
            self.observe_many(
                model,
                completed=sum(t.requests for t in tallies) - failed,
                failed=failed - n_cancelled,
                cancelled=n_cancelled,
                output_tokens=sum(t.output_tokens for t in tallies),
                ttft_sketches=[t.ttft for t in tallies],
                duration_sketches=[t.duration for t in tallies],
            )

    def observe_detail(
        self, model: str, itl_ms: Sequence[float], tokens_per_s: Sequence[float]
    ) -> None:
        """Add streams' mean ITLs and decode rates to ``model``'s sketches (the values of
        ``observe_many``, without the counts)."""
        s = self._slot(model)
        ttft, itl, tps, duration = s.pending
        itl += itl_ms
        tps += tokens_per_s
        if len(ttft) + len(itl) + len(tps) + len(duration) >= FOLD_AT:  # s.settle(), inlined
            s.fold()

    def _total(self) -> _Streams:
        total = _Streams()
        for s in self._by_model.values():
            total.merge(s)
        return total

    def snapshot(self) -> StreamingSnapshot:
        """Totals and per-model statistics with p50/p95/p99."""
        return StreamingSnapshot(
            **msgspec.structs.asdict(self._total().freeze()),
            by_model={k: v.freeze() for k, v in self._by_model.items()},
        )

    def sketches(self) -> dict[str, StreamSketches]:
        """Count, sum and quantiles of each model's sketches (for Prometheus summaries)."""
        for s in self._by_model.values():
            s.fold()
        return {
            model: StreamSketches(
                ttft_ms=s.ttft.summary(),
                itl_ms=s.itl.summary(),
                tokens_per_s=s.tps.summary(),
                duration_ms=s.duration.summary(),
            )
            for model, s in self._by_model.items()
        }

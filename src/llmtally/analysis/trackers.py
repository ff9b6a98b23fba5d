"""What the aggregator keeps beside the stats: error patterns, SLO, streaming, budgets.

``Trackers.observe(events)`` folds one batch of events into all four. It is pure and
synchronous (every time is an event's own ``timestamp_ms``), and it is built for the
aggregator's hot loop: one pass over the events in the common case (``_scan``: the
batch's time range, its failed requests, and the streaming detail per model); the rest
is per series or per model, from the batch's ``StatsDelta`` —

- SLO: request counts from the delta, one ``SloTracker.add`` per minute present in the
  batch (usually one);
- budgets: the delta's spend per series, summed per budget (``BudgetBook.spend_series``;
  skipped entirely with no budget) when the batch falls within one minute (budget
  periods start on a minute, so it is within one period), else event by event in time
  order;
- streaming: a model whose requests in the batch are all streams (they all have a TTFT,
  say) takes its counts, output tokens, TTFT and duration sketches from the delta
  (``StreamingStats.observe_series``); only ITL and decode rate are read per event and
  added in bulk. A model mixing streams and other requests is counted event by event;
- errors: failed requests alone pay for message normalization, and a message seen
  word for word before not even that (``ErrorPatterns`` keeps an LRU of fingerprints,
  and skips the hash for a message that normalizes like one seen before).

Which request events are *streams*: those carrying streaming detail (``ttft_ms``,
``itl_mean_ms`` or ``output_tokens_per_s``) and those whose id is in the ``streams``
set passed along (``EventStore.track_stream`` marks its events so, which also counts a
stream that failed before its first token). A stream's outcome: completed for
``llm_request_completed``; for ``llm_request_failed``, cancelled when ``error_code`` is
``"cancelled"``, else failed.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Final, TypeAlias, cast

from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from .budgets import Budget, BudgetBook, ThresholdCrossing
from .errors import ErrorPatterns
from .sketch import LogSketch
from .slo import MINUTE_MS, SloTracker
from .stats import StatsDelta
from .streaming import StreamingStats

__all__ = ["CANCELLED", "Trackers"]

CANCELLED: Final = "cancelled"
"""The ``error_code`` of a request that was cancelled (e.g. the client went away)."""

_Request: TypeAlias = LlmRequestCompleted | LlmRequestFailed
_REQUESTS: Final = (LlmRequestCompleted, LlmRequestFailed)


def _cancelled(failures: list[AnalyticsEvent]) -> dict[str, int]:
    """Cancelled requests per model, among failed request events."""
    cancelled: dict[str, int] = {}
    for e in failures:
        f = e.payload
        assert type(f) is LlmRequestFailed
        if f.error_code == CANCELLED:
            cancelled[f.model] = cancelled.get(f.model, 0) + 1
    return cancelled


_NO_DETAIL: Final[tuple[Sequence[float], Sequence[float]]] = ((), ())


def _scan(
    reqs: Sequence[AnalyticsEvent],
) -> tuple[int, int, list[AnalyticsEvent], dict[str, tuple[list[float], list[float]]]]:
    """What the trackers read of each request event (``reqs``: request events only, at
    least one), in one pass: the earliest and latest timestamps, the failed requests,
    and per model the ITLs and decode rates present (in order). One loop instead of a
    comprehension per field: a pass over the batch costs about as much as the reads in
    it."""
    lo = hi = reqs[0].timestamp_ms
    failures: list[AnalyticsEvent] = []
    detail: dict[str, tuple[list[float], list[float]]] = {}
    for e in reqs:
        t = e.timestamp_ms
        if t < lo:
            lo = t
        elif t > hi:
            hi = t
        p: _Request = e.payload  # type: ignore[assignment]
        if type(p) is LlmRequestFailed:
            failures.append(e)
        itl = p.itl_mean_ms
        tps = p.output_tokens_per_s
        if itl is not None or tps is not None:
            values = detail.get(p.model)
            if values is None:
                values = detail[p.model] = ([], [])
            if itl is not None:
                values[0].append(itl)
            if tps is not None:
                values[1].append(tps)
    return lo, hi, failures, detail


class _ModelBatch:
    """One model's series of a batch, and how many of its requests are streams."""

    __slots__ = ("duration", "failed", "output_tokens", "requests", "ttft", "with_ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.output_tokens = 0
        self.with_ttft = 0  # requests with a TTFT; then every stream (see _observe_streams)
        self.ttft: list[LogSketch] = []
        self.duration: list[LogSketch] = []


class Trackers:
    """Error patterns, SLO counts, streaming statistics and budgets of one store.

    Not thread-safe: one owner (the aggregator actor) feeds it with ``observe``; readers
    on the same event loop take snapshots of the parts (``errors.snapshot()``, …).
    """

    __slots__ = ("budgets", "errors", "slo", "streaming")

    def __init__(
        self,
        budgets: Iterable[Budget] = (),
        *,
        now_ms: int = 0,
        max_patterns: int = 1000,
        max_models: int = 1000,
        max_budgets: int = 10_000,
        reservation_ttl_ms: int = 600_000,
    ) -> None:
        self.errors = ErrorPatterns(max_patterns)
        self.slo = SloTracker()
        self.streaming = StreamingStats(max_models=max_models)
        self.budgets = BudgetBook(
            budgets,
            now_ms=now_ms,
            max_budgets=max_budgets,
            reservation_ttl_ms=reservation_ttl_ms,
        )

    def observe(
        self,
        events: Sequence[AnalyticsEvent],
        delta: StatsDelta,
        streams: Container[str] | None = None,
    ) -> list[ThresholdCrossing]:
        """Fold a batch in; returns the budget thresholds it crossed (report each once).

        ``delta`` is the batch's ``StatsDelta`` (already computed by the aggregator):
        request and error counts, spend per series and the TTFT sketches come from it.
        Events other than request events are ignored. ``streams``: ids of events known
        to be streams whatever their fields (see the module docstring).
        """
        series = delta.series
        if not series:
            return []
        # A loop, not sum(map(attrgetter(...))): a slot read in the loop is specialized,
        # an attrgetter call is not (it was three times slower).
        requests = failed = with_ttft = 0
        for t in series.values():
            requests += t.requests
            failed += t.failed_requests
            with_ttft += t.ttft.count
        # Each request adds at most one TTFT, and a request with a TTFT is a stream.
        all_streams = with_ttft == requests
        if requests == len(events):  # the common case: nothing but request events
            reqs = events
        else:
            reqs = [e for e in events if type(e.payload) in _REQUESTS]
        lo, hi, failures, detail = _scan(reqs)
        m0 = lo // MINUTE_MS * MINUTE_MS
        one_minute = hi < m0 + MINUTE_MS
        if one_minute:  # the common case: one SloTracker.add per batch
            self.slo.add(m0, requests, failed)
        else:
            self._count_slo(reqs)
        observe_error = self.errors.observe
        for e in failures:
            f = e.payload
            assert type(f) is LlmRequestFailed
            observe_error(
                e.timestamp_ms,
                f.error_code,
                f.error_message,
                model=f.model,
                status_code=f.status_code,
                endpoint=f.endpoint,
            )
        if all_streams:  # the usual case: one pass over the series, no per-model lists
            self._observe_all_streams(delta, failures, detail)
        else:
            self._observe_streams(reqs, self._models(delta), failures, streams, detail)
        if not len(self.budgets):
            return []
        if one_minute:  # budget periods start on a minute: the batch is in one period
            return self._spend(delta, m0)
        return self._spend_each(events)

    @staticmethod
    def _models(delta: StatsDelta) -> dict[str, _ModelBatch]:
        models: dict[str, _ModelBatch] = {}
        for key, t in delta.series.items():
            m = models.get(key[0])
            if m is None:
                m = models[key[0]] = _ModelBatch()
            m.requests += t.requests
            m.failed += t.failed_requests
            m.output_tokens += t.output_tokens
            m.with_ttft += t.ttft.count
            m.ttft.append(t.ttft)
            m.duration.append(t.duration)
        return models

    def _observe_all_streams(
        self,
        delta: StatsDelta,
        failures: list[AnalyticsEvent],
        detail: dict[str, tuple[list[float], list[float]]],
    ) -> None:
        # Every request of the batch is a stream: counts, output tokens, TTFT and
        # duration sketches come from the delta's series; ITL and decode rate from the
        # events that carry them (gathered per model by _scan).
        self.streaming.observe_series(delta.series, _cancelled(failures))
        observe_detail = self.streaming.observe_detail
        for name, (itl, tps) in detail.items():
            observe_detail(name, itl, tps)

    def _observe_streams(
        self,
        reqs: Sequence[AnalyticsEvent],
        models: dict[str, _ModelBatch],
        failures: list[AnalyticsEvent],
        streams: Container[str] | None,
        detail: dict[str, tuple[list[float], list[float]]],
    ) -> None:
        # Every request with a TTFT is a stream. A model whose requests of the batch are
        # all streams (the usual case: they all have a TTFT) is counted from the delta:
        # its counts, tokens, TTFT and duration sketches. Only the requests without a
        # TTFT are looked at one by one, to tell streams from the rest.
        ps = cast("list[_Request]", [e.payload for e in reqs])
        if any(m.with_ttft < m.requests for m in models.values()):
            for e, p in zip(reqs, ps, strict=True):
                if p.ttft_ms is None and (
                    p.itl_mean_ms is not None
                    or p.output_tokens_per_s is not None
                    or (streams is not None and e.event_id in streams)
                ):
                    models[p.model].with_ttft += 1  # a stream all the same
        mixed = [name for name, m in models.items() if m.with_ttft < m.requests]
        cancelled = _cancelled(failures)
        observe_many = self.streaming.observe_many
        for name, m in models.items():
            if not m.with_ttft:  # no stream of this model in the batch
                continue
            # Streaming detail (ITL, decode rate) is only ever on streams.
            itl, tps = detail.get(name, _NO_DETAIL)
            if name not in mixed:
                n_cancelled = cancelled.get(name, 0)
                observe_many(
                    name,
                    completed=m.requests - m.failed,
                    failed=m.failed - n_cancelled,
                    cancelled=n_cancelled,
                    output_tokens=m.output_tokens,
                    ttft_sketches=m.ttft,
                    itl_ms=itl,
                    tokens_per_s=tps,
                    duration_sketches=m.duration,
                )
                continue
            # Streams and other requests of one model: the streams one by one.
            mine: list[_Request] = []
            for e, p in zip(reqs, ps, strict=True):
                if p.model == name and (
                    p.ttft_ms is not None
                    or p.itl_mean_ms is not None
                    or p.output_tokens_per_s is not None
                    or (streams is not None and e.event_id in streams)
                ):
                    mine.append(p)
            fails = [p for p in mine if type(p) is LlmRequestFailed]
            n_cancelled = sum(1 for p in fails if p.error_code == CANCELLED)
            observe_many(
                name,
                completed=len(mine) - len(fails),
                failed=len(fails) - n_cancelled,
                cancelled=n_cancelled,
                output_tokens=sum(p.output_tokens for p in mine),
                ttft_sketches=m.ttft,
                itl_ms=itl,
                tokens_per_s=tps,
                duration_ms=[p.duration_ms for p in mine if p.duration_ms is not None],
            )

    def _count_slo(self, events: Sequence[AnalyticsEvent]) -> None:
        minutes: dict[int, list[int]] = {}
        for e in events:
            p = e.payload
            if type(p) is LlmRequestCompleted or type(p) is LlmRequestFailed:
                m = e.timestamp_ms // MINUTE_MS
                counts = minutes.get(m)
                if counts is None:
                    counts = minutes[m] = [0, 0]
                counts[0] += 1
                counts[1] += type(p) is LlmRequestFailed
        for m in sorted(minutes):
            n, errors = minutes[m]
            self.slo.add(m * MINUTE_MS, n, errors)

    def _spend(self, delta: StatsDelta, now_ms: int) -> list[ThresholdCrossing]:
        # Spend per series of the batch (whose events all fall in the minute of now_ms).
        return self.budgets.spend_series(now_ms, delta.series)

    def _spend_each(self, events: Sequence[AnalyticsEvent]) -> list[ThresholdCrossing]:
        # A batch spanning minutes (backfill, a clock jump): event by event, in time order.
        crossings: list[ThresholdCrossing] = []
        spend = self.budgets.spend_nanos
        for e in sorted(events, key=lambda e: e.timestamp_ms):
            p = e.payload
            if isinstance(p, LlmRequestCompleted | LlmRequestFailed) and p.cost_nanos:
                crossings += spend(
                    e.timestamp_ms,
                    p.cost_nanos,
                    agent_id=e.agent_id,
                    provider_id=p.provider_id,
                    model=p.model,
                )
        return crossings

    def add_budget(self, budget: Budget, now_ms: int, spent_nanos: int = 0) -> None:
        """Add a budget whose current period has already seen ``spent_nanos`` (thresholds
        that spend reached count as reported). Raises ``ValidationError`` like
        ``BudgetBook.add``."""
        self.budgets.add(budget, now_ms=now_ms)
        if spent_nanos:
            self.budgets.restore(now_ms, {budget.id: spent_nanos})

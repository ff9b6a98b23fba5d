"""``OtelExporter``: record a store's live events as OpenTelemetry GenAI metrics and spans.

::

    from llmtally.exporters.otel import OtelExporter

    async with EventStore("analytics.db") as store, OtelExporter(store) as exporter:
        ...                       # record as usual; the exporter follows the live events
        await exporter.flush()    # (tests) every event recorded so far is exported

Needs the ``otel`` extra (``pip install 'llmtally[otel]'``): the OpenTelemetry API and
SDK. The exporter only *records* through the OpenTelemetry API — with the global meter and
tracer providers unless others are given — and the SDK's readers and processors export
from their own threads. Configure them so (``PeriodicExportingMetricReader``,
``BatchSpanProcessor``): a ``SimpleSpanProcessor`` with a network exporter would send each
span from the event loop.

What is recorded, and why cost is an integer counter in nano-dollars, is told in
``llmtally.exporters.genai`` (pure, no OpenTelemetry import). Histograms are created with
the conventions' bucket boundaries as ``explicit_bucket_boundaries_advisory`` (OpenTelemetry
API and SDK ≥ 1.30), so no View is needed; a View of the user's still wins.

The actor subscribes to ``store.subscribe()`` with its own bounded buffer (``capacity``,
default: the store's ingest capacity, so a burst the store accepted fits). It never slows
the store: events that do not fit are dropped and counted (``dropped``; also exported as
the counter ``llmtally.exporter.dropped_events``). Spans are root spans (the event carries
no trace context), one per request, with the call's own start and end times.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio
import anyio.lowlevel

try:
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:
    raise ImportError(
        "llmtally.exporters.otel needs the otel extra: pip install 'llmtally[otel]'"
    ) from exc

from .. import __version__
from .._exceptions import StoreClosedError
from ..events import AnalyticsEvent
from .genai import (
    COST,
    DURATION_BUCKETS,
    OPERATION_DURATION,
    TIME_TO_FIRST_CHUNK,
    TOKEN_USAGE,
    TOKEN_USAGE_BUCKETS,
    GenAiMapper,
    GenAiMeasurements,
)

if TYPE_CHECKING:
    from ..pipeline.fanout import Subscription
    from ..store import EventStore

__all__ = ["DROPPED_EVENTS", "OtelExporter"]

logger = logging.getLogger("llmtally")

DROPPED_EVENTS: Final = "llmtally.exporter.dropped_events"

_SCOPE: Final = "llmtally"
_ROOT: Final = Context()  # spans start a trace of their own, whatever is current
_CHECKPOINT_EVERY: Final = 64  # events exported between two yields to the event loop
_LOG_INTERVAL_S: Final = 60.0


class _State(enum.Enum):
    UNOPENED = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


class OtelExporter:
    """Follows ``store``'s live events and records the GenAI metrics (and spans).

    Use as ``async with OtelExporter(store) as exporter:`` inside the store's block. It
    sees the events accepted after it is entered; leaving the block exports what is
    buffered, then stops (so does the store's closing).

    Args:
        store: the ``EventStore`` to follow.
        meter_provider, tracer_provider: OpenTelemetry providers; default: the global ones.
        spans: also record one span per request (``{operation} {model}``, kind CLIENT).
            Turn off when the calls are traced already (an OpenAI/Anthropic SDK
            instrumentation makes the same spans).
        capacity: the exporter's buffer of events; default ``store.capacity``.
        default_operation: ``gen_ai.operation.name`` when an event's endpoint does not
            tell (see ``genai.GenAiMapper``); ``None`` omits it.
        provider_names: llmtally provider → ``gen_ai.provider.name`` overrides.

    Raises ``StoreClosedError`` when entered twice.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        spans: bool = True,
        capacity: int | None = None,
        default_operation: str | None = "chat",
        provider_names: Mapping[str, str] | None = None,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._store = store
        self.capacity = store.capacity if capacity is None else capacity
        self._mapper = GenAiMapper(
            default_operation=default_operation, provider_names=provider_names
        )
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._tokens = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
        )
        self._duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            COST,
            unit="{nanodollar}",
            description="Cost of the GenAI operations in nano-dollars (1 USD = 1e9).",
        )
        meter.create_observable_counter(
            DROPPED_EVENTS,
            callbacks=[self._observe_dropped],
            unit="{event}",
            description="Events the OpenTelemetry exporter lost to its full buffer.",
        )
        self._tracer = (
            trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
            if spans
            else None
        )
        self._state = _State.UNOPENED
        self._stack: AsyncExitStack | None = None
        self._sub: Subscription | None = None
        self._taken = 0  # events received from the subscription, exported or not
        self._exported = 0
        self._errors = 0
        self._lost = 0  # left in the buffer when the loop was cancelled
        self._done = False
        self._waiters: deque[tuple[int, anyio.Event]] = deque()
        self._last_log = -_LOG_INTERVAL_S

    # --- counters ------------------------------------------------------------------------

    @property
    def exported(self) -> int:
        """Request events recorded through OpenTelemetry."""
        return self._exported

    @property
    def dropped(self) -> int:
        """Events lost: the exporter's buffer was full (a slow exporter), or it was
        cancelled with events still buffered."""
        return (0 if self._sub is None else self._sub.dropped) + self._lost

    @property
    def errors(self) -> int:
        """Events whose recording raised (logged at most once a minute)."""
        return self._errors

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called on the metric reader's thread: reading ints needs no lock.
        return (Observation(self.dropped),)

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise StoreClosedError("an OtelExporter can be entered only once; create a new one")
        self._state = _State.OPEN
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._sub = await stack.enter_async_context(self._store.subscribe(self.capacity))
            stack.callback(self._count_leftovers)  # after the loop, before unsubscribing
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._run, self._sub)
        except BaseException as exc:
            self._state = _State.CLOSED
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSING
        assert self._stack is not None and self._sub is not None
        # Graceful stop: no new events; the loop exports what is buffered, then sees the end.
        self._sub.close()
        try:
            await self._stack.aclose()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._state = _State.CLOSED

    def _count_leftovers(self) -> None:
        assert self._sub is not None
        self._lost += self._sub.events.statistics().current_buffer_used

    async def flush(self) -> None:
        """Wait until every event the store accepted before this call is exported (or was
        dropped): ``await store.flush()``, then until the exporter caught up. Does not
        force the SDK to export (``meter_provider.force_flush()`` blocks: call it in a
        worker thread). Returns at once once the exporter stopped; raises
        ``StoreClosedError`` before it is entered."""
        if self._state is _State.UNOPENED or self._sub is None:
            raise StoreClosedError("use the exporter inside `async with OtelExporter(...)`")
        await self._store.flush()
        target = self._sub.delivered
        if self._done or self._taken >= target:
            return
        caught_up = anyio.Event()
        self._waiters.append((target, caught_up))  # targets only grow: the deque is sorted
        await caught_up.wait()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and (self._done or waiters[0][0] <= self._taken):
            waiters.popleft()[1].set()

    # --- the actor -----------------------------------------------------------------------

    async def _run(
        self,
        sub: Subscription,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        rx = sub.events
        receive_nowait = rx.receive_nowait
        export = self._export
        task_status.started()
        since_checkpoint = 0
        try:
            while True:
                try:
                    event = receive_nowait()
                except anyio.WouldBlock:
                    try:
                        event = await rx.receive()
                    except anyio.EndOfStream:
                        return
                    since_checkpoint = 0
                except anyio.EndOfStream:
                    return
                export(event)
                self._taken += 1
                if self._waiters:
                    self._wake()
                since_checkpoint += 1
                if since_checkpoint >= _CHECKPOINT_EVERY:
                    since_checkpoint = 0
                    await anyio.lowlevel.checkpoint()  # a burst must not hold the loop
        finally:
            self._done = True
            self._wake()

    def _export(self, event: AnalyticsEvent) -> None:
        try:
            m = self._mapper.measurements(event)
            if m is None:
                return  # lifecycle and budget events have no GenAI measurements
            self._record(m)
            if self._tracer is not None:
                self._span(event, m, self._tracer)
            self._exported += 1
        except Exception:  # an SDK or exporter bug must not stop the actor
            self._errors += 1
            now = time.monotonic()
            if now - self._last_log >= _LOG_INTERVAL_S:
                self._last_log = now
                logger.exception("llmtally: could not export an event to OpenTelemetry")

    def _record(self, m: GenAiMeasurements) -> None:
        if m.input_tokens is not None:
            self._tokens.record(m.input_tokens, m.input_attributes)
        if m.output_tokens is not None:
            self._tokens.record(m.output_tokens, m.output_attributes)
        if m.duration_s is not None:
            self._duration.record(m.duration_s, m.duration_attributes)
        if m.ttft_s is not None:
            self._ttft.record(m.ttft_s, m.attributes)
        if m.cost_nanos is not None:
            self._cost.add(m.cost_nanos, m.attributes)

    def _span(self, event: AnalyticsEvent, m: GenAiMeasurements, tracer: trace.Tracer) -> None:
        s = self._mapper.span(event, m)
        span = tracer.start_span(
            s.name,
            context=_ROOT,
            kind=SpanKind.CLIENT,
            attributes=s.attributes,
            start_time=s.start_ns,
        )
        if s.error_type is not None:
            span.set_status(Status(StatusCode.ERROR, s.error_message))
        span.end(end_time=s.end_ns)

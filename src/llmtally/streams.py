"""``EventStore.track_stream``: measure one streamed LLM call and record it when it ends.

The handle keeps a ``StreamTimings`` (pure, in ``analysis.streaming``) fed from the
store's monotonic clock (integer nanoseconds, injectable: ``EventStore(monotonic=...)``).
Leaving the block builds one request event from the timings and the usage, and sends it
tagged as a stream (``pipeline.aggregate.TaggedEvent``), so the aggregator counts it in
the streaming statistics even when it failed before its first token.

The active-stream gauge moves here, synchronously on the event loop's thread: up when the
block is entered, down when it is left (the outcome and latencies arrive with the event).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio

from . import _validation as v
from ._exceptions import StoreClosedError, ValidationError
from .analysis.streaming import StreamResult, StreamTimings
from .analysis.trackers import CANCELLED
from .events import AnalyticsEvent
from .pipeline.aggregate import TaggedEvent

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["MAX_COUNTED_TOKENS", "RECORD_TIMEOUT_S", "StreamTracker", "describe_error"]

logger = logging.getLogger("llmtally")

RECORD_TIMEOUT_S: Final = 5.0
"""How long the record of a failed or cancelled stream may wait, shielded, for room in
the ingest buffer (only with ``overflow="block"``; otherwise it never waits)."""

_MAX_MS: Final = v.MAX_DURATION_MS
_MAX_RATE: Final = v.MAX_TOKENS_PER_S

MAX_COUNTED_TOKENS: Final = 10**9
"""At most this many output tokens may be counted with ``token()`` in one stream: far
beyond any real stream, and low enough that their cost always fits an event."""


def describe_error(exc: BaseException) -> tuple[str, str | None, int | None]:
    """``(error_code, error_message, status_code)`` for an exception that ended a call:
    ``"cancelled"`` for a cancellation, else the class name, its message, and the HTTP
    status of errors that carry one (``exc.status_code`` as in the OpenAI and Anthropic
    SDKs, or ``exc.response.status_code`` as in httpx)."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return CANCELLED, None, None
    status: object = None
    try:
        status = getattr(exc, "status_code", None)
        if status is None:
            status = getattr(getattr(exc, "response", None), "status_code", None)
    except Exception:  # a property that raises: no status
        status = None
    if type(status) is not int or not 100 <= status <= 599:
        status = None
    return type(exc).__name__, str(exc) or None, status


def _ms(value: float | None) -> float | None:
    # An injected clock can produce anything; out-of-range numbers are not recorded.
    return value if value is not None and 0.0 <= value <= _MAX_MS else None


class StreamTracker:
    """One streamed call; ``async with store.track_stream(model, ...) as s``.

    Call ``s.token(n)`` when a chunk of ``n`` output tokens arrives (or
    ``s.first_token()`` to mark only the first token's arrival), and ``s.usage(...)`` if
    the upstream reports usage. After the block, ``event`` is the recorded event (``None``
    when it was dropped). A tracker is used once; calls after the block raise
    ``ValidationError``.
    """

    __slots__ = (
        "_clock",
        "_entered",
        "_store",
        "_timings",
        "_usage",
        "agent_id",
        "correlation_id",
        "endpoint",
        "event",
        "model",
        "parent_event_id",
        "provider",
        "provider_id",
        "tags",
    )

    def __init__(
        self,
        store: EventStore,
        *,
        model: str,
        provider: str,
        agent_id: str | None,
        provider_id: str | None,
        endpoint: str | None,
        monotonic: Callable[[], int],
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self._store = store
        self._clock = monotonic
        self._timings = StreamTimings()
        self._usage: tuple[int, int, int, int] | None = None
        self._entered = False
        self.model = model
        self.provider = provider
        self.agent_id = agent_id
        self.provider_id = provider_id
        self.endpoint = endpoint
        self.correlation_id = correlation_id
        self.parent_event_id = parent_event_id
        self.tags = tags
        self.event: AnalyticsEvent | None = None

    @property
    def output_tokens(self) -> int:
        """Output tokens counted by ``token()`` so far."""
        return self._timings.output_tokens

    def token(self, n: int = 1) -> None:
        """A chunk of ``n >= 1`` output tokens arrived now. Raises ``ValidationError`` for
        a bad ``n`` (or more than ``MAX_COUNTED_TOKENS`` in all), outside the block, or
        when the clock went backwards."""
        if type(n) is not int:
            raise ValidationError(f"n must be an int, got {type(n).__name__}")
        if n > MAX_COUNTED_TOKENS - self._timings.output_tokens:
            raise ValidationError(f"a stream counts at most {MAX_COUNTED_TOKENS} tokens")
        self._timings.token(self._clock(), n)

    def first_token(self) -> None:
        """Mark the first token's arrival now (for TTFT) without counting tokens."""
        self._timings.first_token(self._clock())

    def usage(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
    ) -> None:
        """The upstream's usage report (``input_tokens`` is the total input, cache parts
        included); replaces counted tokens in the record. The last call wins. Raises
        ``ValidationError`` for invalid counts (or a cost beyond one event's bound)."""
        i = v.check_count("input_tokens", input_tokens)
        o = v.check_count("output_tokens", output_tokens)
        c = v.check_count("cached_input_tokens", cached_input_tokens)
        w = v.check_count("cache_write_input_tokens", cache_write_input_tokens)
        if c + w > i:
            raise ValidationError(
                f"cached_input_tokens + cache_write_input_tokens must not exceed "
                f"input_tokens: {c} + {w} > {i}"
            )
        v.check_cost(self._store.pricing.cost(self.model, self.provider, i, o, c, w)[0])
        self._usage = (i, o, c, w)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise StoreClosedError("a stream tracker can be used only once")
        self._entered = True
        self._timings.start(self._clock())
        self._store.observed_state()[1].streaming.started(self.model)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the call (see ``EventStore.track_stream``); never suppresses ``exc``."""
        end = self._clock()
        self._store.observed_state()[1].streaming.ended(self.model)
        try:
            result: StreamResult | None = self._timings.finish(end)
        except ValidationError:  # the clock went backwards (an injected one): no timings
            result = None
        try:
            event = self._build(result, exc)
        except ValidationError:  # pragma: no cover - every field is checked above
            logger.exception("llmtally: could not build the record of a stream")
            return
        item = TaggedEvent(event, stream=True)
        wait = self._store.overflow == "block"
        if exc is None:
            self.event = await self._store._submit_tagged(item, wait=wait)
            return
        # The body failed or was cancelled: the record must still be made. Shield only
        # this send, and bound it.
        with anyio.move_on_after(RECORD_TIMEOUT_S, shield=True):
            self.event = await self._store._submit_tagged(item, wait=wait)

    def _build(self, result: StreamResult | None, exc: BaseException | None) -> AnalyticsEvent:
        if self._usage is None:
            i, o, c, w = 0, self._timings.output_tokens, 0, 0
        else:
            i, o, c, w = self._usage
        rate = None if result is None else result.tokens_per_s
        return self._store._request_event(
            self.model,
            provider=self.provider,
            agent_id=self.agent_id,
            provider_id=self.provider_id,
            input_tokens=i,
            output_tokens=o,
            cached_input_tokens=c,
            cache_write_input_tokens=w,
            duration_ms=None if result is None else _ms(result.duration_ms),
            ttft_ms=None if result is None else _ms(result.ttft_ms),
            itl_mean_ms=None if result is None else _ms(result.itl_mean_ms),
            itl_p95_ms=None if result is None else _ms(result.itl_p95_ms),
            output_tokens_per_s=rate if rate is not None and 0.0 <= rate <= _MAX_RATE else None,
            usage_missing=self._usage is None,
            endpoint=self.endpoint,
            error=None if exc is None else describe_error(exc),
            correlation_id=self.correlation_id,
            parent_event_id=self.parent_event_id,
            tags=self.tags,
        )

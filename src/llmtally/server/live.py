"""``LiveHub``: fans events the collector just stored out to live subscribers.

The ingest path calls ``publish`` (synchronously, through
``ServerContext.ingest_observers``) with the events a request newly stored — each event
id once, never a duplicate — and so does the anomaly detector with the anomalies each
pass stored (``run_detector(on_pass=...)``). ``publish`` never waits: each subscriber has a bounded
buffer, and an event that does not fit is dropped for that subscriber and counted
(``Subscription.dropped``, ``LiveHub.dropped``), so a slow reader costs itself events and
never slows ingest down. Memory is bounded by ``max_subscribers * buffer_size`` frames
plus the ``replay_size`` frames kept for reconnecting clients.

Each event is encoded once, when a subscriber first wants it, as its server-sent-events
frame (the contract of ``GET /analytics/live``)::

    id: <event_id>
    event: event
    data: <the event's Protocol 012 JSON, as events.to_wire encodes it>
    <blank line>

and an anomaly as::

    id: <event_id>
    event: anomaly
    data: <its /analytics/anomalies record, with "event_type": "anomaly_detected" first>
    <blank line>

(a reader that only listens for ``event`` frames, like an older ``tail``, skips them).

A client that reconnects with ``Last-Event-ID`` first gets the frames stored after that
id, if it is still among the last ``replay_size`` (this process's memory only: after a
restart, or further back, ``/analytics/events`` has the history).

All methods run on the event loop's thread; nothing here blocks or locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import AnalyticsEvent, AnomalyDetected, LlmRequestCompleted, LlmRequestFailed, to_wire
from ..query.anomalies import live_anomaly

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_MAX_SUBSCRIBERS",
    "DEFAULT_REPLAY_SIZE",
    "KEEPALIVE_FRAME",
    "LIVE_EVENT_TYPES",
    "HubClosedError",
    "LiveFilter",
    "LiveHub",
    "LiveHubMetrics",
    "Subscription",
    "TooManySubscribersError",
    "encode_frame",
]

DEFAULT_BUFFER_SIZE: Final = 256
DEFAULT_MAX_SUBSCRIBERS: Final = 64
DEFAULT_REPLAY_SIZE: Final = 1_000
DEFAULT_KEEPALIVE_S: Final = 15.0
KEEPALIVE_FRAME: Final = b": keepalive\n\n"
LIVE_EVENT_TYPES: Final = ("llm_request_completed", "llm_request_failed", "anomaly_detected")
"""The event types live streams carry (and ``event_type`` filters on)."""

_encode: Final = msgspec.json.Encoder().encode


class TooManySubscribersError(Exception):
    """``subscribe`` refused: ``max_subscribers`` streams are already open."""


class HubClosedError(Exception):
    """``subscribe`` refused: the server is shutting down."""


@dataclass(frozen=True, slots=True)
class _Facets:
    """What filters look at: a request's model and provider; an anomaly's series (its
    ``value`` is the model for ``dim="model"``, the provider for ``dim="provider"``)."""

    model: str | None
    provider: str | None


_LIVE_PAYLOADS: Final = frozenset({LlmRequestCompleted, LlmRequestFailed, AnomalyDetected})


def _facets(event: AnalyticsEvent) -> _Facets | None:
    """The facets of an event live streams carry; ``None`` for the others."""
    p = event.payload
    if isinstance(p, LlmRequestCompleted | LlmRequestFailed):
        return _Facets(p.model, p.provider)
    if isinstance(p, AnomalyDetected):
        return _Facets(
            p.value if p.dim == "model" else None, p.value if p.dim == "provider" else None
        )
    return None


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """Which events a subscriber gets: every field that is not ``None`` must be equal.
    An anomaly has a model (or provider) when its series is one, and never an agent."""

    model: str | None = None
    provider: str | None = None
    agent_id: str | None = None
    event_type: str | None = None

    def matches(self, event: AnalyticsEvent, facets: _Facets) -> bool:
        return (
            (self.model is None or self.model == facets.model)
            and (self.provider is None or self.provider == facets.provider)
            and (self.agent_id is None or self.agent_id == event.agent_id)
            and (self.event_type is None or self.event_type == event.event_type)
        )


def encode_frame(event: AnalyticsEvent) -> bytes:
    """The SSE frame of a request event (``event: event``) or an anomaly (``event:
    anomaly``). Raises ``ValueError`` for other events."""
    anomaly = live_anomaly(event)
    # JSON escapes newlines: one ``data:`` line.
    if anomaly is not None:
        name, data = b"anomaly", _encode(anomaly)
    else:
        name, data = b"event", _encode(to_wire(event))
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.event_id.encode("ascii"), name, data)


class Subscription:
    """One subscriber's view: ``backlog`` (replayed frames), then ``frames``.

    ``frames`` ends (``EndOfStream``) when the hub closes. ``dropped`` counts events that
    did not fit in the buffer.
    """

    __slots__ = ("_tx", "backlog", "dropped", "filter", "frames")

    def __init__(self, flt: LiveFilter, buffer_size: int, backlog: list[bytes]) -> None:
        self._tx: MemoryObjectSendStream[bytes]
        self.frames: MemoryObjectReceiveStream[bytes]
        self._tx, self.frames = anyio.create_memory_object_stream[bytes](buffer_size)
        self.filter = flt
        self.backlog = backlog
        self.dropped = 0

    def _offer(self, frame: bytes) -> bool:
        try:
            self._tx.send_nowait(frame)
        except anyio.WouldBlock:
            self.dropped += 1
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return True  # leaving: ``subscribe`` removes it
        return True

    def _close(self) -> None:
        self._tx.close()


class LiveHub:
    """The broadcaster. ``publish`` is the ingest observer; ``subscribe`` opens a stream.

    ``keepalive_s`` is how often an idle stream sends ``KEEPALIVE_FRAME`` (the HTTP route
    reads it; injectable so tests need not wait 15 s). Raises ``ValueError`` for
    non-positive sizes or interval.
    """

    def __init__(
        self,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        replay_size: int = DEFAULT_REPLAY_SIZE,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        if buffer_size < 1 or max_subscribers < 1 or replay_size < 0:
            raise ValueError("buffer_size and max_subscribers must be at least 1")
        if not keepalive_s > 0:
            raise ValueError("keepalive_s must be positive")
        self.buffer_size = buffer_size
        self.max_subscribers = max_subscribers
        self.keepalive_s = keepalive_s
        self._recent: deque[AnalyticsEvent] = deque(maxlen=replay_size)
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self.published = 0
        """Events published since start."""
        self.dropped = 0
        """Events dropped for slow subscribers (one per subscriber that missed one)."""

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, events: Sequence[AnalyticsEvent]) -> None:
        """Offer newly stored request events and anomalies to every matching subscriber;
        never blocks or raises. Each event is encoded once, and only if a subscriber
        wants it (with nobody listening, publishing is one pass to pick the live events
        and an extend of the replay buffer). Other event types (``LIVE_EVENT_TYPES``)
        are skipped."""
        live = [e for e in events if type(e.payload) in _LIVE_PAYLOADS]
        if not live:
            return
        self.published += len(live)
        # Only the last ``replay_size`` can stay: skip copying the rest in.
        self._recent.extend(live[-self._recent.maxlen :] if self._recent.maxlen else ())
        subscribers = self._subscribers
        if not subscribers:
            return
        for event in live:
            facets = _facets(event)
            assert facets is not None
            frame: bytes | None = None
            for sub in subscribers:
                if sub.filter.matches(event, facets):
                    if frame is None:
                        frame = encode_frame(event)
                    if not sub._offer(frame):
                        self.dropped += 1

    def _replay(self, flt: LiveFilter, last_event_id: str | None) -> list[bytes]:
        if not last_event_id:
            return []
        recent = list(self._recent)
        for i in range(len(recent) - 1, -1, -1):
            if recent[i].event_id == last_event_id:
                return [
                    encode_frame(e)
                    for e in recent[i + 1 :]
                    if (facets := _facets(e)) is not None and flt.matches(e, facets)
                ]
        return []

    @asynccontextmanager
    async def subscribe(
        self, flt: LiveFilter | None = None, *, last_event_id: str | None = None
    ) -> AsyncIterator[Subscription]:
        """A subscription for the duration of the block.

        The backlog (events after ``last_event_id`` still in the replay buffer) and the
        registration are taken together, with no await between: no event falls in a gap.
        Raises ``TooManySubscribersError`` or ``HubClosedError``.
        """
        if self._closed:
            raise HubClosedError("the server is shutting down")
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribersError(f"{self.max_subscribers} live streams already open")
        flt = flt or LiveFilter()
        sub = Subscription(flt, self.buffer_size, self._replay(flt, last_event_id))
        self._subscribers.add(sub)
        try:
            with sub.frames:
                yield sub
        finally:
            self._subscribers.discard(sub)
            sub._close()

    def close(self) -> None:
        """End every stream (their ``frames`` reach end-of-stream after what is buffered)
        and refuse new ones. Called when the server starts shutting down, so open streams
        do not hold a graceful shutdown up. Idempotent."""
        self._closed = True
        for sub in self._subscribers:
            sub._close()


class LiveHubMetrics(Collector):
    """The hub's counters for ``/metrics``: ``llmtally_live_subscribers`` (gauge),
    ``llmtally_live_events_total`` and ``llmtally_live_dropped_events_total``."""

    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        yield GaugeMetricFamily(
            "llmtally_live_subscribers", "Open /analytics/live streams", hub.subscriber_count
        )
        yield CounterMetricFamily(
            "llmtally_live_events", "Events published to live streams", hub.published
        )
        yield CounterMetricFamily(
            "llmtally_live_dropped_events",
            "Events a slow live subscriber missed (one per subscriber)",
            hub.dropped,
        )

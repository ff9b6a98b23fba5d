"""Fan-out of accepted events to live subscribers.

Each subscriber has its own bounded buffer. Publishing never waits: an event that does not
fit a subscriber's buffer is dropped *for that subscriber* and counted in its
``dropped`` — a slow dashboard can never slow the pipeline or the router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..events import AnalyticsEvent

__all__ = ["Fanout", "Subscription"]


class Subscription:
    """One subscriber: its receive stream, how many events were put in its buffer
    (``delivered``) and how many it lost to a full buffer (``dropped``)."""

    __slots__ = ("_tx", "delivered", "dropped", "events")

    def __init__(
        self,
        tx: MemoryObjectSendStream[AnalyticsEvent],
        rx: MemoryObjectReceiveStream[AnalyticsEvent],
    ) -> None:
        self._tx = tx
        self.events = rx
        self.delivered = 0
        self.dropped = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AnalyticsEvent:
        try:
            return await self.events.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Take no more events; iteration ends once the buffered ones are received."""
        self._tx.close()


class Fanout:
    """Owned by the aggregator actor; ``publish`` is synchronous and never blocks."""

    def __init__(self, *, capacity: int = 1_000) -> None:
        if capacity < 1:
            raise ValueError("subscriber capacity must be at least 1")
        self.capacity = capacity
        self._subs: set[Subscription] = set()
        self.dropped = 0  # over all subscribers, for stats
        self._closed = False

    def __len__(self) -> int:
        return len(self._subs)

    def publish(self, events: Iterable[AnalyticsEvent]) -> None:
        """Offer events to every subscriber; what does not fit is dropped and counted."""
        if not self._subs:
            return
        for sub in tuple(self._subs):
            send = sub._tx.send_nowait
            try:
                for ev in events:
                    try:
                        send(ev)
                    except anyio.WouldBlock:
                        sub.dropped += 1
                        self.dropped += 1
                    else:
                        sub.delivered += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subs.discard(sub)

    @asynccontextmanager
    async def subscribe(self, capacity: int | None = None) -> AsyncIterator[Subscription]:
        """A live view of events accepted from now on; ends when the store closes."""
        tx, rx = anyio.create_memory_object_stream[AnalyticsEvent](capacity or self.capacity)
        sub = Subscription(tx, rx)
        if self._closed:
            tx.close()
        else:
            self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            tx.close()
            rx.close()

    def close(self) -> None:
        """End every subscription (their iteration stops after what is buffered)."""
        self._closed = True
        for sub in self._subs:
            sub._tx.close()
        self._subs.clear()

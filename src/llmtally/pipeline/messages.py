"""What flows between the actors."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from ..analysis.stats import StatsDelta
from ..events import AnalyticsEvent

__all__ = ["Barrier", "Nudge", "PersistBatch"]


class Barrier:
    """A ``flush()`` marker: set once every event accepted before it is persisted."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = anyio.Event()


@dataclass(slots=True)
class PersistBatch:
    """Events the aggregator has counted, their stats delta, and flushes waiting on them."""

    events: list[AnalyticsEvent]
    delta: StatsDelta
    barriers: list[Barrier] = field(default_factory=list)


class Nudge:
    """Cuts the persister's linger short: set by the aggregator when a batch carries a
    flush barrier or when ``batch_size`` events have queued up since the persister last
    looked. The persister lingers on it once per batch (one timer per write, not one per
    event: events that trickle in one at a time stay cheap)."""

    __slots__ = ("batch_size", "event", "queued")

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.event = anyio.Event()
        self.queued = 0

    def sent(self, batch: PersistBatch) -> None:
        """The aggregator queued ``batch`` for the persister."""
        self.queued += len(batch.events)
        if batch.barriers or self.queued >= self.batch_size:
            self.event.set()

    def rearm(self, queued: int) -> anyio.Event:
        """The persister starts lingering with ``queued`` events in hand."""
        self.queued = queued
        self.event = anyio.Event()
        return self.event

"""What flows between the actors."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from ..analysis.stats import StatsDelta
from ..events import AnalyticsEvent

__all__ = ["Barrier", "IngestWake", "Nudge", "PersistBatch"]


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


class IngestWake:
    """Cuts the aggregator's linger short (see ``pipeline.aggregate``).

    When the aggregator wakes for an item and finds fewer than it wants waiting, it
    ``arm``s this with the cancel scope of its linger (a plain sleep of ``linger``
    seconds: one timer per batch, none while the stream is idle, and no exception when it
    runs its course). Producers count every item they put in the ingest stream with
    ``left -= 1`` and call ``fire`` when it reaches 0 (``threshold`` items arrived
    meanwhile: the buffer is filling); a ``flush()`` barrier and the end of the stream
    ``fire`` at once. While disarmed ``left`` is negative and keeps falling, so the count
    costs producers one decrement and one comparison, and never fires by itself.
    """

    __slots__ = ("left", "linger", "scope", "threshold")

    def __init__(self, linger: float, threshold: int) -> None:
        self.linger = linger
        self.threshold = threshold
        self.scope: anyio.CancelScope | None = None
        self.left = -1

    def arm(self, scope: anyio.CancelScope) -> None:
        """The aggregator lingers in ``scope`` with an empty stream; ``fire`` cancels it."""
        self.left = self.threshold
        self.scope = scope

    def disarm(self) -> None:
        """The linger is over (fired or ran its course)."""
        self.scope = None
        self.left = -1

    def fire(self) -> None:
        """End the current linger, if any (idempotent; cheap when there is none)."""
        scope = self.scope
        if scope is not None:
            self.scope = None
            scope.cancel()

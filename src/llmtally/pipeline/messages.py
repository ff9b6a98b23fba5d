"""What flows between the actors."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from ..analysis.stats import StatsDelta
from ..events import AnalyticsEvent

__all__ = ["Barrier", "PersistBatch"]


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

"""The storage interface every backend implements.

Contracts shared by all backends:

- ``write_batch`` stores a batch in one transaction, optionally with a stats checkpoint
  (the cumulative totals of every event written so far); ``load_totals`` returns the
  checkpoint plus the events written after it, so the restored totals always equal the
  sum over the stored events, whatever crashed when. Writing an event id that is already
  stored is a no-op, so retrying a batch whose commit outcome is unknown is safe.
- ``ingest`` (the collector's write) stores each event id once and reports which events
  were new; only those count in the stored totals.
- The outbox: ``pending`` returns request events not yet synced, oldest first;
  ``mark`` moves them to synced or refused.
- Runtime failures (disk full, database locked) raise the backend's own exception;
  the caller (the persister actor) logs, counts and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from ..analysis.stats import StatsDelta
from ..events import AnalyticsEvent

__all__ = ["EventStorage", "IngestResult"]


class IngestResult(msgspec.Struct, frozen=True):
    """What ``ingest`` stored: the new events and how many were already there."""

    inserted: list[AnalyticsEvent]
    duplicates: int


class EventStorage(Protocol):
    """A place that keeps events, their running totals and the sync outbox."""

    @property
    def durable(self) -> bool:
        """Whether data survives the process (``False`` for memory storage)."""
        ...

    async def open(self) -> None:
        """Connect and apply schema migrations. Raises on a bad path or failed migration."""
        ...

    async def close(self) -> None:
        """Release the connection; idempotent."""
        ...

    async def write_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> None:
        """Store ``events`` (and the ``checkpoint`` totals, if given) in one transaction."""
        ...

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        """Store events whose id is new (marked synced); totals count only those."""
        ...

    async def load_totals(self) -> StatsDelta:
        """Totals per series over every stored request event (checkpoint + replay)."""
        ...

    async def pending(self, limit: int) -> list[AnalyticsEvent]:
        """Up to ``limit`` unsynced request events in the order they were stored."""
        ...

    async def mark(self, event_ids: Sequence[str], state: int) -> int:
        """Set the sync state of these events; returns how many rows changed."""
        ...

    async def count_pending(self) -> int:
        """How many request events are not yet synced."""
        ...

    async def count_events(self) -> int:
        """How many events are stored."""
        ...

    async def snapshot(self, limit: int | None = None) -> list[AnalyticsEvent]:
        """Stored events, oldest first (at most ``limit``)."""
        ...

    async def drain(self) -> list[AnalyticsEvent]:
        """Remove and return every stored event (totals are kept)."""
        ...

    async def clear(self) -> None:
        """Delete every event and every total."""
        ...

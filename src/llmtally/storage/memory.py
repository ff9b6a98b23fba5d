"""In-memory storage for ``EventStore(path=None)``: bounded, nothing on disk.

Keeps the most recent ``history`` events (older ones fall off, counted in ``evicted``) and
an outbox of at most ``max_pending`` unsynced request events; past that the oldest pending
event is dropped and counted in ``pending_dropped`` — memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

import msgspec

from ..analysis.stats import StatsDelta
from ..events import SYNCED_EVENT_TYPES, AnalyticsEvent
from .base import IngestResult
from .rows import PENDING, SYNCED

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Bounded in-memory backend; see ``llmtally.storage.base`` for the contract."""

    durable = False

    def __init__(self, *, history: int = 10_000, max_pending: int = 100_000) -> None:
        if history < 1 or max_pending < 1:
            raise ValueError("history and max_pending must be at least 1")
        self._history: deque[AnalyticsEvent] = deque(maxlen=history)
        self._pending: OrderedDict[str, AnalyticsEvent] = OrderedDict()
        self._ids: set[str] = set()
        self.max_pending = max_pending
        self.evicted = 0
        self.pending_dropped = 0

    def __len__(self) -> int:
        return len(self._history)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _keep(self, event: AnalyticsEvent) -> None:
        history = self._history
        if len(history) == history.maxlen:
            self._ids.discard(history[0].event_id)
            self.evicted += 1
        history.append(event)
        self._ids.add(event.event_id)
        if not event.synced and event.event_type in SYNCED_EVENT_TYPES:
            pending = self._pending
            pending[event.event_id] = event
            if len(pending) > self.max_pending:
                pending.popitem(last=False)
                self.pending_dropped += 1

    async def write_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> None:
        for e in events:
            if e.event_id not in self._ids:
                self._keep(e)

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        inserted: list[AnalyticsEvent] = []
        for e in events:
            if e.event_id in self._ids:
                continue
            e = msgspec.structs.replace(e, synced=True)
            self._keep(e)
            inserted.append(e)
        return IngestResult(inserted=inserted, duplicates=len(events) - len(inserted))

    async def load_totals(self) -> StatsDelta:
        return StatsDelta()

    async def pending(self, limit: int) -> list[AnalyticsEvent]:
        out: list[AnalyticsEvent] = []
        for e in self._pending.values():
            if len(out) >= limit:
                break
            out.append(e)
        return out

    async def mark(self, event_ids: Sequence[str], state: int) -> int:
        changed = 0
        for event_id in event_ids:
            if state != PENDING and self._pending.pop(event_id, None) is not None:
                changed += 1
        if changed and state == SYNCED:
            wanted = set(event_ids)
            for i, e in enumerate(self._history):
                if e.event_id in wanted and not e.synced:
                    self._history[i] = msgspec.structs.replace(e, synced=True)
        return changed

    async def count_pending(self) -> int:
        return len(self._pending)

    async def count_events(self) -> int:
        return len(self._history)

    async def snapshot(self, limit: int | None = None) -> list[AnalyticsEvent]:
        events = list(self._history)
        return events if limit is None else events[:limit]

    async def drain(self) -> list[AnalyticsEvent]:
        events = list(self._history)
        self._history.clear()
        self._ids.clear()
        return events

    async def clear(self) -> None:
        self._history.clear()
        self._pending.clear()
        self._ids.clear()

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
from ..events import SYNCED_EVENT_TYPES, AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from .base import (
    DEFAULT_EXPIRE_CHUNK,
    DEFAULT_RAW_TTL_MS,
    Cursor,
    EventFilter,
    ExpireResult,
    IngestResult,
    PreparedBatch,
    RequestRow,
    RollupRow,
    StorageInfo,
)
from .rows import PENDING, SYNCED

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Bounded in-memory backend; see ``llmtally.storage.base`` for the contract.

    Queries scan the kept history (at most ``history`` events); there are no rollups,
    so aggregates are computed from the events themselves.
    """

    durable = False
    has_rollups = False

    def __init__(
        self,
        *,
        history: int = 10_000,
        max_pending: int = 100_000,
        raw_ttl_ms: int | None = DEFAULT_RAW_TTL_MS,
    ) -> None:
        if history < 1 or max_pending < 1:
            raise ValueError("history and max_pending must be at least 1")
        self.raw_ttl_ms = raw_ttl_ms
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
        await self.write_prepared(self.prepare_batch(events, checkpoint))

    def prepare_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> PreparedBatch:
        """Nothing to build: totals live in the store, not here (the checkpoint is dropped)."""
        return PreparedBatch(events)

    async def write_prepared(self, batch: PreparedBatch) -> None:
        for e in batch.events:
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

    # --- queries (QueryStorage) ---------------------------------------------------------

    def _sorted(self, start_ms: int, end_ms: int, after: Cursor | None) -> list[AnalyticsEvent]:
        out = [e for e in self._history if start_ms <= e.timestamp_ms < end_ms]
        if after is not None and after[0] >= start_ms:
            out = [e for e in out if (e.timestamp_ms, e.event_id) > after]
        out.sort(key=lambda e: (e.timestamp_ms, e.event_id))
        return out

    async def query_events(
        self, flt: EventFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> list[AnalyticsEvent]:
        out: list[AnalyticsEvent] = []
        for e in self._sorted(flt.start_ms, flt.end_ms, after):
            if len(out) >= limit:
                break
            p = e.payload
            request = isinstance(p, LlmRequestCompleted | LlmRequestFailed)
            if flt.event_type is not None and e.event_type != flt.event_type:
                continue
            if flt.success is not None and (
                not request or isinstance(p, LlmRequestFailed) == flt.success
            ):
                continue
            if flt.agent_id is not None and e.agent_id != flt.agent_id:
                continue
            if flt.correlation_id is not None and e.correlation_id != flt.correlation_id:
                continue
            if flt.tags and not all((e.tags or {}).get(k) == v for k, v in flt.tags):
                continue
            if flt.model is not None or flt.provider is not None or flt.provider_id is not None:
                if not isinstance(p, LlmRequestCompleted | LlmRequestFailed):
                    continue
                if flt.model is not None and p.model != flt.model:
                    continue
                if flt.provider is not None and p.provider != flt.provider:
                    continue
                if flt.provider_id is not None and p.provider_id != flt.provider_id:
                    continue
            out.append(e)
        return out

    async def scan_requests(
        self, start_ms: int, end_ms: int, *, after: Cursor | None = None, limit: int = 5_000
    ) -> list[RequestRow]:
        out: list[RequestRow] = []
        for e in self._sorted(start_ms, end_ms, after):
            if len(out) >= limit:
                break
            p = e.payload
            if not isinstance(p, LlmRequestCompleted | LlmRequestFailed):
                continue
            out.append(
                (
                    e.timestamp_ms,
                    e.event_id,
                    isinstance(p, LlmRequestFailed),
                    p.model,
                    p.provider,
                    e.agent_id or "",
                    p.provider_id or "",
                    p.endpoint or "",
                    p.input_tokens,
                    p.output_tokens,
                    p.cached_input_tokens,
                    p.cache_write_input_tokens,
                    p.cost_nanos,
                    p.pricing_status == "unpriced",
                    p.duration_ms,
                    p.ttft_ms,
                )
            )
        return out

    async def scan_rollups(
        self,
        period_ms: int,
        dim: str,
        start_ms: int,
        end_ms: int,
        *,
        after: Cursor | None = None,
        limit: int = 5_000,
    ) -> list[RollupRow]:
        return []

    async def expire(self, now_ms: int, *, chunk_size: int = DEFAULT_EXPIRE_CHUNK) -> ExpireResult:
        if self.raw_ttl_ms is None:
            return ExpireResult()
        cutoff = now_ms - self.raw_ttl_ms
        kept = [e for e in self._history if e.timestamp_ms >= cutoff or e.event_id in self._pending]
        expired = len(self._history) - len(kept)
        if expired:
            for e in self._history:
                if e.timestamp_ms < cutoff and e.event_id not in self._pending:
                    self._ids.discard(e.event_id)
            self._history = deque(kept, maxlen=self._history.maxlen)
        return ExpireResult(events=expired)

    async def info(self) -> StorageInfo:
        return StorageInfo(
            backend_type="memory",
            ttl_seconds=None if self.raw_ttl_ms is None else self.raw_ttl_ms // 1000,
            rollup_ttl_seconds=None,
            max_events=self._history.maxlen,
        )

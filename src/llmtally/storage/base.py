"""The storage interface every backend implements.

Contracts shared by all backends:

- ``write_batch`` stores a batch in one transaction, optionally with a stats checkpoint
  (the cumulative totals of every event written so far). It is ``prepare_batch`` (the
  CPU work: rows, rollups, encoding — done in the event loop, and by the persister while
  the previous batch is being written) then ``write_prepared`` (the transaction; may be
  called again with the same prepared batch to retry it). ``load_totals`` returns the
  checkpoint plus the events written after it, so the restored totals always equal the
  sum over the stored events, whatever crashed when. Writing an event id that is already
  stored is a no-op, so retrying a batch whose commit outcome is unknown is safe.
- ``ingest`` (the collector's write) stores each event id once and reports which events
  were new; only those count in the stored totals.
- The outbox: ``pending`` returns request events not yet synced, oldest first;
  ``mark`` moves them to synced or refused.
- Runtime failures (disk full, database locked) raise the backend's own exception;
  the caller (the persister actor) logs, counts and retries.

Backends that answer queries also implement ``QueryStorage``: keyset pages of events
(ordered by ``(timestamp_ms, event_id)``, so a page boundary never moves under concurrent
inserts), pages of raw request rows and of rollup rows (``llmtally.storage.rollups``,
written in the same transaction as the events they summarise, by ``write_batch`` and
``ingest`` alike, counting each event id once), and retention (``expire``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

import msgspec

from ..analysis.stats import StatsDelta
from ..events import AnalyticsEvent, EventType

__all__ = [
    "DAY_MS",
    "Cursor",
    "DEFAULT_EXPIRE_CHUNK",
    "DEFAULT_RAW_TTL_MS",
    "DEFAULT_ROLLUP_TTL_MS",
    "EventFilter",
    "EventStorage",
    "ExpireResult",
    "IngestResult",
    "PreparedBatch",
    "QueryStorage",
    "RequestRow",
    "RollupRow",
    "StorageInfo",
    "StoredRollup",
]

DAY_MS: Final = 86_400_000
DEFAULT_RAW_TTL_MS: Final = 30 * DAY_MS
"""Raw events older than this are deleted by ``expire`` (unsynced outbox rows are kept)."""
DEFAULT_ROLLUP_TTL_MS: Final = 400 * DAY_MS
"""Rollup rows older than this are deleted by ``expire``."""
DEFAULT_EXPIRE_CHUNK: Final = 2_000
"""Rows deleted per transaction by ``expire``: short enough never to hold ingest up."""


class IngestResult(msgspec.Struct, frozen=True):
    """What ``ingest`` stored: the new events and how many were already there."""

    inserted: list[AnalyticsEvent]
    duplicates: int


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch made ready to write by ``prepare_batch``: its ``events``, the encoded
    stats ``checkpoint`` to save with them (``encode_series``) or ``None``, and ``work``:
    whatever else the backend built ahead (rows, rollups, an encoded request), never
    mutated by ``write_prepared`` so that a failed write can be retried with it."""

    events: Sequence[AnalyticsEvent]
    checkpoint: bytes | None = None
    work: Any = None


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
        """Store ``events`` (and the ``checkpoint`` totals, if given) in one transaction:
        ``write_prepared(prepare_batch(events, checkpoint))``."""
        ...

    def prepare_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> PreparedBatch:
        """The CPU work of writing ``events`` (and ``checkpoint``, encoded now: later
        changes to it are not saved), done ahead without I/O."""
        ...

    async def write_prepared(self, batch: PreparedBatch) -> None:
        """Store a prepared batch in one transaction (retry-safe, see above)."""
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


# --- queries ----------------------------------------------------------------------------


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which events a query reads: ``start_ms <= timestamp_ms < end_ms`` and every field
    that is not ``None`` equal. ``success=True`` is completed requests only, ``False``
    failed ones only (lifecycle and budget events are neither). ``tags``: ``(key,
    value)`` pairs the event's tags must all hold."""

    start_ms: int
    end_ms: int
    model: str | None = None
    provider: str | None = None
    agent_id: str | None = None
    provider_id: str | None = None
    event_type: EventType | None = None
    success: bool | None = None
    correlation_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


class ExpireResult(msgspec.Struct, frozen=True):
    """How many raw events and rollup rows ``expire`` deleted."""

    events: int = 0
    rollups: int = 0


class StorageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a backend is and keeps (for ``GET /analytics/stats``)."""

    backend_type: str
    ttl_seconds: int | None
    rollup_ttl_seconds: int | None
    max_events: int | None = None


RequestRow: TypeAlias = tuple[
    int,
    str,
    bool,
    str,
    str,
    str,
    str,
    str,
    int,
    int,
    int,
    int,
    int,
    bool,
    float | None,
    float | None,
]
"""A request event as aggregation reads it: ``(timestamp_ms, event_id, failed, model,
provider, agent_id, provider_id, endpoint, input_tokens, output_tokens,
cached_input_tokens, cache_write_input_tokens, cost_nanos, unpriced, duration_ms,
ttft_ms)``; an absent agent, API key or endpoint is ``""``."""

StoredRollup: TypeAlias = tuple[Any, ...]
"""A rollup row's stored columns (``ROLLUP_COLUMNS`` after the key), still encoded:
``rollups.rollup_from_row`` decodes it. Kept encoded until needed, an aggregate holds
thousands of them without the garbage collector walking their buckets."""

RollupRow: TypeAlias = tuple[int, str, StoredRollup]
"""``(start_ms, value, stored)`` of one rollup row of a given period and facet."""

Cursor: TypeAlias = tuple[int, str]
"""A keyset position: the ``(timestamp_ms, event_id)`` (or ``(start_ms, value)``) of the
last row of the previous page; the next page starts strictly after it."""


@runtime_checkable
class QueryStorage(EventStorage, Protocol):
    """A storage that also answers queries and expires old data."""

    async def query_events(
        self, flt: EventFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> list[AnalyticsEvent]:
        """Up to ``limit`` events matching ``flt``, ordered by ``(timestamp_ms,
        event_id)``, strictly after ``after``."""
        ...

    async def scan_requests(
        self, start_ms: int, end_ms: int, *, after: Cursor | None = None, limit: int = 5_000
    ) -> list[RequestRow]:
        """A keyset page of request events in ``[start_ms, end_ms)`` (aggregation input)."""
        ...

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
        """A page of rollup rows of one period and facet with ``start_ms`` in
        ``[start_ms, end_ms)``, ordered by ``(start_ms, value)``, strictly after ``after``.
        A backend without rollups returns ``[]`` and says so in ``has_rollups``."""
        ...

    @property
    def has_rollups(self) -> bool:
        """Whether ``scan_rollups`` is backed by rollup rows."""
        ...

    async def expire(self, now_ms: int, *, chunk_size: int = DEFAULT_EXPIRE_CHUNK) -> ExpireResult:
        """Delete raw events older than the raw TTL (except unsynced outbox rows) and rollup
        rows older than the rollup TTL, ``chunk_size`` rows per transaction."""
        ...

    async def info(self) -> StorageInfo:
        """The backend's type and retention settings."""
        ...

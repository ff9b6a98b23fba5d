"""``correlate``: the chain of events that share one ``correlation_id``, oldest first.

One request traced across services (a router's middleware, the upstream calls it made
through the transport, another router syncing to the same collector) shares a
``correlation_id``; each event may name the event it follows from in
``parent_event_id``. The chain is read in ``(timestamp_ms, event_id)`` order over all
time, through the storage's index on ``correlation_id``, a bounded page at a time.
"""

from __future__ import annotations

from typing import Final

from ..storage.base import EventFilter, QueryStorage
from ._types import MAX_LIMIT, CorrelationChain, QueryError
from .events import check_correlation_id, decode_cursor, encode_cursor, record_of

__all__ = ["correlate"]

_ALL_TIME: Final = (0, 2**62)


async def correlate(
    storage: QueryStorage,
    correlation_id: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> CorrelationChain:
    """At most ``limit`` events with this ``correlation_id``, oldest first; ``cursor``
    (a previous answer's ``next_cursor``) continues the chain.

    Raises ``QueryError`` naming the bad argument: a malformed ``correlation_id``,
    ``limit`` outside ``1..MAX_LIMIT``, a ``cursor`` not made here. Storage errors
    propagate.
    """
    if not correlation_id:
        raise QueryError("correlation_id", "is required")
    check_correlation_id(correlation_id)
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor is not None else None
    flt = EventFilter(start_ms=_ALL_TIME[0], end_ms=_ALL_TIME[1], correlation_id=correlation_id)
    found = await storage.query_events(flt, after=after, limit=limit + 1)
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1]
        next_cursor = encode_cursor((last.timestamp_ms, last.event_id))
    records = [record_of(e) for e in page]
    return CorrelationChain(
        correlation_id=correlation_id,
        events=records,
        count=len(records),
        next_cursor=next_cursor,
    )

"""``events``: a filtered page of stored events, with an opaque keyset cursor.

Pages are ordered by ``(timestamp_ms, event_id)`` and a cursor is the position of the
last event returned, so paging is stable under concurrent inserts: an event is never
returned twice, and one stored later with a timestamp past the cursor is still reached.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Final, get_args

import msgspec

from .._envelope import MAX_TAG_VALUE_LENGTH, MAX_TAGS, is_ref, is_tag_key, is_tag_value
from ..events import (
    AnalyticsEvent,
    EventType,
    LlmRequestCompleted,
    LlmRequestFailed,
    nanos_to_micros,
    severity_of,
)
from ..storage.base import Cursor, EventFilter, QueryStorage
from ._types import MAX_LIMIT, EventPage, EventRecord, QueryError

__all__ = [
    "check_correlation_id",
    "check_range",
    "check_tags",
    "decode_cursor",
    "encode_cursor",
    "events",
    "parse_tag",
    "record_of",
]

_EVENT_TYPES: Final = frozenset(get_args(EventType))
_MAX_CURSOR_CHARS: Final = 200
_CURSOR_VERSION: Final = 1
_encode: Final = msgspec.msgpack.Encoder().encode
_decode_cursor: Final = msgspec.msgpack.Decoder(tuple[int, int, str]).decode


def encode_cursor(position: Cursor) -> str:
    """An opaque, URL-safe cursor for a keyset position."""
    raw = _encode((_CURSOR_VERSION, position[0], position[1]))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Cursor:
    """Inverse of ``encode_cursor``. Raises ``QueryError("cursor")`` for anything else."""
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise QueryError("cursor", "not a cursor returned by this API")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, timestamp_ms, event_id = _decode_cursor(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise QueryError("cursor", "not a cursor returned by this API") from None
    if version != _CURSOR_VERSION or timestamp_ms < 0 or len(event_id) > 64:
        raise QueryError("cursor", "not a cursor returned by this API")
    return timestamp_ms, event_id


def check_range(start_ms: int, end_ms: int) -> None:
    """Raises ``QueryError("end")`` when the range ends before it starts."""
    if end_ms < start_ms:
        raise QueryError("end", "must not be before start")


def check_correlation_id(value: str | None) -> str | None:
    """Raises ``QueryError("correlation_id")`` unless ``value`` could be one (or ``None``)."""
    if value is None or is_ref(value):
        return value
    raise QueryError("correlation_id", "must be 1-128 letters, digits or . _ : / + = @ -")


def parse_tag(text: str) -> tuple[str, str]:
    """``"key:value"`` → ``("key", "value")`` (keys hold no ``:``; values may). Raises
    ``QueryError("tag")``."""
    key, sep, value = text.partition(":")
    if not sep:
        raise QueryError("tag", "must be key:value")
    return key, value


def check_tags(tags: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The ``(key, value)`` tag filters as a tuple; raises ``QueryError("tag")`` for more
    than ``MAX_TAGS``, a key tags cannot have, or a value tags cannot hold (too long, or
    with a control character)."""
    out = tuple(tags)
    if len(out) > MAX_TAGS:
        raise QueryError("tag", f"at most {MAX_TAGS} tag filters")
    for key, value in out:
        if not is_tag_key(key):
            raise QueryError("tag", f"key {key[:70]!r} is not a valid tag key")
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise QueryError("tag", f"value of {key!r} exceeds {MAX_TAG_VALUE_LENGTH} characters")
        if not is_tag_value(value):
            raise QueryError("tag", f"value of {key!r} has a control character")
    return out


_to_builtins: Final = msgspec.to_builtins
_REQUESTS: Final = (LlmRequestCompleted, LlmRequestFailed)


def record_of(event: AnalyticsEvent) -> EventRecord:
    """The flat record of a stored event."""
    p = event.payload
    ts = event.timestamp_ms
    if isinstance(p, _REQUESTS):
        # At most 15 keywords per call: CPython compiles a call with more into a dict
        # and ``f(**dict)``, which costs a msgspec Struct several times as much (one call
        # of 32: ~28,000 instructions per record; these: ~13,000, ~15,000 for a failure).
        failed = type(p) is LlmRequestFailed
        record = EventRecord(
            event_id=event.event_id,
            event_type=event.event_type,
            timestamp=ts // 1000,
            timestamp_ms=ts,
            success=not failed,
            agent_id=event.agent_id,
            provider_id=p.provider_id,
            provider=p.provider,
            model=p.model,
            input_tokens=p.input_tokens,
            output_tokens=p.output_tokens,
            cached_input_tokens=p.cached_input_tokens,
            cost_micros=nanos_to_micros(p.cost_nanos),
            cost_nanos=p.cost_nanos,
            pricing_status=p.pricing_status,
        )
        record = msgspec.structs.replace(
            record,
            cache_write_input_tokens=p.cache_write_input_tokens,
            duration_ms=p.duration_ms,
            ttft_ms=p.ttft_ms,
            endpoint=p.endpoint,
            itl_mean_ms=p.itl_mean_ms,
            itl_p95_ms=p.itl_p95_ms,
            output_tokens_per_s=p.output_tokens_per_s,
            usage_missing=p.usage_missing,
            schema_version=event.schema_version,
            correlation_id=event.correlation_id,
            parent_event_id=event.parent_event_id,
            severity=severity_of(event),
            environment=event.environment,
            tags=event.tags or {},
        )
        if isinstance(p, LlmRequestFailed):
            record = msgspec.structs.replace(
                record,
                error_code=p.error_code,
                error_message=p.error_message,
                status_code=p.status_code,
            )
        return record
    payload = _to_builtins(p)
    payload.pop("event_type", None)
    return EventRecord(
        event_id=event.event_id,
        event_type=event.event_type,
        timestamp=ts // 1000,
        timestamp_ms=ts,
        success=None,
        agent_id=event.agent_id,
        payload=payload,
        schema_version=event.schema_version,
        correlation_id=event.correlation_id,
        parent_event_id=event.parent_event_id,
        severity=severity_of(event),
        environment=event.environment,
        tags=event.tags or {},
    )


async def events(
    storage: QueryStorage,
    start_ms: int,
    end_ms: int,
    *,
    model: str | None = None,
    provider: str | None = None,
    agent_id: str | None = None,
    provider_id: str | None = None,
    success: bool | None = None,
    event_type: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    correlation_id: str | None = None,
    tags: Iterable[tuple[str, str]] = (),
) -> EventPage:
    """Events with ``start_ms <= timestamp_ms < end_ms`` matching every filter given,
    oldest first, at most ``limit``; ``cursor`` continues from a previous page.
    ``tags``: ``(key, value)`` pairs an event's tags must all hold.

    Raises ``QueryError`` naming the bad argument: ``end`` before ``start``, ``limit``
    outside ``1..MAX_LIMIT``, an unknown ``event_type``, a ``cursor`` not made here, a
    malformed ``correlation_id`` or ``tag``. Storage errors propagate.
    """
    check_range(start_ms, end_ms)
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    if event_type is not None and event_type not in _EVENT_TYPES:
        raise QueryError("event_type", f"must be one of {', '.join(sorted(_EVENT_TYPES))}")
    after = decode_cursor(cursor) if cursor is not None else None
    flt = EventFilter(
        start_ms=start_ms,
        end_ms=end_ms,
        model=model,
        provider=provider,
        agent_id=agent_id,
        provider_id=provider_id,
        event_type=event_type,  # type: ignore[arg-type]
        success=success,
        correlation_id=check_correlation_id(correlation_id),
        tags=check_tags(tags),
    )
    found = await storage.query_events(flt, after=after, limit=limit + 1)
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1]
        next_cursor = encode_cursor((last.timestamp_ms, last.event_id))
    records = [record_of(e) for e in page]
    return EventPage(
        events=records,
        count=len(records),
        start=start_ms // 1000,
        end=end_ms // 1000,
        next_cursor=next_cursor,
    )

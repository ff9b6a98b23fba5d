"""Events to table rows and back: one column layout shared by every storage backend.

Request events live in columns (so queries can filter and aggregate them); the payload of
lifecycle and budget events is kept as JSON in ``extra``. The envelope has columns of its
own (``ENVELOPE_COLUMNS``, added by a later migration: rows stored before it read back
with the defaults); ``tags`` is JSON text (JSONB in PostgreSQL), ``NULL`` when empty.
Defaults are stored as ``NULL`` (``schema_version`` ``"1.0.0"``, a severity left to its
event type): a text value in every row would cost about a fifth of SQLite's insert rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from ..events import (
    AnalyticsEvent,
    EventPayload,
    LlmRequestCompleted,
    LlmRequestFailed,
)

__all__ = [
    "COLUMNS",
    "ENVELOPE_COLUMNS",
    "endpoint_of",
    "LOCAL",
    "PENDING",
    "REFUSED",
    "SYNCED",
    "event_to_row",
    "row_to_event",
]

# sync_state values
PENDING: Final = 0  # a request event not yet accepted by the collector (the outbox)
SYNCED: Final = 1  # accepted by the collector (or stored by the collector itself)
LOCAL: Final = 2  # lifecycle/budget events: never synced
REFUSED: Final = 3  # refused by the collector (4xx other than auth, or 413 alone): dropped

COLUMNS: Final = (
    "event_id",
    "event_type",
    "timestamp_ms",
    "agent_id",
    "provider_id",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cost_nanos",
    "pricing_status",
    "duration_ms",
    "ttft_ms",
    "error_code",
    "error_message",
    "status_code",
    "sync_state",
    "extra",
    "schema_version",
    "correlation_id",
    "parent_event_id",
    "severity",
    "environment",
    "tags",
)
ENVELOPE_COLUMNS: Final = COLUMNS[-6:]
"""The envelope's columns, the last of ``COLUMNS``."""


class _RequestExtra(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Request-event fields kept in the ``extra`` column (no column of their own)."""

    itl_mean_ms: float | None = None
    itl_p95_ms: float | None = None
    output_tokens_per_s: float | None = None
    usage_missing: bool = False
    endpoint: str | None = None


_encode: Final = msgspec.json.Encoder().encode
# For ``isinstance``: a tuple, as ``A | B`` would build a union on every call.
_REQUEST_PAYLOADS: Final = (LlmRequestCompleted, LlmRequestFailed)
_decode_extra: Final = msgspec.json.Decoder(_RequestExtra).decode
_decode_payload: Final = msgspec.json.Decoder(EventPayload).decode
_decode_tags: Final = msgspec.json.Decoder(dict[str, str]).decode
_NULL_VERSION: Final = "1.0.0"  # the schema_version a NULL stands for, now and later


def _tags_text(tags: dict[str, str] | None) -> str | None:
    return _encode(tags).decode() if tags else None


def endpoint_of(extra: bytes | str | None) -> str:
    """The ``endpoint`` kept in a request row's ``extra`` (``""`` when absent)."""
    if extra is None:
        return ""
    return _decode_extra(extra).endpoint or ""


def event_to_row(event: AnalyticsEvent, synced_state: int | None = None) -> tuple[Any, ...]:
    """The row for ``event`` in ``COLUMNS`` order. ``synced_state`` overrides the state
    derived from the event (pending/synced for request events, local otherwise)."""
    p = event.payload
    cls = type(p)
    if cls is LlmRequestCompleted or cls is LlmRequestFailed:
        assert isinstance(p, _REQUEST_PAYLOADS)
        failed = cls is LlmRequestFailed
        state = (SYNCED if event.synced else PENDING) if synced_state is None else synced_state
        return (
            event.event_id,
            "llm_request_failed" if failed else "llm_request_completed",
            event.timestamp_ms,
            event.agent_id,
            p.provider_id,
            p.provider,
            p.model,
            p.input_tokens,
            p.output_tokens,
            p.cached_input_tokens,
            p.cache_write_input_tokens,
            p.cost_nanos,
            p.pricing_status,
            p.duration_ms,
            p.ttft_ms,
            p.error_code if failed else None,  # type: ignore[union-attr]
            p.error_message if failed else None,  # type: ignore[union-attr]
            p.status_code if failed else None,  # type: ignore[union-attr]
            state,
            None
            if (
                p.itl_mean_ms is None
                and p.output_tokens_per_s is None
                and p.endpoint is None
                and not p.usage_missing
                and p.itl_p95_ms is None
            )
            else _encode(
                _RequestExtra(
                    p.itl_mean_ms, p.itl_p95_ms, p.output_tokens_per_s, p.usage_missing, p.endpoint
                )
            ),
            None if event.schema_version == _NULL_VERSION else event.schema_version,
            event.correlation_id,
            event.parent_event_id,
            event.severity,
            event.environment,
            None if event.tags is None else _tags_text(event.tags),
        )
    return (
        event.event_id,
        event.event_type,
        event.timestamp_ms,
        event.agent_id,
        None,
        None,
        None,
        0,
        0,
        0,
        0,
        0,
        None,
        None,
        None,
        None,
        None,
        None,
        LOCAL if synced_state is None else synced_state,
        _encode(p),
        None if event.schema_version == _NULL_VERSION else event.schema_version,
        event.correlation_id,
        event.parent_event_id,
        event.severity,
        event.environment,
        None if event.tags is None else _tags_text(event.tags),
    )


def row_to_event(row: Sequence[Any]) -> AnalyticsEvent:
    """Inverse of ``event_to_row`` (``row`` in ``COLUMNS`` order)."""
    (
        event_id,
        event_type,
        timestamp_ms,
        agent_id,
        provider_id,
        provider,
        model,
        input_tokens,
        output_tokens,
        cached,
        cache_write,
        cost_nanos,
        pricing_status,
        duration_ms,
        ttft_ms,
        error_code,
        error_message,
        status_code,
        sync_state,
        extra,
        schema_version,
        correlation_id,
        parent_event_id,
        severity,
        environment,
        tags,
    ) = row
    payload: EventPayload
    if event_type == "llm_request_completed" or event_type == "llm_request_failed":
        common: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "provider_id": provider_id,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached,
            "cache_write_input_tokens": cache_write,
            "cost_nanos": cost_nanos,
            "pricing_status": pricing_status,
            "duration_ms": duration_ms,
            "ttft_ms": ttft_ms,
        }
        if extra is not None:
            x = _decode_extra(extra)
            common.update(
                itl_mean_ms=x.itl_mean_ms,
                itl_p95_ms=x.itl_p95_ms,
                output_tokens_per_s=x.output_tokens_per_s,
                usage_missing=x.usage_missing,
                endpoint=x.endpoint,
            )
        if event_type == "llm_request_failed":
            payload = LlmRequestFailed(
                error_code=error_code,
                error_message=error_message,
                status_code=status_code,
                **common,
            )
        else:
            payload = LlmRequestCompleted(**common)
    else:
        payload = _decode_payload(extra)
    return AnalyticsEvent(
        event_id=event_id,
        timestamp_ms=timestamp_ms,
        payload=payload,
        agent_id=agent_id,
        synced=sync_state == SYNCED,
        schema_version=_NULL_VERSION if schema_version is None else schema_version,
        correlation_id=correlation_id,
        parent_event_id=parent_event_id,
        severity=severity,
        environment=environment,
        tags=None if tags is None else _decode_tags(tags),
    )

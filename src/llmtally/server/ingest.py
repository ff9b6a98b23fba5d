"""``POST /api/v1/analytics/events``: the collector's write path (Protocol 012).

A request goes through these steps; the first that fails decides the answer:

1. A token with ``Scope.INGEST`` (else 401; see ``auth.py``).
2. ``Content-Type`` is JSON (``application/json`` or ``application/*+json``), else 415.
3. The body is read as a stream and never beyond ``max_body_bytes``: a larger declared
   ``Content-Length`` is refused with 413 before anything is read; a stream that grows
   past the limit is refused with 413 as soon as it does, and the rest is not read.
   The whole body must arrive within ``body_timeout_s`` (else 408 and the connection
   is closed): a client trickling bytes cannot hold a connection open for ever.
4. The body is UTF-8 JSON (RFC 8259) of the shape ``{"events": [...]}``, nested at
   most as deep as the decoder allows (else 400), with at most ``max_batch`` events
   (else 413, so a syncer splits the batch).
5. Each event is validated on its own: invalid ones are listed in ``rejected`` (with
   their ``event_id`` when it can be read) and the valid ones are stored. Fields outside
   Protocol 012 (a prompt, say) are dropped by the decoder and never stored.
6. Storage stores each ``event_id`` once. A busy or locked database is a 503 with
   ``Retry-After: 1`` (the syncer retries; never a 4xx, which it would drop); any other
   storage error is a logged 500. Requests that arrive while a write is in progress are
   written together, in one transaction (``ingest_writer``). Writes are serialised by
   ``ServerContext.write_lock`` unless the storage declares ``concurrent_writes``
   (PostgreSQL: a connection pool and row locks keep concurrent transactions
   exactly-once); two may then be in progress at once.

The answer is ``IngestResponse``: ``{"accepted", "duplicates", "rejected"}``.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from typing import Any, Final

import anyio
import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..events import (
    AnalyticsEvent,
    IngestRejection,
    IngestResponse,
    WireEvent,
    decode_wire_batch,
    decode_wire_event,
    from_wire,
)
from .auth import Scope
from .context import ServerContext
from .failures import is_transient
from .ingest_writer import DEFAULT_MAX_GROUP_EVENTS, IngestWriter
from .responses import error_response, json_response

__all__ = ["INGEST_PATH", "ParsedBatch", "RequestError", "parse_batch", "read_body", "routes"]

INGEST_PATH: Final = "/api/v1/analytics/events"

logger: Final = logging.getLogger("llmtally.server.ingest")

_MAX_ECHOED_ID: Final = 64  # longer "ids" are not echoed back in ``rejected``
_CONCURRENT_WRITERS: Final = 2  # writes in progress at once on a ``concurrent_writes`` storage


class RequestError(Exception):
    """A request refused before storage is touched: ``status_code`` and a message."""

    def __init__(
        self, status_code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status_code, self.message, self.headers)


class _Envelope(msgspec.Struct):
    events: list[msgspec.Raw]


class _IdProbe(msgspec.Struct):
    event_id: Any = None


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_probe_decoder: Final = msgspec.json.Decoder(_IdProbe)


class ParsedBatch(msgspec.Struct, frozen=True):
    """A decoded request body: the valid events and the refused ones."""

    events: list[WireEvent]
    rejected: list[IngestRejection]


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request, limit: int, within_s: float = math.inf) -> bytes:
    """The request body, read as a stream and never more than ``limit`` bytes, all of
    it within ``within_s`` seconds.

    Raises ``RequestError`` 413 when the declared ``Content-Length`` or the streamed
    body exceeds ``limit`` (the rest is left unread and the connection closed), 408
    when the body has not fully arrived after ``within_s`` seconds (connection closed),
    400 for an unreadable ``Content-Length``. Raises ``ClientDisconnect`` if the client
    goes.
    """
    too_large = RequestError(413, f"request body exceeds {limit} bytes", {"Connection": "close"})
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, "invalid Content-Length") from None
        if length > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(within_s) as deadline:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    if deadline.cancelled_caught:
        raise RequestError(
            408, f"request body not received within {within_s:g} s", {"Connection": "close"}
        )
    return b"".join(chunks)


def _event_id_of(raw: msgspec.Raw) -> str | None:
    try:
        event_id = _probe_decoder.decode(raw).event_id
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(event_id, str) and len(event_id) <= _MAX_ECHOED_ID:
        return event_id
    return None


def parse_batch(body: bytes, max_batch: int) -> ParsedBatch:
    """Decode ``{"events": [...]}`` and validate each event on its own.

    Raises ``RequestError`` 400 for malformed JSON (not UTF-8, nested too deeply) or a
    body of the wrong shape, 413
    for more than ``max_batch`` events. Invalid events do not raise: they are returned
    in ``rejected`` with the decoder's message.

    The common case, a batch of valid events, is decoded in one call and its ids checked
    together; any failure there (a refused event, a wrong shape, too many events) falls
    back to the event-by-event path, so answers are those of that path.
    """
    # JSON text is UTF-8 (RFC 8259 §8.1); the decoder does not check what it skips.
    # ASCII (the usual body) is UTF-8: one scan, without decoding a copy of the body.
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                400, f"body is not UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    fast = decode_wire_batch(body)
    if fast is not None and len(fast) <= max_batch:
        return ParsedBatch(fast, [])
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(400, f'body must be {{"events": [...]}}: {exc}') from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    raws = envelope.events
    if len(raws) > max_batch:
        raise RequestError(
            413, f"batch of {len(raws)} events exceeds the limit of {max_batch}: split it"
        )
    events: list[WireEvent] = []
    rejected: list[IngestRejection] = []
    for raw in raws:
        try:
            events.append(decode_wire_event(raw))  # Raw is a buffer: no copy
        except msgspec.DecodeError as exc:
            rejected.append(IngestRejection(_event_id_of(raw), str(exc)))
        except RecursionError:
            rejected.append(IngestRejection(None, "nested too deeply"))
    return ParsedBatch(events, rejected)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The ingest route, behind an ingest-scope token."""
    concurrent = bool(getattr(ctx.storage, "concurrent_writes", False))

    def write_guard() -> AbstractAsyncContextManager[object]:
        return nullcontext() if concurrent else ctx.write_lock

    writer = IngestWriter(
        ctx.storage,
        guard=write_guard,
        is_transient=is_transient,
        writers=_CONCURRENT_WRITERS if concurrent else 1,
        max_events=max(DEFAULT_MAX_GROUP_EVENTS, ctx.max_batch),
    )

    async def ingest_events(request: Request) -> Response:
        """Store a batch of Protocol 012 events; see the module docstring."""
        if not _is_json(request.headers.get("content-type")):
            return error_response(415, "Content-Type must be application/json")
        try:
            body = await read_body(request, ctx.max_body_bytes, ctx.body_timeout_s)
            parsed = parse_batch(body, ctx.max_batch)
        except RequestError as exc:
            return exc.response()
        except ClientDisconnect:
            return error_response(400, "client disconnected")
        del body
        accepted = duplicates = 0
        if parsed.events:
            events: list[AnalyticsEvent] = list(map(from_wire, parsed.events))
            try:
                result = await writer.ingest(events)  # the write itself is shielded
            except Exception as exc:
                if is_transient(exc):
                    logger.warning("database busy, answered 503: %s", exc)
                    return error_response(503, "database busy, retry shortly", {"Retry-After": "1"})
                logger.exception("storing %d events failed", len(events))
                return error_response(500, "storage error")
            accepted, duplicates = len(result.inserted), result.duplicates
            for observe in ctx.ingest_observers:
                observe(result.inserted)
        return json_response(IngestResponse(accepted, duplicates, parsed.rejected))

    return [
        Route(INGEST_PATH, ctx.auth.protect(Scope.INGEST, ingest_events), methods=["POST"]),
    ]

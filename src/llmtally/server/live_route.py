"""``GET /analytics/live`` (read token): server-sent events of the events the collector
newly stores (each event id once; duplicates of a retried sync are never sent).

Wire format (a contract; see ``live.py``): one frame per event::

    id: <event_id>\\nevent: event\\ndata: <Protocol 012 JSON>\\n\\n

one per anomaly the collector's detector stores::

    id: <event_id>\\nevent: anomaly\\ndata: <{"event_type": "anomaly_detected", ...}>\\n\\n

and ``: keepalive\\n\\n`` when the stream opens and after every ``keepalive_s`` (15 s)
without an event. Optional query filters ``model``, ``provider``, ``agent_id`` and
``event_type`` (``LIVE_QUERY``, any other parameter is a 400) keep only matching events (an anomaly has the
model or provider its series is, and no agent); a ``Last-Event-ID`` header replays what
was stored after that event, if this process still remembers it (``LiveHub``).

A bad filter is a 400 ``{"error", "parameter"}``; too many open streams, or a server
shutting down, a 503 with ``Retry-After``. A slow reader loses events (counted in
``llmtally_live_dropped_events_total``), never slows ingest. The stream ends when the
client goes or the server shuts down.
"""

from __future__ import annotations

from typing import Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..query import QueryError
from .auth import Scope as TokenScope
from .context import ServerContext
from .live import (
    KEEPALIVE_FRAME,
    LIVE_EVENT_TYPES,
    HubClosedError,
    LiveFilter,
    LiveHub,
    TooManySubscribersError,
)
from .params import AGENT_ID, MODEL, PROVIDER, QueryParam, QuerySpec
from .responses import error_response, json_response

__all__ = ["LAST_EVENT_ID_MAX_CHARS", "LIVE_PATH", "LIVE_QUERY", "MAX_FRAMES_PER_SEND", "routes"]

LIVE_PATH: Final = "/analytics/live"
MAX_FRAMES_PER_SEND: Final = 64
"""Frames already waiting are written together, up to this many per write."""

_MAX_ID_CHARS: Final = 64
LAST_EVENT_ID_MAX_CHARS: Final = _MAX_ID_CHARS
"""A longer ``Last-Event-ID`` is not one of ours: ignored (no replay)."""
LIVE_QUERY: Final = QuerySpec(
    MODEL,
    PROVIDER,
    AGENT_ID,
    QueryParam("event_type", {"enum": list(LIVE_EVENT_TYPES)}, "Only this event type."),
)
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # ask reverse proxies not to buffer the stream
    "X-Content-Type-Options": "nosniff",
}


class _BadParameter(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class _ParamError(msgspec.Struct, frozen=True):
    error: str
    parameter: str


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and len(value) > 256:
        raise _BadParameter(name, f"{name} must be at most 256 characters")
    return value or None


def live_filter(request: Request) -> LiveFilter:
    """The filter a request's query asks for. Raises ``_BadParameter``."""
    event_type = _text(request, "event_type")
    if event_type is not None and event_type not in LIVE_EVENT_TYPES:
        raise _BadParameter(
            "event_type", f"event_type must be one of {', '.join(LIVE_EVENT_TYPES)}"
        )
    return LiveFilter(
        model=_text(request, "model"),
        provider=_text(request, "provider"),
        agent_id=_text(request, "agent_id"),
        event_type=event_type,
    )


class LiveResponse(Response):
    """The event stream of one subscriber.

    The subscription is taken before the response starts (so a client that has the
    headers misses no event stored after) and released however the response ends: the
    client goes (``http.disconnect`` cancels the writer), the hub closes (end of stream),
    or the task is cancelled.
    """

    media_type = "text/event-stream"

    def __init__(self, hub: LiveHub, flt: LiveFilter, last_event_id: str | None) -> None:
        # Not ``Response.__init__``: without a body there is no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers(_HEADERS)
        self.hub = hub
        self.filter = flt
        self.last_event_id = last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            subscription = self.hub.subscribe(self.filter, last_event_id=self.last_event_id)
            async with subscription as sub:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                    await _write(send, sub.backlog, sub.frames, self.hub.keepalive_s)
                    tg.cancel_scope.cancel()
        except (TooManySubscribersError, HubClosedError) as exc:
            # Raised by ``subscribe`` before anything was sent: a plain 503 can go out.
            await error_response(503, str(exc), {"Retry-After": "5"})(scope, receive, send)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _write(
    send: Send,
    backlog: list[bytes],
    frames: MemoryObjectReceiveStream[bytes],
    keepalive_s: float,
) -> None:
    """Write the opening keepalive, the backlog, then frames as they come, until the
    hub ends the stream; keepalive comments fill the silences."""
    await _send(send, KEEPALIVE_FRAME)
    for i in range(0, len(backlog), MAX_FRAMES_PER_SEND):
        await _send(send, b"".join(backlog[i : i + MAX_FRAMES_PER_SEND]))
    while True:
        chunk: list[bytes] = []
        # The timeout only wraps the receive: loss-free (anyio#146); the write is outside.
        with anyio.move_on_after(keepalive_s):
            try:
                chunk.append(await frames.receive())
            except anyio.EndOfStream:
                break
        while chunk and len(chunk) < MAX_FRAMES_PER_SEND:
            try:
                chunk.append(frames.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        await _send(send, b"".join(chunk) if chunk else KEEPALIVE_FRAME)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The live stream, fed by the ingest path with each newly stored event."""
    hub = ctx.live
    ctx.ingest_observers.append(hub.publish)

    async def live_events(request: Request) -> Response:
        """Server-sent events: each event newly stored by this collector."""
        try:
            LIVE_QUERY.check(request.query_params)
            flt = live_filter(request)
        except (QueryError, _BadParameter) as exc:
            return json_response(_ParamError(str(exc), exc.parameter), 400)
        if hub.closed:
            return error_response(503, "the server is shutting down", {"Retry-After": "5"})
        if hub.subscriber_count >= hub.max_subscribers:
            return error_response(503, "too many live streams open", {"Retry-After": "5"})
        last_id = request.headers.get("last-event-id")
        if last_id is not None and len(last_id) > LAST_EVENT_ID_MAX_CHARS:
            last_id = None
        return LiveResponse(hub, flt, last_id)

    return [Route(LIVE_PATH, ctx.auth.protect(TokenScope.READ, live_events), methods=["GET"])]

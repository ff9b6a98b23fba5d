"""The query endpoints: ``/analytics/stats``, ``/events``, ``/aggregate``, ``/export``,
``/correlate`` (read token) and ``POST /analytics/clear`` (admin token).

Shapes follow Routiium's analytics API, extended (see ``llmtally.query``). ``start`` and
``end`` are unix seconds, the range ``start <= t < end``; both default to the last hour
(``/export``: the last 24 hours) ending now. A bad parameter — not an integer, ``end``
before ``start``, an unknown ``group_by``/``window``/``format``/``event_type``, a
``limit`` over the maximum, a cursor not made here, a parameter the endpoint does not
declare (``*_QUERY``, see ``params``: a typo is never silently ignored) or one given twice
— is a 400 ``{"error": "...", "parameter": "<name>"}``. A busy database is a 503 with
``Retry-After``; any other storage error a logged 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, get_args

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..events import EventType
from ..query import (
    FORMATS,
    GROUP_BY,
    MAX_LIMIT,
    WINDOWS,
    QueryError,
    aggregate,
    correlate,
    events,
    export,
)
from ..query.events import parse_tag
from ..storage.base import QueryStorage
from .auth import Scope
from .context import ServerContext
from .failures import is_transient
from .params import (
    AGENT_ID,
    CORRELATION_ID_SCHEMA,
    CURSOR,
    END,
    LIMIT,
    MAX_SECONDS,
    MODEL,
    NO_PARAMETERS,
    PROVIDER,
    PROVIDER_ID,
    TAGS,
    QueryParam,
    QuerySpec,
    parse_int,
    start,
)
from .responses import error_response, json_response

__all__ = [
    "AGGREGATE_QUERY",
    "CLEAR_QUERY",
    "CORRELATE_QUERY",
    "DEFAULT_EXPORT_RANGE_S",
    "DEFAULT_LIMIT",
    "DEFAULT_RANGE_S",
    "EVENTS_QUERY",
    "EXPORT_FILENAMES",
    "EXPORT_QUERY",
    "ClearResponse",
    "ParamErrorBody",
    "STATS_QUERY",
    "StatsResponse",
    "routes",
]

logger: Final = logging.getLogger("llmtally.server.analytics")

DEFAULT_RANGE_S: Final = 3_600
DEFAULT_EXPORT_RANGE_S: Final = 86_400
DEFAULT_LIMIT: Final = 100
_MEDIA_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}
EXPORT_FILENAMES: Final = {fmt: f"llmtally-export.{fmt}" for fmt in _MEDIA_TYPES}
"""Fixed download names: nothing from the request reaches the header."""


class ParamErrorBody(msgspec.Struct, frozen=True):
    """A 400 answer: what is wrong, and with which query parameter."""

    error: str
    parameter: str


class StatsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /analytics/stats``: Routiium's fields plus the rollup retention."""

    total_events: int
    backend_type: str
    ttl_seconds: int | None
    max_events: int | None
    rollup_ttl_seconds: int | None


class ClearResponse(msgspec.Struct, frozen=True):
    """``POST /analytics/clear``."""

    success: bool
    message: str


STATS_QUERY: Final = NO_PARAMETERS
EVENTS_QUERY: Final = QuerySpec(
    start("end - 1 hour"),
    END,
    LIMIT,
    MODEL,
    PROVIDER,
    AGENT_ID,
    PROVIDER_ID,
    QueryParam("success", {"type": "boolean"}, "Only completed (true) or failed (false) requests."),
    QueryParam("event_type", {"enum": sorted(get_args(EventType))}, "Only this event type."),
    QueryParam("correlation_id", CORRELATION_ID_SCHEMA, "Only events of this correlation."),
    TAGS,
    CURSOR,
)
CORRELATE_QUERY: Final = QuerySpec(
    QueryParam("correlation_id", CORRELATION_ID_SCHEMA, "The correlation.", required=True),
    LIMIT,
    CURSOR,
)
AGGREGATE_QUERY: Final = QuerySpec(
    start("end - 1 hour"),
    END,
    QueryParam("group_by", {"enum": list(GROUP_BY)}, "Group by this facet."),
    QueryParam("window", {"enum": list(WINDOWS)}, "Time buckets (UTC; weeks start Monday)."),
)
EXPORT_QUERY: Final = QuerySpec(
    start("end - 24 hours"),
    END,
    QueryParam(
        "format", {"enum": list(FORMATS), "default": "json"}, "csv, json (an array) or jsonl."
    ),
    MODEL,
    PROVIDER,
    AGENT_ID,
)
CLEAR_QUERY: Final = NO_PARAMETERS


def _param_error(exc: QueryError) -> Response:
    return json_response(ParamErrorBody(str(exc), exc.parameter), 400)


def _seconds(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw)
    if value is None:
        raise QueryError(name, "must be an integer (unix seconds)")
    if not 0 <= value <= MAX_SECONDS:
        raise QueryError(name, "must be unix seconds between 0 and 100000000000")
    return value


def _range_ms(request: Request, default_span_s: int) -> tuple[int, int]:
    # Default end: the next whole second, so events recorded this second are included.
    end = _seconds(request, "end", int(time.time()) + 1)
    start = _seconds(request, "start", max(0, end - default_span_s))
    if end < start:
        raise QueryError("end", "must not be before start")
    return start * 1000, end * 1000


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and len(value) > 256:
        raise QueryError(name, "must be at most 256 characters")
    return value or None


def _bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise QueryError(name, "must be true or false")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    value = parse_int(raw)
    if value is None:
        raise QueryError("limit", f"must be an integer between 1 and {MAX_LIMIT}")
    return value


def _storage_failure(exc: Exception, what: str) -> Response:
    if is_transient(exc):
        logger.warning("database busy during %s, answered 503: %s", what, exc)
        return error_response(503, "database busy, retry shortly", {"Retry-After": "1"})
    logger.exception("%s failed", what)
    return error_response(500, "storage error")


Handler = Callable[[Request, QueryStorage], Awaitable[Response]]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The analytics routes. A storage without queries (not a ``QueryStorage``) gets 501s."""

    storage = ctx.storage

    def endpoint(
        handler: Handler, what: str, query: QuerySpec
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if not isinstance(storage, QueryStorage):
                return error_response(501, "this storage does not answer queries")
            try:
                query.check(request.query_params)
                return await handler(request, storage)
            except QueryError as exc:
                return _param_error(exc)
            except Exception as exc:
                return _storage_failure(exc, what)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    async def get_stats(request: Request, s: QueryStorage) -> Response:
        """How many events are stored, and how long they are kept."""
        info = await s.info()
        return json_response(
            StatsResponse(
                total_events=await s.count_events(),
                backend_type=info.backend_type,
                ttl_seconds=info.ttl_seconds,
                max_events=info.max_events,
                rollup_ttl_seconds=info.rollup_ttl_seconds,
            )
        )

    async def get_events(request: Request, s: QueryStorage) -> Response:
        """A page of events, oldest first; ``next_cursor`` fetches the next page."""
        start_ms, end_ms = _range_ms(request, DEFAULT_RANGE_S)
        page = await events(
            s,
            start_ms,
            end_ms,
            model=_text(request, "model"),
            provider=_text(request, "provider"),
            agent_id=_text(request, "agent_id"),
            provider_id=_text(request, "provider_id"),
            success=_bool(request, "success"),
            event_type=_text(request, "event_type"),
            limit=_limit(request),
            cursor=request.query_params.get("cursor"),
            correlation_id=_text(request, "correlation_id"),
            tags=[parse_tag(t) for t in request.query_params.getlist("tag")],
        )
        return json_response(page)

    async def get_correlate(request: Request, s: QueryStorage) -> Response:
        """The events of one correlation_id, oldest first, with their parent links."""
        chain = await correlate(
            s,
            _text(request, "correlation_id") or "",
            limit=_limit(request),
            cursor=request.query_params.get("cursor"),
        )
        return json_response(chain)

    async def get_aggregate(request: Request, s: QueryStorage) -> Response:
        """Totals, per time window and group, from rollups."""
        start_ms, end_ms = _range_ms(request, DEFAULT_RANGE_S)
        result = await aggregate(
            s,
            start_ms,
            end_ms,
            group_by=request.query_params.get("group_by") or None,
            window=request.query_params.get("window") or None,
        )
        return json_response(result)

    async def get_export(request: Request, s: QueryStorage) -> Response:
        """Every event of the range (optionally of one ``model``, ``provider``,
        ``agent_id``) as a streamed CSV, JSON or JSON Lines download."""
        start_ms, end_ms = _range_ms(request, DEFAULT_EXPORT_RANGE_S)
        fmt = request.query_params.get("format") or "json"
        chunks = export(  # checks the arguments now: 400 before 200
            s,
            start_ms,
            end_ms,
            fmt,
            model=_text(request, "model"),
            provider=_text(request, "provider"),
            agent_id=_text(request, "agent_id"),
        )
        return StreamingResponse(
            _logged(chunks),
            media_type=_MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="{EXPORT_FILENAMES[fmt]}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def post_clear(request: Request, s: QueryStorage) -> Response:
        """Delete every event and rollup."""
        async with ctx.write_lock:
            with anyio.CancelScope(shield=True):  # never leave a clear half-done
                await s.clear()
        logger.warning("analytics data cleared by an admin token")
        return json_response(ClearResponse(True, "Analytics data cleared"))

    read, admin = Scope.READ, Scope.ADMIN
    protect = ctx.auth.protect
    return [
        Route(
            "/analytics/stats",
            protect(read, endpoint(get_stats, "stats", STATS_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/events",
            protect(read, endpoint(get_events, "events query", EVENTS_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/aggregate",
            protect(read, endpoint(get_aggregate, "aggregate query", AGGREGATE_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/export",
            protect(read, endpoint(get_export, "export", EXPORT_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/correlate",
            protect(read, endpoint(get_correlate, "correlate query", CORRELATE_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/clear",
            protect(admin, endpoint(post_clear, "clear", CLEAR_QUERY)),
            methods=["POST"],
        ),
    ]


async def _logged(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The status line is gone once streaming starts: a storage error can only be logged
    # and the response cut short (the client sees an incomplete download).
    try:
        async for chunk in chunks:
            yield chunk
    except Exception:
        logger.exception("export failed mid-stream; response truncated")
        raise

"""``GET /openapi.json``: an OpenAPI 3.1 description of every route the app serves.

Nothing here is written twice: schemas are generated from the msgspec types the
endpoints encode and decode (``msgspec.json.schema_components``), and each operation's
query parameters are the route's own declaration (``params.QuerySpec``), the one it
checks every request against. Operations described in ``OPERATIONS`` get parameters,
bodies and responses; any other route of the app (another module's) is still listed,
with its docstring as summary. Needs no token: it describes the API, not the data.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..analysis.errors import ErrorPatternsSnapshot
from ..analysis.slo import SloStatus
from ..analysis.streaming import StreamingSnapshot
from ..events import IngestResponse, WireBatch
from ..query import AggregateResult, CorrelationChain, EventPage, TimeSeriesResult
from ..query.anomalies import AnomalyPage
from .analytics import (
    AGGREGATE_QUERY,
    CLEAR_QUERY,
    CORRELATE_QUERY,
    EVENTS_QUERY,
    EXPORT_QUERY,
    STATS_QUERY,
    ClearResponse,
    ParamErrorBody,
    StatsResponse,
)
from .auth import SESSION_COOKIE
from .context import ServerContext
from .dashboard.route import DASHBOARD_PATH, DASHBOARD_QUERY, PANELS_PATH, PANELS_QUERY
from .ingest import INGEST_PATH
from .live_route import LAST_EVENT_ID_MAX_CHARS, LIVE_PATH, LIVE_QUERY
from .observability import ERRORS_QUERY, SLO_QUERY, BudgetsResponse
from .params import NO_PARAMETERS, QuerySpec
from .responses import ErrorBody
from .trends import ANOMALIES_QUERY, TIMESERIES_QUERY

__all__ = ["OPENAPI_PATH", "OPERATIONS", "HealthResponse", "Operation", "build_openapi", "routes"]

OPENAPI_PATH: Final = "/openapi.json"


class HealthResponse(msgspec.Struct, frozen=True):
    """``GET /health``."""

    status: str


@dataclass(frozen=True)
class Operation:
    """What the document says about one method on one path.

    ``query`` is the route's own declaration (``params.QuerySpec``), the one it checks
    requests against: the document lists exactly the parameters the route takes, and a
    400 for a bad, unknown or repeated one. ``None``: the route does not read its query
    string (it takes no parameters and refuses none).
    """

    summary: str
    scope: str | None  # "read", "ingest", "admin"; None: no token
    response: type | None = None  # the JSON body of a 200
    query: QuerySpec | None = None
    headers: tuple[dict[str, Any], ...] = ()  # header Parameter Objects
    body_schema: dict[str, Any] | None = None
    media_type: str = "application/json"  # of a 200 without ``response``
    error_media_type: str = "application/json"  # of the 400, 401 and 503 the route writes
    storage: bool = True  # reads or writes the storage: a busy database is a 503
    extra_responses: dict[str, dict[str, Any]] = field(default_factory=dict)


_REF: Final = "#/components/schemas/{name}"
_JSON: Final = "application/json"


def _content(schema: dict[str, Any], media_type: str = _JSON) -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}}


def _error(description: str, body: type = ErrorBody, media_type: str = _JSON) -> dict[str, Any]:
    """A response with ``body`` (as JSON) or, in another media type, a page."""
    if media_type != _JSON:
        return {"description": description, **_content({"type": "string"}, media_type)}
    return {"description": description, **_content({"$ref": _REF.format(name=body.__name__)})}


# Each event of a batch is validated on its own: one that is not a valid WireEvent (even
# not an object) is listed in the answer's ``rejected``, not refused with the request.
_INGEST_BODY: Final = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {
            "type": "array",
            "description": "Protocol 012 events (WireEvent), at most the server's "
            "--max-batch (else 413). An invalid event is listed in `rejected` and the "
            "others are stored.",
            "items": {"anyOf": [{"$ref": _REF.format(name="WireEvent")}, {}]},
        }
    },
}
_EXPORT_OK: Final = {
    "description": "The events (Content-Disposition: attachment)",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        _JSON: {"schema": {"type": "array", "items": {"$ref": _REF.format(name="EventRecord")}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}
_METRICS_OK: Final = {
    "description": "The Prometheus text format, or OpenMetrics when the Accept header asks",
    "content": {
        "text/plain": {"schema": {"type": "string"}},
        "application/openmetrics-text": {"schema": {"type": "string"}},
    },
}
_LAST_EVENT_ID: Final = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The id of the last event received: the events stored after it are "
    "sent first, if this process still remembers it (an unknown id, or one longer than "
    f"{LAST_EVENT_ID_MAX_CHARS} characters: no replay).",
}
_HTML: Final = "text/html"

OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("/health", "get"): Operation("Liveness", None, HealthResponse, storage=False),
    (OPENAPI_PATH, "get"): Operation("This document", None, storage=False),
    (INGEST_PATH, "post"): Operation(
        "Store a batch of Protocol 012 events (each event_id once)",
        "ingest",
        IngestResponse,
        body_schema=_INGEST_BODY,
        extra_responses={
            "400": _error("Malformed body"),
            "408": _error("The body arrived too slowly (--body-timeout)"),
            "413": _error("Body or batch too large: split it"),
            "415": _error("Not JSON"),
        },
    ),
    ("/analytics/stats", "get"): Operation(
        "Stored events and retention", "read", StatsResponse, STATS_QUERY
    ),
    ("/analytics/events", "get"): Operation(
        "A page of events, oldest first (keyset cursor)", "read", EventPage, EVENTS_QUERY
    ),
    ("/analytics/correlate", "get"): Operation(
        "The events of one correlation_id, oldest first, with their parent links",
        "read",
        CorrelationChain,
        CORRELATE_QUERY,
    ),
    ("/analytics/aggregate", "get"): Operation(
        "Totals per time window and group (from rollups)", "read", AggregateResult, AGGREGATE_QUERY
    ),
    ("/analytics/timeseries", "get"): Operation(
        "One metric per time bucket, one series per group (from rollups)",
        "read",
        TimeSeriesResult,
        TIMESERIES_QUERY,
    ),
    ("/analytics/anomalies", "get"): Operation(
        "Anomalies the detector found, newest first", "read", AnomalyPage, ANOMALIES_QUERY
    ),
    ("/analytics/export", "get"): Operation(
        "Every event of the range as a streamed download",
        "read",
        query=EXPORT_QUERY,
        extra_responses={"200": _EXPORT_OK},
    ),
    ("/analytics/clear", "post"): Operation(
        "Delete every event and rollup", "admin", ClearResponse, CLEAR_QUERY
    ),
    (LIVE_PATH, "get"): Operation(
        "Server-sent events of each newly stored event: `id: <event_id>`, `event: event`, "
        "`data: <Protocol 012 JSON>`; a `: keepalive` comment when it opens and every 15 s "
        "without an event. Never ends on its own.",
        "read",
        query=LIVE_QUERY,
        headers=(_LAST_EVENT_ID,),
        media_type="text/event-stream",
        storage=False,
        extra_responses={"503": _error("Too many live streams, or shutting down (Retry-After)")},
    ),
    (DASHBOARD_PATH, "get"): Operation(
        "The dashboard (HTML). `?token=<read token>` signs in: a read-session cookie "
        "(HttpOnly, SameSite=Strict) and a redirect without the token.",
        "read",
        query=DASHBOARD_QUERY,
        media_type=_HTML,
        error_media_type=_HTML,  # 401 is the sign-in form
        extra_responses={
            "303": {
                "description": "Signed in: the cookie is set; Location is the dashboard",
                "headers": {"Location": {"schema": {"type": "string"}}},
            }
        },
    ),
    (PANELS_PATH, "get"): Operation(
        "The dashboard's panels (an HTML fragment)",
        "read",
        query=PANELS_QUERY,
        media_type=_HTML,
        error_media_type=_HTML,
        extra_responses={"401": _error("Missing or invalid token")},  # ``Auth.protect``'s
    ),
    ("/analytics/errors", "get"): Operation(
        "The most frequent error patterns",
        "read",
        ErrorPatternsSnapshot,
        ERRORS_QUERY,
        storage=False,
    ),
    ("/analytics/slo", "get"): Operation(
        "SLO status over a window, with burn-rate alerts",
        "read",
        SloStatus,
        SLO_QUERY,
        storage=False,
    ),
    ("/analytics/budgets", "get"): Operation(
        "Every budget in its current period", "read", BudgetsResponse, NO_PARAMETERS, storage=False
    ),
    ("/analytics/streaming", "get"): Operation(
        "Streaming statistics", "read", StreamingSnapshot, NO_PARAMETERS, storage=False
    ),
    ("/metrics", "get"): Operation(
        "Prometheus exposition",
        "read",
        query=NO_PARAMETERS,
        storage=False,
        extra_responses={"200": _METRICS_OK},
    ),
}

_TYPES: Final = (
    HealthResponse,
    IngestResponse,
    WireBatch,
    StatsResponse,
    EventPage,
    AggregateResult,
    CorrelationChain,
    TimeSeriesResult,
    AnomalyPage,
    ClearResponse,
    ErrorBody,
    ParamErrorBody,
    ErrorPatternsSnapshot,
    SloStatus,
    BudgetsResponse,
    StreamingSnapshot,
)


def _operation(op: Operation, path: str, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('.', '_')}",
    }
    parameters = [*(p.openapi() for p in op.query or ()), *op.headers]
    if parameters:
        out["parameters"] = parameters
    if op.body_schema is not None:
        out["requestBody"] = {"required": True, **_content(op.body_schema)}
    if op.response is not None:
        ok = {"description": "OK", **_content({"$ref": _REF.format(name=op.response.__name__)})}
    elif op.media_type != _JSON:
        ok = {"description": "OK", **_content({"type": "string"}, op.media_type)}
    else:
        ok = {"description": "OK", **_content({"type": "object"})}
    responses: dict[str, Any] = {"200": ok}
    errors = op.error_media_type
    if op.query is not None:
        what = (
            "A bad parameter: a value the schema refuses (an empty one included), an "
            "unknown parameter, or one given twice that is not a list"
            if len(op.query)
            else "Any query parameter"
        )
        named = "named in `parameter`" if errors == _JSON else "the page names it"
        responses["400"] = _error(f"{what} ({named})", ParamErrorBody, errors)
    if op.scope is not None:
        read = op.scope == "read"
        out["security"] = [{"bearerAuth": []}, *([{"sessionCookie": []}] if read else [])]
        out["description"] = f"Needs a token with the {op.scope} scope" + (
            " (or a read-session cookie)." if read else "."
        )
        responses["401"] = _error("Missing or invalid token", ErrorBody, errors)
        if op.storage:
            responses["503"] = _error("Database busy: retry (Retry-After)", ErrorBody, errors)
    responses.update(op.extra_responses)
    out["responses"] = dict(sorted(responses.items()))
    return out


def build_openapi(app_routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``app_routes`` (an app's ``routes``)."""
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in app_routes:
        if not isinstance(route, Route):
            continue
        for method in sorted(m.lower() for m in route.methods or () if m != "HEAD"):
            op = OPERATIONS.get((route.path, method))
            if op is not None:
                entry = _operation(op, route.path, method)
            else:
                doc = inspect.getdoc(route.endpoint) or route.name or route.path
                entry = {
                    "summary": doc.splitlines()[0],
                    "responses": {"200": {"description": "OK"}},
                }
            paths.setdefault(route.path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "llmtally collector", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "A read session: `GET /?token=<read token>` sets it.",
                },
            },
        },
    }


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """``GET /openapi.json`` (no token)."""
    cache: dict[str, bytes] = {}

    async def openapi_json(request: Request) -> Response:
        """The OpenAPI 3.1 description of this API."""
        if "doc" not in cache:
            cache["doc"] = msgspec.json.encode(build_openapi(request.app.routes))
        return Response(cache["doc"], media_type="application/json")

    return [Route(OPENAPI_PATH, openapi_json, methods=["GET"])]

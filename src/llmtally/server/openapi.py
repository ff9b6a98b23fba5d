"""``GET /openapi.json``: an OpenAPI 3.1 description of every route the app serves.

Schemas are generated from the msgspec types the endpoints encode and decode
(``msgspec.json.schema_components``), so the document cannot drift from the code.
Operations described in ``OPERATIONS`` get parameters, bodies and responses; any other
route of the app (another module's) is still listed, with its docstring as summary.
Needs no token: it describes the API, not the data.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, get_args

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from .._envelope import MAX_TAGS, REF_PATTERN
from ..analysis.errors import ErrorPatternsSnapshot
from ..analysis.slo import HOUR_MS, MAX_WINDOW_MS, SloStatus
from ..analysis.streaming import StreamingSnapshot
from ..events import EventType, IngestResponse, WireBatch
from ..query import (
    AGGREGATIONS,
    FILLS,
    FORMATS,
    GROUP_BY,
    MAX_LIMIT,
    METRICS,
    WINDOWS,
    AggregateResult,
    CorrelationChain,
    EventPage,
    TimeSeriesResult,
)
from ..query.anomalies import AnomalyPage
from .analytics import ClearResponse, ParamErrorBody, StatsResponse
from .context import ServerContext
from .dashboard.data import RANGES
from .dashboard.route import DASHBOARD_PATH, PANELS_PATH
from .ingest import INGEST_PATH
from .live import LIVE_EVENT_TYPES
from .live_route import LIVE_PATH
from .observability import MAX_PATTERNS, TARGET_PATTERN, BudgetsResponse
from .responses import ErrorBody

__all__ = ["OPENAPI_PATH", "OPERATIONS", "HealthResponse", "Operation", "build_openapi", "routes"]

OPENAPI_PATH: Final = "/openapi.json"


class HealthResponse(msgspec.Struct, frozen=True):
    """``GET /health``."""

    status: str


@dataclass(frozen=True)
class Operation:
    """What the document says about one method on one path."""

    summary: str
    scope: str | None  # "read", "ingest", "admin"; None: no token
    response: type | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    body: type | None = None
    body_schema: dict[str, Any] | None = None  # instead of ``body``'s own schema
    media_type: str = "application/json"
    extra_responses: dict[str, str] = field(default_factory=dict)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_SECONDS = {"type": "integer", "minimum": 0, "maximum": 100_000_000_000}
_START = _query(
    "start",
    _SECONDS,
    "Range start, unix seconds (inclusive). Default: end - 1 hour. "
    "A start after the end (given or defaulted) is a 400 naming `end`.",
)
_END = _query("end", _SECONDS, "Range end, unix seconds (exclusive). Default: now.")
_REF: Final = "#/components/schemas/{name}"
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
_TEXT = {"type": "string", "maxLength": 256}
_LIMIT = _query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    "Page size.",
)
_CURSOR = _query("cursor", {"type": "string"}, "next_cursor of the previous page.")
_CORRELATION_ID = {"type": "string", "pattern": REF_PATTERN}

OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("/health", "get"): Operation("Liveness", None, HealthResponse),
    (OPENAPI_PATH, "get"): Operation("This document", None),
    (INGEST_PATH, "post"): Operation(
        "Store a batch of Protocol 012 events (each event_id once)",
        "ingest",
        IngestResponse,
        body_schema=_INGEST_BODY,
        extra_responses={
            "408": "The body arrived too slowly (--body-timeout)",
            "413": "Body or batch too large: split it",
            "415": "Not JSON",
        },
    ),
    ("/analytics/stats", "get"): Operation("Stored events and retention", "read", StatsResponse),
    ("/analytics/events", "get"): Operation(
        "A page of events, oldest first (keyset cursor)",
        "read",
        EventPage,
        [
            _START,
            _END,
            _LIMIT,
            _query("model", _TEXT, "Only this model."),
            _query("provider", _TEXT, "Only this provider."),
            _query("agent_id", _TEXT, "Only this agent."),
            _query("provider_id", _TEXT, "Only this API key id."),
            _query(
                "success", {"type": "boolean"}, "Only completed (true) or failed (false) requests."
            ),
            _query("event_type", {"enum": sorted(get_args(EventType))}, "Only this event type."),
            _query("correlation_id", _CORRELATION_ID, "Only events of this correlation."),
            {
                **_query(
                    "tag",
                    {
                        "type": "array",
                        "maxItems": MAX_TAGS,
                        "items": {"type": "string", "pattern": "^[A-Za-z0-9_][^:]*:.*$"},
                    },
                    "key:value; repeat for several (all must hold).",
                ),
                "style": "form",
                "explode": True,
            },
            _CURSOR,
        ],
    ),
    ("/analytics/correlate", "get"): Operation(
        "The events of one correlation_id, oldest first, with their parent links",
        "read",
        CorrelationChain,
        [
            {**_query("correlation_id", _CORRELATION_ID, "The correlation."), "required": True},
            _LIMIT,
            _CURSOR,
        ],
    ),
    ("/analytics/aggregate", "get"): Operation(
        "Totals per time window and group (from rollups)",
        "read",
        AggregateResult,
        [
            _START,
            _END,
            _query("group_by", {"enum": list(GROUP_BY)}, "Group by this facet."),
            _query("window", {"enum": list(WINDOWS)}, "Time buckets (UTC; weeks start Monday)."),
        ],
    ),
    ("/analytics/timeseries", "get"): Operation(
        "One metric per time bucket, one series per group (from rollups)",
        "read",
        TimeSeriesResult,
        [
            _START,
            _END,
            _query(
                "metric",
                {"enum": list(METRICS), "default": "requests"},
                "What each point measures.",
            ),
            _query(
                "aggregation",
                {"enum": list(AGGREGATIONS)},
                "How a bucket is summarised; default and allowed ones depend on the metric.",
            ),
            _query("window", {"enum": list(WINDOWS), "default": "1m"}, "Bucket length (UTC)."),
            _query("group_by", {"enum": list(GROUP_BY)}, "One series per value of this facet."),
            _query("fill", {"enum": list(FILLS), "default": "none"}, "What empty buckets show."),
            _query("model", _TEXT, "Only this model."),
            _query("provider", _TEXT, "Only this provider."),
            _query("agent_id", _TEXT, "Only this agent."),
            _query("provider_id", _TEXT, "Only this API key id."),
            _query("endpoint", _TEXT, "Only this endpoint."),
            _query("status", {"enum": ["success", "failure"]}, "Only completed or failed."),
        ],
    ),
    ("/analytics/anomalies", "get"): Operation(
        "Anomalies the detector found, newest first",
        "read",
        AnomalyPage,
        [
            _query(
                "start",
                {"type": "integer", "minimum": 0},
                "Range start, unix seconds. Default: end - 24 hours.",
            ),
            _END,
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
                "At most this many (the newest).",
            ),
        ],
    ),
    ("/analytics/export", "get"): Operation(
        "Every event of the range as a streamed download",
        "read",
        None,
        [
            _query(
                "start",
                {"type": "integer", "minimum": 0},
                "Range start, unix seconds. Default: end - 24 hours.",
            ),
            _END,
            _query(
                "format",
                {"enum": list(FORMATS), "default": "json"},
                "csv, json (an array) or jsonl.",
            ),
            _query("model", _TEXT, "Only this model."),
            _query("provider", _TEXT, "Only this provider."),
            _query("agent_id", _TEXT, "Only this agent."),
        ],
    ),
    ("/analytics/clear", "post"): Operation(
        "Delete every event and rollup", "admin", ClearResponse
    ),
    (LIVE_PATH, "get"): Operation(
        "Server-sent events of each newly stored event: `id: <event_id>`, `event: event`, "
        "`data: <Protocol 012 JSON>`; of each anomaly the detector stores: `event: anomaly`, "
        '`data: <its /analytics/anomalies record with "event_type": "anomaly_detected">`; '
        "`: keepalive` comments every 15 s; `Last-Event-ID` replays recent events. Never "
        "ends on its own.",
        "read",
        None,
        [
            _query("model", _TEXT, "Only this model."),
            _query("provider", _TEXT, "Only this provider."),
            _query("agent_id", _TEXT, "Only this agent."),
            _query(
                "event_type",
                {"enum": list(LIVE_EVENT_TYPES)},
                "Only this event type.",
            ),
        ],
        media_type="text/event-stream",
        extra_responses={"503": "Too many live streams, or shutting down (Retry-After)"},
    ),
    (DASHBOARD_PATH, "get"): Operation(
        "The dashboard (HTML). `?token=<read token>` signs in: a read-session cookie "
        "(HttpOnly, SameSite=Strict) and a redirect without the token.",
        "read",
        None,
        [
            _query("range", {"enum": list(RANGES), "default": "1h"}, "Time range."),
            _query("target", {"type": "string"}, "SLO success target, e.g. 0.999."),
            _query("token", {"type": "string"}, "A read token, exchanged for a cookie."),
        ],
        media_type="text/html",
        extra_responses={"303": "Signed in: the cookie is set, go to the dashboard"},
    ),
    (PANELS_PATH, "get"): Operation(
        "The dashboard's panels (an HTML fragment)",
        "read",
        None,
        [
            _query("range", {"enum": list(RANGES), "default": "1h"}, "Time range."),
            _query("target", {"type": "string"}, "SLO success target, e.g. 0.999."),
        ],
        media_type="text/html",
    ),
    ("/analytics/errors", "get"): Operation(
        "The most frequent error patterns",
        "read",
        ErrorPatternsSnapshot,
        [
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_PATTERNS, "default": 20},
                "How many patterns.",
            )
        ],
    ),
    ("/analytics/slo", "get"): Operation(
        "SLO status over a window, with burn-rate alerts",
        "read",
        SloStatus,
        [
            _query(
                "target",
                {"type": "string", "pattern": TARGET_PATTERN, "default": "0.999"},
                "Success-rate target, a decimal strictly between 0 and 1.",
            ),
            _query(
                "window",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_WINDOW_MS // 1000,
                    "default": HOUR_MS // 1000,
                },
                "Window, seconds.",
            ),
        ],
    ),
    ("/analytics/budgets", "get"): Operation(
        "Every budget in its current period", "read", BudgetsResponse
    ),
    ("/analytics/streaming", "get"): Operation("Streaming statistics", "read", StreamingSnapshot),
    ("/metrics", "get"): Operation("Prometheus exposition", "read", None, media_type="text/plain"),
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


def _content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}}


def _error(description: str, body: type = ErrorBody) -> dict[str, Any]:
    return {"description": description, **_content({"$ref": _REF.format(name=body.__name__)})}


def _operation(op: Operation, path: str, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('.', '_')}",
    }
    if op.parameters:
        out["parameters"] = op.parameters
    if op.body_schema is not None:
        out["requestBody"] = {"required": True, **_content(op.body_schema)}
    elif op.body is not None:
        out["requestBody"] = {
            "required": True,
            **_content({"$ref": _REF.format(name=op.body.__name__)}),
        }
    if op.response is not None:
        ok: dict[str, Any] = {
            "description": "OK",
            **_content({"$ref": _REF.format(name=op.response.__name__)}),
        }
    elif op.media_type != "application/json":
        ok = {"description": "OK", **_content({"type": "string"}, op.media_type)}
    elif path == "/analytics/export":
        ok = {
            "description": "The events (Content-Disposition: attachment)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": _REF.format(name="EventRecord")}}
                },
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    elif op.media_type != "application/json":
        ok = {"description": "OK", **_content({"type": "string"}, op.media_type)}
    else:
        ok = {"description": "OK", **_content({"type": "object"})}
    responses: dict[str, Any] = {"200": ok}
    if op.parameters:
        responses["400"] = _error("A bad parameter (named in `parameter`)", ParamErrorBody)
    elif op.body is not None or op.body_schema is not None:
        responses["400"] = _error("Malformed body")
    if op.scope is not None:
        out["security"] = [{"bearerAuth": []}]
        out["description"] = f"Needs a token with the {op.scope} scope."
        responses["401"] = _error("Missing or invalid token")
        responses["503"] = _error("Database busy: retry (Retry-After)")
    for status, description in op.extra_responses.items():
        responses[status] = _error(description)
    out["responses"] = responses
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
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
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

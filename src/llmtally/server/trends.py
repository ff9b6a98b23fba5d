"""Trend endpoints (read token): ``GET /analytics/timeseries`` and ``/analytics/anomalies``.

``/analytics/timeseries?metric=requests&aggregation=count&window=1m&group_by=model
&fill=zero&start&end`` answers ``llmtally.query.timeseries`` (``TimeSeriesResult``);
filters are ``model``, ``provider``, ``agent_id``, ``provider_id``, ``endpoint`` and
``status`` (``success``/``failure``). ``/analytics/anomalies?start&end&limit`` lists the
anomalies the collector's detector stored (``AnomalyPage``, newest first). ``start`` and
``end`` are unix seconds and default to the last hour (anomalies: the last 24 hours). A
bad parameter (an unknown one included: ``TIMESERIES_QUERY``, ``ANOMALIES_QUERY``) is a 400
``{"error": "...", "parameter": "<name>"}``, as in ``analytics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..query import AGGREGATIONS, FILLS, GROUP_BY, METRICS, WINDOWS, QueryError, timeseries
from ..query.anomalies import anomalies
from ..query.timeseries import STATUSES
from ..storage.base import QueryStorage
from .analytics import DEFAULT_RANGE_S, _limit, _param_error, _range_ms, _storage_failure, _text
from .auth import Scope
from .context import ServerContext
from .params import (
    AGENT_ID,
    END,
    LIMIT,
    MODEL,
    PROVIDER,
    PROVIDER_ID,
    QueryParam,
    QuerySpec,
    start,
    text,
)
from .responses import error_response, json_response

__all__ = [
    "ANOMALIES_QUERY",
    "DEFAULT_ANOMALY_RANGE_S",
    "TIMESERIES_FILTERS",
    "TIMESERIES_QUERY",
    "routes",
]

DEFAULT_ANOMALY_RANGE_S: Final = 86_400
TIMESERIES_FILTERS: Final = {
    "model": "model",
    "provider": "provider",
    "agent_id": "agent",
    "provider_id": "provider_id",
    "endpoint": "endpoint",
    "status": "status",
}
"""Query parameter → ``timeseries`` filter facet."""

TIMESERIES_QUERY: Final = QuerySpec(
    start("end - 1 hour"),
    END,
    QueryParam(
        "metric", {"enum": list(METRICS), "default": "requests"}, "What each point measures."
    ),
    QueryParam(
        "aggregation",
        {"enum": list(AGGREGATIONS)},
        "How a bucket is summarised; the default and the allowed ones depend on the metric "
        "(another is a 400).",
    ),
    QueryParam("window", {"enum": list(WINDOWS), "default": "1m"}, "Bucket length (UTC)."),
    QueryParam("group_by", {"enum": list(GROUP_BY)}, "One series per value of this facet."),
    QueryParam("fill", {"enum": list(FILLS), "default": "none"}, "What empty buckets show."),
    MODEL,
    PROVIDER,
    AGENT_ID,
    PROVIDER_ID,
    text("endpoint", "Only this endpoint."),
    QueryParam("status", {"enum": list(STATUSES)}, "Only completed or failed requests."),
)
ANOMALIES_QUERY: Final = QuerySpec(
    start("end - 24 hours"),
    END,
    replace(LIMIT, description="At most this many (the newest)."),
)

Handler = Callable[[Request, QueryStorage], Awaitable[Response]]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The trend routes. A storage without queries gets 501s."""
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

    async def get_timeseries(request: Request, s: QueryStorage) -> Response:
        """One metric per time bucket, one series per group."""
        start_ms, end_ms = _range_ms(request, DEFAULT_RANGE_S)
        q = request.query_params
        filters = {
            facet: value
            for name, facet in TIMESERIES_FILTERS.items()
            if (value := _text(request, name)) is not None
        }
        result = await timeseries(
            s,
            q.get("metric") or "requests",
            start_ms,
            end_ms,
            window=q.get("window") or "1m",
            aggregation=q.get("aggregation") or None,
            group_by=q.get("group_by") or None,
            filters=filters,
            fill=q.get("fill") or "none",
        )
        return json_response(result)

    async def get_anomalies(request: Request, s: QueryStorage) -> Response:
        """Anomalies the detector found, newest first."""
        start_ms, end_ms = _range_ms(request, DEFAULT_ANOMALY_RANGE_S)
        return json_response(await anomalies(s, start_ms, end_ms, limit=_limit(request)))

    read = ctx.auth.protect
    return [
        Route(
            "/analytics/timeseries",
            read(Scope.READ, endpoint(get_timeseries, "timeseries query", TIMESERIES_QUERY)),
            methods=["GET"],
        ),
        Route(
            "/analytics/anomalies",
            read(Scope.READ, endpoint(get_anomalies, "anomalies query", ANOMALIES_QUERY)),
            methods=["GET"],
        ),
    ]

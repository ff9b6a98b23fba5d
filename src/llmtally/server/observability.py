"""Live analysis endpoints (read token): errors, SLO, budgets, streaming, and ``/metrics``.

=========================  ===============================================================
``GET /analytics/errors``  ``?limit=20`` (1–1000): the most frequent error patterns
                           (``ErrorPatternsSnapshot``)
``GET /analytics/slo``     ``?target=0.999&window=3600`` (seconds, at most 30 days): error
                           budget, burn rates, multi-window alerts (``SloStatus``)
``GET /analytics/budgets`` ``{"budgets": [BudgetStatus, ...]}``
``GET /analytics/streaming``  active streams, completion rate, per-model TTFT, ITL and
                           tokens/s percentiles (``StreamingSnapshot``)
``GET /metrics``           Prometheus text or OpenMetrics (``llmtally.prometheus``)
=========================  ===============================================================

A bad parameter — an unknown one (each endpoint takes only what its ``*_QUERY`` declares)
or one given twice included — is a 400 ``{"error": "...", "parameter": "<name>"}``. Two
ways to serve them:

- Inside a router, over its ``EventStore``::

      app.mount("/llmtally", observability_app(store, auth=auth))

  (or add ``routes_for(store, auth)`` to an app's routes).
- In the collector: ``create_app`` registers ``routes``. A collector has a storage, not an
  ``EventStore``, so ``routes`` builds a ``CollectorView`` — statistics and trackers fed by
  the ingest path with every event it stores (``ServerContext.ingest_observers``). Like
  any Prometheus counter, its numbers cover what *this* process ingested since it
  started: across replicas, ``sum()`` them (each event is stored, and counted, by one
  replica); ``rate()`` absorbs restarts. Durable totals are ``/analytics/stats`` and
  ``/analytics/aggregate``, which read the storage. So are budgets: a collector given
  budgets (``llmtally serve --budgets FILE``) computes their spend from the storage
  (``server.budgets.CollectorBudgets``, cached a few seconds) before answering
  ``/analytics/budgets`` and ``/metrics`` (whose ``llmtally_budget_*`` gauges are the
  embedded store's; ``reserved`` is always 0: a collector holds nothing). Without
  budgets the list is empty.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from itertools import chain
from typing import Final, Protocol

import msgspec
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..analysis.budgets import BudgetStatus
from ..analysis.errors import ErrorPatternsSnapshot
from ..analysis.slo import HOUR_MS, MAX_WINDOW_MS, SloStatus
from ..analysis.stats import Aggregate, ComputedStats, StatsDelta
from ..analysis.streaming import StreamingSnapshot
from ..analysis.trackers import Trackers
from ..events import AnalyticsEvent
from ..prometheus import MetricsSource, make_registry, render
from ..query import QueryError
from .auth import Auth, Scope
from .budgets import CollectorBudgets
from .context import ServerContext
from .failures import is_transient
from .live import LiveHubMetrics
from .params import (
    NO_PARAMETERS,
    SLO_TARGET,
    TARGET_PATTERN,
    QueryParam,
    QuerySpec,
    is_target,
    parse_int,
)
from .responses import error_response, exception_handlers, json_response

__all__ = [
    "DEFAULT_FOLD_EVENTS",
    "ERRORS_QUERY",
    "MAX_PATTERNS",
    "SLO_QUERY",
    "TARGET_PATTERN",
    "BudgetsResponse",
    "CollectorView",
    "ObservabilitySource",
    "observability_app",
    "routes",
    "routes_for",
]

logger: Final = logging.getLogger("llmtally.server.observability")

DEFAULT_FOLD_EVENTS: Final = 5_000
"""``CollectorView``: observed events folded in together at most (ten requests of 500)."""
MAX_PATTERNS: Final = 1_000
"""The largest ``limit`` of ``/analytics/errors``."""
ERRORS_QUERY: Final = QuerySpec(
    QueryParam(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PATTERNS, "default": 20},
        "How many patterns.",
    )
)
SLO_QUERY: Final = QuerySpec(
    SLO_TARGET,
    QueryParam(
        "window",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_WINDOW_MS // 1000,
            "default": HOUR_MS // 1000,
        },
        "Window, seconds.",
    ),
)


class ObservabilitySource(MetricsSource, Protocol):
    """What the endpoints read: ``EventStore`` and ``CollectorView`` provide it."""

    def error_patterns(self, n: int = ...) -> ErrorPatternsSnapshot: ...

    def streaming_stats(self) -> StreamingSnapshot: ...


class BudgetsResponse(msgspec.Struct, frozen=True):
    """``GET /analytics/budgets``."""

    budgets: list[BudgetStatus]


class _ParamError(msgspec.Struct, frozen=True):
    error: str
    parameter: str


class _BadParameter(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CollectorView:
    """The collector's live statistics and trackers, fed with the events it stores.

    ``observe`` is the ingest path's hook (synchronous, on the event loop's thread); the
    readers are the same as ``EventStore``'s. ``fold_events``: how many observed events
    may wait to be folded in together (see ``observe``). Counts start at zero when the process starts
    (see the module docstring).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] | None = None,
        max_keys: int = 10_000,
        max_error_patterns: int = 1_000,
        budgets: CollectorBudgets | None = None,
        fold_events: int = DEFAULT_FOLD_EVENTS,
    ) -> None:
        if fold_events < 1:
            raise ValueError("fold_events must be at least 1")
        self._clock = clock or _wall_clock_ms
        self._budgets = budgets
        self._aggregate = Aggregate(max_keys=max_keys)
        self._trackers = Trackers(max_patterns=max_error_patterns, max_models=max_keys)
        self._fold_events = fold_events
        self._pending: list[Sequence[AnalyticsEvent]] = []
        self._pending_count = 0

    def observe(self, events: Sequence[AnalyticsEvent]) -> None:
        """Count events just stored (each event id once). Never raises: a failure here is
        logged, and must not fail the ingest request that stored them.

        Batches are folded in together, ``fold_events`` events at a time or when a reader
        asks, whichever comes first: the statistics' and trackers' per-batch work (keys,
        sketches, SLO minutes) is then paid once for many requests. Readers always see
        every event observed before they were called."""
        if not events:
            return
        self._pending.append(events)
        self._pending_count += len(events)
        if self._pending_count >= self._fold_events:
            self._fold()

    def _fold(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_count = [], 0
        events = pending[0] if len(pending) == 1 else list(chain.from_iterable(pending))
        try:
            delta = StatsDelta().add_all(events)
            self._aggregate.apply(delta)
            self._trackers.observe(events, delta)
        except Exception:
            logger.exception("counting %d ingested events failed", len(events))

    def stats(self) -> ComputedStats:
        """Totals of what this process ingested."""
        self._fold()
        return self._aggregate.snapshot()

    def observed_state(self) -> tuple[Aggregate, Trackers]:
        """The live statistics and trackers (read-only)."""
        self._fold()
        return self._aggregate, self._trackers

    def error_patterns(self, n: int = 20) -> ErrorPatternsSnapshot:
        """The ``n`` most frequent error patterns."""
        self._fold()
        return self._trackers.errors.snapshot(n)

    def slo_status(
        self, target: float | str | Decimal | Fraction = 0.999, window_ms: int = HOUR_MS
    ) -> SloStatus:
        """The SLO over the window ending now (wall clock); raises ``ValueError``."""
        self._fold()
        return self._trackers.slo.status(self._clock(), target, window_ms)

    def streaming_stats(self) -> StreamingSnapshot:
        """Streams seen in ingested events (no active gauge: a collector sees ends only)."""
        self._fold()
        return self._trackers.streaming.snapshot()

    def budget_status(self) -> list[BudgetStatus]:
        """The budgets as last computed by ``refresh_budgets`` (no I/O: ``/metrics``
        calls it at scrape time); ``[]`` without budgets."""
        return [] if self._budgets is None else self._budgets.cached()

    async def refresh_budgets(self) -> None:
        """Bring ``budget_status`` up to date (from the cache if it is fresh enough).
        Storage errors propagate."""
        if self._budgets is not None:
            await self._budgets.status()


# --- parameters -------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw)
    if value is None:
        raise _BadParameter(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise _BadParameter(name, f"{name} must be within {lo}..{hi}")
    return value


def _target_param(request: Request) -> str:
    raw = request.query_params.get("target")
    if raw is None or raw == "":
        return "0.999"
    if not is_target(raw):
        raise _BadParameter(
            "target", "target must be a decimal strictly between 0 and 1, e.g. 0.999"
        )
    return raw


# --- routes -----------------------------------------------------------------------------


Endpoint = Callable[[Request], Awaitable[Response]]


def routes_for(
    source: ObservabilitySource,
    auth: Auth,
    *,
    extra_metrics: Sequence[Collector] = (),
    refresh_budgets: Callable[[], Awaitable[None]] | None = None,
) -> list[BaseRoute]:
    """The endpoints over ``source``, each behind a read-scope token check;
    ``extra_metrics`` are more prometheus_client collectors for ``/metrics``.
    ``refresh_budgets`` is awaited before ``/analytics/budgets`` (a storage error is a
    503 when the database is busy, else a 500) and ``/metrics`` (whose scrape goes on
    with the last budgets computed, the error logged)."""
    registry = make_registry(source)
    for collector in extra_metrics:
        registry.register(collector)

    def guarded(
        handler: Callable[[Request], Response | Awaitable[Response]], query: QuerySpec
    ) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                query.check(request.query_params)
                answer = handler(request)
                return await answer if inspect.isawaitable(answer) else answer
            except QueryError as exc:
                return json_response(_ParamError(str(exc), exc.parameter), 400)
            except _BadParameter as exc:
                return json_response(_ParamError(exc.message, exc.parameter), 400)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return auth.protect(Scope.READ, run)

    def get_errors(request: Request) -> Response:
        """The most frequent error patterns."""
        limit = _int_param(request, "limit", 20, 1, MAX_PATTERNS)
        return json_response(source.error_patterns(limit))

    def get_slo(request: Request) -> Response:
        """SLO status over a window, with burn-rate alerts."""
        target = _target_param(request)
        window_s = _int_param(request, "window", HOUR_MS // 1000, 1, MAX_WINDOW_MS // 1000)
        return json_response(source.slo_status(target, window_s * 1000))

    async def get_budgets(request: Request) -> Response:
        """Every budget in its current period."""
        if refresh_budgets is not None:
            try:
                await refresh_budgets()
            except Exception as exc:
                if is_transient(exc):
                    logger.warning("database busy during budgets, answered 503: %s", exc)
                    return error_response(503, "database busy, retry shortly", {"Retry-After": "1"})
                logger.exception("computing budgets failed")
                return error_response(500, "storage error")
        return json_response(BudgetsResponse(source.budget_status()))

    def get_streaming(request: Request) -> Response:
        """Streaming statistics."""
        return json_response(source.streaming_stats())

    async def get_metrics(request: Request) -> Response:
        """Prometheus exposition, built now (prometheus_client writes the format)."""
        if refresh_budgets is not None:
            try:
                await refresh_budgets()
            except Exception as exc:
                logger.warning("budgets not refreshed for /metrics (last ones served): %s", exc)
        body, content_type = render(registry, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return [
        Route("/analytics/errors", guarded(get_errors, ERRORS_QUERY), methods=["GET"]),
        Route("/analytics/slo", guarded(get_slo, SLO_QUERY), methods=["GET"]),
        Route("/analytics/budgets", guarded(get_budgets, NO_PARAMETERS), methods=["GET"]),
        Route("/analytics/streaming", guarded(get_streaming, NO_PARAMETERS), methods=["GET"]),
        Route("/metrics", guarded(get_metrics, NO_PARAMETERS), methods=["GET"]),
    ]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The collector's endpoints: a ``CollectorView`` fed by the ingest path, with the
    context's budgets; ``/metrics`` also has the live streams' counters."""
    view = CollectorView(budgets=ctx.budgets)
    ctx.ingest_observers.append(view.observe)
    return routes_for(
        view,
        ctx.auth,
        extra_metrics=(LiveHubMetrics(ctx.live),),
        refresh_budgets=view.refresh_budgets if ctx.budgets else None,
    )


def observability_app(source: ObservabilitySource, *, auth: Auth) -> Starlette:
    """An app serving the endpoints over ``source`` (an ``EventStore``), to mount in a
    router: ``app.mount("/llmtally", observability_app(store, auth=auth))``. Use
    ``Auth(insecure=True)`` only where the mount point is otherwise protected."""
    return Starlette(routes=routes_for(source, auth), exception_handlers=exception_handlers())

"""The collector as an ASGI app: ``create_app(storage, auth=...)``.

Routes come from route modules (each ``routes(ctx) -> list[BaseRoute]``, see
``context.py``); this module only assembles them with the lifespan and the JSON error
handlers. The app can be served on its own (``llmtally serve``) or mounted inside a
router's own Starlette app over a storage the router already opened::

    Mount("/llmtally", app=create_app(storage, auth=auth))  # own_storage=False

A mounted app's lifespan does not run (Starlette does not forward lifespan to mounts),
which is why opening and closing the storage is opt-in with ``own_storage=True``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..analysis.anomaly import DetectorConfig
from ..analysis.budgets import Budget
from ..storage.base import EventStorage, QueryStorage
from ..storage.retention import DEFAULT_RETENTION_INTERVAL_S, run_retention
from . import analytics, dashboard, ingest, live_route, observability, openapi, trends
from .auth import Auth
from .budgets import CollectorBudgets
from .context import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    ServerContext,
)
from .detector import DEFAULT_DETECT_INTERVAL_S, run_detector
from .live import LiveHub
from .responses import exception_handlers, json_response

__all__ = ["HEALTH_PATH", "RouteFactory", "create_app"]

HEALTH_PATH: Final = "/health"
CLOSE_TIMEOUT_S: Final = 30.0

RouteFactory = Callable[[ServerContext], Sequence[BaseRoute]]
"""A route module's ``routes`` function."""

ROUTE_MODULES: Final[tuple[RouteFactory, ...]] = (
    ingest.routes,
    analytics.routes,
    trends.routes,
    observability.routes,
    live_route.routes,
    dashboard.routes,
    openapi.routes,
)

logger: Final = logging.getLogger("llmtally.server")


async def health(request: Request) -> Response:
    """Liveness: ``{"status": "ok"}``; needs no token and touches no storage."""
    return json_response({"status": "ok"})


def create_app(
    storage: EventStorage,
    *,
    auth: Auth,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    own_storage: bool = False,
    extra_routes: RouteFactory | None = None,
    retention_interval_s: float | None = DEFAULT_RETENTION_INTERVAL_S,
    live: LiveHub | None = None,
    detect_interval_s: float | None = DEFAULT_DETECT_INTERVAL_S,
    detector_config: DetectorConfig | None = None,
    budgets: Sequence[Budget] = (),
    clock: Callable[[], int] | None = None,
) -> Starlette:
    """The collector app over ``storage``.

    ``own_storage=True``: the app's lifespan opens the storage at startup (a failure
    aborts startup) and closes it at shutdown, after in-flight requests are done.
    Otherwise the caller owns it. ``extra_routes`` adds routes that share the same
    context (storage, auth, limits). With ``own_storage=True`` and a storage that
    expires data (``QueryStorage``), a background task runs ``expire`` every
    ``retention_interval_s`` seconds (``None``: never), and the anomaly detector
    (``detector.run_detector``, with ``detector_config``) every ``detect_interval_s``
    seconds (``None``: never); the anomalies it stores are published on ``live``, the
    broadcaster of ``GET /analytics/live`` (default: a ``LiveHub()``); whoever runs the server calls
    ``app.state.llmtally.live.close()`` when shutdown begins, so that open streams do not
    hold it up (``llmtally serve`` does; the lifespan's shutdown closes it too, late).
    ``body_timeout_s`` bounds the read of a request body (408 past it). ``budgets`` are
    tracked from the storage (``server.budgets``) in the periods of ``clock`` (unix
    milliseconds; default the wall clock). Raises ``ValueError`` for non-positive limits,
    budgets over a storage that answers no queries, or duplicate budget ids.
    """
    if budgets and not isinstance(storage, QueryStorage):
        raise ValueError("budgets need a storage that answers queries")
    ctx = ServerContext(
        storage=storage,
        auth=auth,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        live=live or LiveHub(),
        body_timeout_s=body_timeout_s,
        budgets=(
            CollectorBudgets(storage, budgets, clock=clock)
            if isinstance(storage, QueryStorage)
            else None
        ),
    )
    routes: list[BaseRoute] = [Route(HEALTH_PATH, health, methods=["GET"])]
    for factory in (*ROUTE_MODULES, *((extra_routes,) if extra_routes else ())):
        routes.extend(factory(ctx))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not own_storage:
            try:
                yield
            finally:
                ctx.live.close()
            return
        await storage.open()
        try:
            # The task group is entered and left by this one lifespan task (Starlette
            # runs the whole context there), so yielding inside it is safe here.
            async with anyio.create_task_group() as tg:
                if retention_interval_s is not None and isinstance(storage, QueryStorage):
                    tg.start_soon(partial(run_retention, storage, interval_s=retention_interval_s))
                if detect_interval_s is not None and isinstance(storage, QueryStorage):
                    tg.start_soon(
                        partial(
                            run_detector,
                            storage,
                            config=detector_config,
                            interval_s=detect_interval_s,
                            write_lock=ctx.write_lock,
                            on_pass=ctx.live.publish,
                        )
                    )
                try:
                    yield
                finally:
                    ctx.live.close()
                    tg.cancel_scope.cancel()
        finally:
            # Shutdown must close the database even if the server is being cancelled.
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await storage.close()
            logger.info("storage closed")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())
    app.state.llmtally = ctx
    return app

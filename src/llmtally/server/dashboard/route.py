"""``GET /`` (the dashboard) and ``GET /dashboard/panels`` (its refreshable fragment).

Query parameters (``DASHBOARD_QUERY``, ``PANELS_QUERY``): ``range`` (``1h`` | ``24h`` |
``7d`` | ``30d``, default ``1h``) and ``target`` (the SLO success target, default
``0.999``); a bad one, an unknown one or one given twice is a 400 page naming it.

Sign-in. A browser cannot put a token in an ``Authorization`` header (nor can
``EventSource``), so ``GET /?token=<read token>`` checks the token once (constant time,
``Auth.issue_session``), sets a read-session cookie (``HttpOnly; SameSite=Strict``,
``Secure`` over HTTPS, 12 hours) and redirects (303) to the same URL without the token,
so it does not stay in the address bar or history. The cookie then opens the dashboard,
its fragment and the read endpoints (``/analytics/live``) — reads only. Without a token
or cookie the dashboard answers 401 with a sign-in form; with ``--insecure-no-auth`` it
is open. Tokens in URLs can reach access logs: ``llmtally serve`` has them off unless
``--access-log``.

Every HTML answer has a Content-Security-Policy that allows only this origin, and inline
script and style only with the response's nonce; no frame may embed it.
"""

from __future__ import annotations

import logging
import secrets
import time
from html import escape
from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...query import QueryError
from ...storage.base import QueryStorage
from ..auth import SESSION_COOKIE, SESSION_TTL_S, Scope
from ..context import ServerContext
from ..failures import is_transient
from ..live_route import LIVE_PATH
from ..params import SLO_TARGET, QueryParam, QuerySpec
from .data import DEFAULT_RANGE, DEFAULT_SLO_TARGET, RANGES, DashboardData, gather, parse_target
from .page import render_login, render_page
from .panels import render_panels

__all__ = [
    "DASHBOARD_PATH",
    "DASHBOARD_QUERY",
    "PANELS_PATH",
    "PANELS_QUERY",
    "content_security_policy",
    "routes",
]

DASHBOARD_PATH: Final = "/"
PANELS_PATH: Final = "/dashboard/panels"
_RANGE: Final = QueryParam("range", {"enum": list(RANGES), "default": DEFAULT_RANGE}, "Time range.")
PANELS_QUERY: Final = QuerySpec(_RANGE, SLO_TARGET)
DASHBOARD_QUERY: Final = QuerySpec(
    _RANGE,
    SLO_TARGET,
    QueryParam("token", {"type": "string"}, "A read token, exchanged for a session cookie."),
)

logger: Final = logging.getLogger("llmtally.server.dashboard")


def content_security_policy(nonce: str) -> str:
    """Only this origin; inline script and style only with ``nonce``; no framing."""
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def _html(
    body: str, status: int = 200, *, nonce: str, headers: dict[str, str] | None = None
) -> Response:
    return HTMLResponse(
        body,
        status,
        {
            "Content-Security-Policy": content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(headers or {}),
        },
    )


def _error_page(status: int, message: str | None) -> Response:
    """401: the sign-in form (with ``message`` if any); otherwise a one-line page."""
    nonce = secrets.token_urlsafe(16)
    if status == 401:
        challenge = {"WWW-Authenticate": 'Bearer realm="llmtally"'}
        return _html(render_login(nonce=nonce, error=message), 401, nonce=nonce, headers=challenge)
    body = f"<!doctype html><title>llmtally</title><p>{escape(message or '')}</p>"
    return _html(body, status, nonce=nonce)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The dashboard and its fragment, over the context's storage and budgets."""
    storage, auth, budgets = ctx.storage, ctx.auth, ctx.budgets

    async def load(request: Request, query: QuerySpec) -> DashboardData | Response:
        try:
            query.check(request.query_params)
        except QueryError as exc:
            return _error_page(400, str(exc))
        name = request.query_params.get("range") or DEFAULT_RANGE
        if name not in RANGES:
            return _error_page(400, f"range must be one of {', '.join(RANGES)}")
        try:
            target = parse_target(request.query_params.get("target"))
        except QueryError as exc:
            return _error_page(400, str(exc))
        if not isinstance(storage, QueryStorage):
            return _error_page(501, "this storage does not answer queries")
        try:
            statuses = await budgets.status() if budgets is not None else []
            return await gather(
                storage,
                RANGES[name],
                time.time_ns() // 1_000_000,
                target=target,
                budgets=statuses,
            )
        except Exception as exc:
            if is_transient(exc):
                logger.warning("database busy during dashboard, answered 503: %s", exc)
                return _error_page(503, "database busy, retry shortly")
            logger.exception("dashboard query failed")
            return _error_page(500, "storage error")

    def sign_in(request: Request, token: str) -> Response:
        value = None if auth.insecure else auth.issue_session(token)
        if value is None and not auth.insecure:
            return _error_page(401, "That token does not grant read access.")
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        location = f"{_root(request)}/" + (f"?{urlencode(params)}" if params else "")
        response = RedirectResponse(
            location, 303, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        )
        if value is not None:
            response.set_cookie(
                SESSION_COOKIE,
                value,
                max_age=SESSION_TTL_S,
                path=_root(request) or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def dashboard(request: Request) -> Response:
        """The dashboard (HTML): traffic, cost, latency, SLO burn, errors, live events."""
        token = request.query_params.get("token")
        if token is not None:
            try:
                DASHBOARD_QUERY.check(request.query_params)
            except QueryError as exc:
                return _error_page(400, str(exc))
            return sign_in(request, token)
        if not auth.request_allows(request, Scope.READ):
            return _error_page(401, None)
        data = await load(request, DASHBOARD_QUERY)
        if isinstance(data, Response):
            return data
        extra: dict[str, str] = {}
        target = request.query_params.get("target")
        if target and target != DEFAULT_SLO_TARGET:
            extra["target"] = target
        root = _root(request)
        nonce = secrets.token_urlsafe(16)
        page = render_page(
            data,
            nonce=nonce,
            live_url=root + LIVE_PATH,
            panels_url=root + PANELS_PATH + "?" + urlencode({"range": data.range.name, **extra}),
            extra_params=extra,
        )
        return _html(page, nonce=nonce)

    async def panels(request: Request) -> Response:
        """The dashboard's panels (an HTML fragment), for refreshing without a reload."""
        data = await load(request, PANELS_QUERY)
        if isinstance(data, Response):
            return data
        return _html(render_panels(data), nonce=secrets.token_urlsafe(16))

    return [
        Route(DASHBOARD_PATH, dashboard, methods=["GET"]),
        Route(PANELS_PATH, auth.protect(Scope.READ, panels), methods=["GET"]),
    ]

"""The dashboard over HTTP (a real uvicorn server): sign-in with a read token, the
read-session cookie and what it does (and does not) open, CSP, parameters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest

from llmtally.server.app import create_app
from llmtally.server.auth import SESSION_COOKIE, SESSION_TTL_S, Auth, Scope
from llmtally.server.live import LiveHub
from llmtally.storage.sqlite import SqliteStorage

from ..integrations.serving import serve

READ, INGEST, ADMIN = "dash-read", "dash-ingest", "dash-admin"
TOKENS = {READ: Scope.READ, INGEST: Scope.INGEST, ADMIN: Scope.ADMIN | Scope.READ}


# --- sessions (pure) --------------------------------------------------------------------


def test_sessions_are_read_only_expiring_and_tied_to_a_configured_token() -> None:
    auth = Auth(TOKENS)
    assert auth.issue_session(INGEST) is None  # no read scope: no session
    assert auth.issue_session("unknown") is None
    cookie = auth.issue_session(READ, now_s=1000)
    assert cookie is not None
    assert READ not in cookie
    assert auth.session_allows_read(cookie, now_s=1000 + SESSION_TTL_S - 1)
    assert not auth.session_allows_read(cookie, now_s=1000 + SESSION_TTL_S)  # expired
    admin_cookie = auth.issue_session(ADMIN, now_s=1000)
    assert auth.session_allows_read(admin_cookie, now_s=1000)
    expiry, _, mac = cookie.partition(".")
    assert not auth.session_allows_read(f"{int(expiry) + 99999}.{mac}", now_s=1000)  # tampered
    for junk in ("", ".", "x.y", "1.", "9" * 200, f"{expiry}.{mac}!"):
        assert not auth.session_allows_read(junk, now_s=1000)
    # The token was removed from the configuration: its sessions stop working.
    assert not Auth({INGEST: Scope.INGEST}).session_allows_read(cookie, now_s=1000)


# --- over HTTP --------------------------------------------------------------------------


@asynccontextmanager
async def dashboard(tmp_path: Path, auth: Auth) -> AsyncIterator[httpx2.AsyncClient]:
    hub = LiveHub()
    app = create_app(SqliteStorage(tmp_path / "d.db"), auth=auth, own_storage=True, live=hub)
    async with serve(app, lifespan="on") as url:
        try:
            async with httpx2.AsyncClient(base_url=url, timeout=10) as client:
                yield client
        finally:
            hub.close()


def assert_strict_html(r: httpx2.Response) -> None:
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'nonce-" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


async def test_sign_in_sets_a_strict_cookie_and_drops_the_token(tmp_path: Path) -> None:
    async with dashboard(tmp_path, Auth(TOKENS)) as client:
        r = await client.get("/")
        assert r.status_code == 401
        assert_strict_html(r)
        assert 'name="token"' in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        for token in ("wrong", INGEST):
            r = await client.get("/", params={"token": token})
            assert r.status_code == 401
            assert "does not grant read access" in r.text
            assert SESSION_COOKIE not in client.cookies
        r = await client.get("/", params={"token": READ, "range": "24h"})
        assert r.status_code == 303
        assert r.headers["location"] == "/?range=24h"
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(f"{SESSION_COOKIE}=")
        assert READ not in set_cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/", f"Max-Age={SESSION_TTL_S}"):
            assert attribute in set_cookie
        page = await client.get("/", params={"range": "24h"})  # the cookie is sent now
        assert page.status_code == 200
        assert_strict_html(page)
        nonce = page.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in page.text
        assert 'data-range="24h"' in page.text
        assert 'data-window="15m"' in page.text
        fragment = await client.get("/dashboard/panels", params={"range": "7d"})
        assert fragment.status_code == 200
        assert fragment.text.startswith('<div class="tiles">')
        assert (await client.get("/analytics/stats")).status_code == 200
        async with client.stream("GET", "/analytics/live") as live:
            assert live.status_code == 200
        # A session only reads: never ingest or admin, and a bad header is not rescued.
        assert (await client.post("/analytics/clear")).status_code == 401
        r = await client.post("/api/v1/analytics/events", json={"events": []})
        assert r.status_code == 401
        r = await client.get("/analytics/stats", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401


async def test_an_admin_token_signs_in_for_reading_only(tmp_path: Path) -> None:
    async with dashboard(tmp_path, Auth(TOKENS)) as client:
        assert (await client.get("/", params={"token": ADMIN})).status_code == 303
        assert (await client.get("/")).status_code == 200
        assert (await client.post("/analytics/clear")).status_code == 401


async def test_panels_and_bad_parameters(tmp_path: Path) -> None:
    async with dashboard(tmp_path, Auth(TOKENS)) as client:
        r = await client.get("/dashboard/panels")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/json"
        headers = {"Authorization": f"Bearer {READ}"}
        bad: list[dict[str, str | list[str]]] = [
            {"range": "2h"},
            {"target": "1.5"},
            {"target": "x"},
            {"target": "1e-3"},  # /analytics/slo's rule: a plain decimal
            {"rnage": "24h"},
            {"range": ["1h", "7d"]},
        ]
        for params in bad:
            for path in ("/", "/dashboard/panels"):
                r = await client.get(path, params=params, headers=headers)
                assert r.status_code == 400, (path, params)
                assert_strict_html(r)
                assert next(iter(params)) in r.text
        r = await client.get("/", params={"target": "0.99"}, headers=headers)
        assert r.status_code == 200
        assert "Target 99.0000% success" in r.text
        assert 'href="?range=7d&amp;target=0.99"' in r.text  # range links keep the target


async def test_insecure_mode_is_open(tmp_path: Path) -> None:
    async with dashboard(tmp_path, Auth(insecure=True)) as client:
        assert (await client.get("/")).status_code == 200
        r = await client.get("/", params={"token": "anything"})
        assert r.status_code == 303
        assert r.headers["location"] == "/"
        assert "set-cookie" not in r.headers


@pytest.mark.parametrize("path", ["/analytics/live", "/", "/dashboard/panels"])
async def test_openapi_lists_the_new_routes(tmp_path: Path, path: str) -> None:
    async with dashboard(tmp_path, Auth(TOKENS)) as client:
        doc = (await client.get("/openapi.json")).json()
    op = doc["paths"][path]["get"]
    media = "text/event-stream" if path == "/analytics/live" else "text/html"
    assert media in op["responses"]["200"]["content"]
    assert op["security"] == [{"bearerAuth": []}, {"sessionCookie": []}]
    assert doc["components"]["securitySchemes"]["sessionCookie"]["name"] == SESSION_COOKIE

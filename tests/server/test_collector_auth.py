"""Tokens: the pure ``Auth`` checks, and what a real collector answers without them."""

from __future__ import annotations

import httpx2
import pytest

from llmtally._exceptions import ConfigurationError
from llmtally.server.auth import Auth, Scope

from .collector import ADMIN_TOKEN, EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, Collector, body

# --- Auth, without a server --------------------------------------------------------------


def test_from_env_splits_comma_lists_and_admin_implies_read() -> None:
    auth = Auth.from_env(
        {
            "LLMTALLY_INGEST_TOKENS": " i1 ,i2,,",
            "LLMTALLY_READ_TOKENS": "r1",
            "LLMTALLY_ADMIN_TOKENS": "a1",
        }
    )
    assert auth.token_count == 4
    assert auth.scopes_of("i1") == Scope.INGEST
    assert auth.scopes_of("i2") == Scope.INGEST
    assert auth.scopes_of("r1") == Scope.READ
    assert auth.scopes_of("a1") == Scope.ADMIN | Scope.READ
    assert auth.scopes_of("nope") == Scope(0)
    assert auth.scopes_of("") == Scope(0)


def test_a_token_in_two_lists_gets_both_scopes() -> None:
    auth = Auth.from_env({"LLMTALLY_INGEST_TOKENS": "t", "LLMTALLY_READ_TOKENS": "t"})
    assert auth.scopes_of("t") == Scope.INGEST | Scope.READ


@pytest.mark.parametrize(
    ("header", "scope", "allowed"),
    [
        pytest.param("Bearer i1", Scope.INGEST, True, id="ingest-token"),
        pytest.param("bearer   i1 ", Scope.INGEST, True, id="scheme-case-and-spaces"),
        pytest.param("Bearer a1", Scope.INGEST, False, id="admin-cannot-ingest"),
        pytest.param("Bearer r1", Scope.INGEST, False, id="read-cannot-ingest"),
        pytest.param("Bearer a1", Scope.READ, True, id="admin-can-read"),
        pytest.param("Bearer i1", Scope.READ, False, id="ingest-cannot-read"),
        pytest.param("Basic i1", Scope.INGEST, False, id="not-bearer"),
        pytest.param("Bearer", Scope.INGEST, False, id="empty-bearer"),
        pytest.param(None, Scope.INGEST, False, id="missing"),
    ],
)
def test_allows(header: str | None, scope: Scope, allowed: bool) -> None:
    auth = Auth({"i1": Scope.INGEST, "r1": Scope.READ, "a1": Scope.ADMIN | Scope.READ})
    assert auth.allows(header, scope) is allowed


def test_no_tokens_is_refused_unless_insecure() -> None:
    with pytest.raises(ConfigurationError, match="--insecure-no-auth"):
        Auth.from_env({"LLMTALLY_INGEST_TOKENS": " , "})
    insecure = Auth.from_env({}, insecure=True)
    assert insecure.allows(None, Scope.ADMIN)


def test_repr_never_shows_tokens() -> None:
    assert "secret" not in repr(Auth({"secret": Scope.INGEST}))


# --- a real collector --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_needs_no_token(anon_client: httpx2.AsyncClient) -> None:
    r = await anon_client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer wrong-token", id="wrong"),
        pytest.param(f"Bearer {READ_TOKEN}", id="read-scope"),
        pytest.param(f"Bearer {ADMIN_TOKEN}", id="admin-scope"),
        pytest.param(f"Basic {INGEST_TOKEN}", id="not-bearer"),
    ],
)
async def test_ingest_without_an_ingest_token_is_401(
    anon_client: httpx2.AsyncClient, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = await anon_client.post(EVENTS_PATH, content=body([]), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/json"
    assert "error" in r.json()


@pytest.mark.asyncio
async def test_ingest_token_is_accepted_and_never_logged(
    client: httpx2.AsyncClient, collector: Collector
) -> None:
    r = await client.post(
        EVENTS_PATH, content=body([]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    log = collector.log_text()
    for token in (INGEST_TOKEN, READ_TOKEN, ADMIN_TOKEN):
        assert token not in log

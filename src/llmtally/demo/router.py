"""An OpenAI/Anthropic-compatible mini router with llmtally analytics on both sides.

``create_router_app(upstream, store, ...)`` is the router as an ASGI app; the demo runs it
in-process and ``examples/mini_router.py`` wraps it in a command line. Clients use it like
the provider APIs (``base_url=http://HOST:PORT/v1``, ``api_key`` = their router key).
Every ``/v1/...`` request is forwarded to ``upstream`` with the router's own upstream key;
bodies and streams are relayed as they arrive.

- ``LlmTallyMiddleware`` on the router app records each client request: endpoint, model,
  stream flag, sizes, status, latency, TTFB, client IP, the client's key as a keyed hash
  (``provider_id``) with its label (``agent_id``).
- ``LlmTallyTransport`` on the upstream ``httpx2`` client records each upstream LLM call
  with its usage, cost, TTFT and inter-token latency, attributed to the client's key.
  A request served upstream is recorded once, by the transport; one refused by the router
  itself (bad key) is recorded by the middleware.

Upstream failures become provider-style error answers: no answer in time → 504, no
connection or a body broken before its end → 502. A stream broken midway ends early (the
client sees no end marker). The app's lifespan opens the store and the upstream client.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..integrations.asgi import LlmTallyMiddleware
from ..integrations.httpx import LlmTallyTransport

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = [
    "DEFAULT_TIMEOUT",
    "FORWARDED_REQUEST_HEADERS",
    "FORWARDED_RESPONSE_HEADERS",
    "create_router_app",
    "parse_keys",
]

FORWARDED_REQUEST_HEADERS: Final = frozenset(
    {"content-type", "accept", "accept-encoding", "openai-beta", "anthropic-version", "user-agent"}
)
FORWARDED_RESPONSE_HEADERS: Final = frozenset(
    {"content-type", "content-encoding", "x-request-id", "retry-after", "openai-processing-ms"}
)
DEFAULT_TIMEOUT: Final = httpx2.Timeout(600.0, connect=10.0)


def _error(status: int, message: str, code: str) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JSONResponse({"error": error}, status)


async def _relay(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx2.TransportError:
        return  # the upstream broke off (recorded by the transport): end the stream here
    finally:
        # The client may have gone: release the upstream connection even when cancelled.
        with anyio.move_on_after(5, shield=True):
            await response.aclose()


class _ShardedTransport(httpx2.AsyncBaseTransport):
    """Round-robin over several connection pools. httpcore checks every idle connection
    of a pool (one ``poll()`` each) on every request, so under high concurrency a few
    small pools cost much less CPU than one large pool."""

    def __init__(self, shards: list[httpx2.AsyncHTTPTransport]) -> None:
        self._shards = shards
        self._turn = itertools.cycle(shards)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def parse_keys(text: str) -> dict[str, str]:
    """``"alice=sk-1,bob=sk-2"`` → ``{"sk-1": "alice", "sk-2": "bob"}`` (key → label)."""
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {key.strip(): label.strip() for label, _, key in pairs}


def create_router_app(
    upstream: str,
    store: EventStore,
    *,
    keys: dict[str, str] | None = None,
    upstream_key: str | None = None,
    key_secret: bytes | None = None,
    trusted_proxies: Sequence[str] = (),
    anonymize_ip: bool = False,
    timeout: httpx2.Timeout = DEFAULT_TIMEOUT,
    limits: httpx2.Limits | None = None,
    upstream_pools: int = 1,
    forward_headers: Iterable[str] = (),
    on_started: Callable[[EventStore], None] | None = None,
    on_stopped: Callable[[EventStore], None] | None = None,
) -> LlmTallyMiddleware:
    """The router as an ASGI app over ``store`` (not yet open: the lifespan opens it).

    ``keys`` maps router keys to labels (``None``: any bearer key is accepted, unlabelled);
    ``upstream_key`` replaces the client's key upstream; ``key_secret`` is the HMAC key of
    key ids (random per call if ``None``, so ids change across restarts).
    ``limits`` bound each of ``upstream_pools`` upstream connection pools, used in turn
    (see ``_ShardedTransport``). ``forward_headers`` are request headers passed upstream
    beside the usual ones.
    ``on_started``/``on_stopped`` are called with the open store once the router is up,
    and after its last event is recorded (still open).
    """
    labels = dict(keys or {})
    forwarded = FORWARDED_REQUEST_HEADERS | {h.lower() for h in forward_headers}
    pool = limits or httpx2.Limits(max_connections=256, max_keepalive_connections=256)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            shards = [httpx2.AsyncHTTPTransport(limits=pool) for _ in range(upstream_pools)]
            wrapped = shards[0] if upstream_pools == 1 else _ShardedTransport(shards)
            transport = LlmTallyTransport(store, wrapped)
            async with httpx2.AsyncClient(
                base_url=upstream, transport=transport, timeout=timeout
            ) as client:
                app.state.client = client
                await store.record_router_started()
                if on_started is not None:
                    on_started(store)
                try:
                    yield
                finally:
                    await store.record_router_stopped()
                    if on_stopped is not None:
                        on_stopped(store)

    async def proxy(request: Request) -> Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if labels and key not in labels:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        client: httpx2.AsyncClient = request.app.state.client
        headers = {k: v for k, v in request.headers.items() if k in forwarded}
        if upstream_key:
            headers["authorization"] = f"Bearer {upstream_key}"
        outgoing = client.build_request(
            request.method,
            request.path_params["path"],
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        try:
            response = await client.send(outgoing, stream=True)
        except httpx2.TimeoutException:
            return _error(504, "The upstream did not answer in time.", "upstream_timeout")
        except httpx2.TransportError:
            return _error(502, "The upstream could not be reached.", "upstream_unavailable")
        out = {k: v for k, v in response.headers.items() if k in FORWARDED_RESPONSE_HEADERS}
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(_relay(response), response.status_code, headers=out)
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx2.TimeoutException:
            return _error(504, "The upstream did not finish in time.", "upstream_timeout")
        except httpx2.TransportError:
            return _error(502, "The upstream broke off its answer.", "upstream_unavailable")
        finally:
            await response.aclose()
        return Response(body, response.status_code, headers=out)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/{path:path}", proxy, methods=["GET", "POST", "DELETE"]),
        ],
        lifespan=lifespan,
    )
    return LlmTallyMiddleware(
        app,
        store,
        api_key_secret=key_secret or secrets.token_bytes(32),
        label_for_key=labels.get,
        trusted_proxies=trusted_proxies,
        anonymize_ip=anonymize_ip,
    )

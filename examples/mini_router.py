"""A runnable OpenAI-compatible mini router with llmtally analytics on both sides.

    UPSTREAM_API_KEY=sk-... LLMTALLY_KEY_SECRET=$(openssl rand -hex 32) \\
    python examples/mini_router.py --upstream https://api.openai.com/v1 --db analytics.db \\
        --port 8080 --keys alice=sk-router-alice,bob=sk-router-bob

Clients use it like the OpenAI API (``base_url=http://127.0.0.1:8080/v1``, ``api_key`` =
their router key). Every ``/v1/...`` request is forwarded to ``--upstream`` with the
router's own upstream key; bodies and streams are relayed as they arrive.

- ``LlmTallyMiddleware`` on the router app records each client request: endpoint, model,
  stream flag, sizes, status, latency, TTFB, client IP, the client's key as a keyed hash
  (``provider_id``) with its label (``agent_id``).
- ``LlmTallyTransport`` on the upstream ``httpx2`` client records each upstream LLM call
  with its usage, cost, TTFT and inter-token latency, attributed to the client's key.
  A request served upstream is recorded once, by the transport; one refused by the router
  itself (bad key) is recorded by the middleware.

``--keys`` maps labels to router keys (any bearer key is accepted without it). The HMAC
secret for key ids comes from ``LLMTALLY_KEY_SECRET`` (a random one per run otherwise, so
ids change across restarts). Prints ``mini_router listening on http://HOST:PORT`` once the
socket is bound (``--port 0`` picks a free port), and the totals on shutdown.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmtally import EventStore
from llmtally.integrations.asgi import LlmTallyMiddleware
from llmtally.integrations.httpx import LlmTallyTransport

FORWARDED_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "accept-encoding", "openai-beta", "user-agent"}
)
FORWARDED_RESPONSE_HEADERS = frozenset(
    {"content-type", "content-encoding", "x-request-id", "retry-after", "openai-processing-ms"}
)


def _error(status: int, message: str, code: str) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JSONResponse({"error": error}, status)


async def _relay(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        # The client may have gone: release the upstream connection even when cancelled.
        with anyio.move_on_after(5, shield=True):
            await response.aclose()


def create_app(
    upstream: str,
    db: str | None,
    *,
    keys: dict[str, str] | None = None,
    upstream_key: str | None = None,
    key_secret: bytes | None = None,
    trusted_proxies: Sequence[str] = (),
    anonymize_ip: bool = False,
) -> LlmTallyMiddleware:
    """The router as an ASGI app: ``keys`` maps router keys to labels (``None``: any key)."""
    store = EventStore(db)
    labels = dict(keys or {})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            transport = LlmTallyTransport(store)
            timeout = httpx2.Timeout(600.0, connect=10.0)
            async with httpx2.AsyncClient(
                base_url=upstream, transport=transport, timeout=timeout
            ) as client:
                app.state.client = client
                await store.record_router_started()
                try:
                    yield
                finally:
                    await store.record_router_stopped()
                    stats = store.stats()
                    print(
                        f"mini_router: {stats.total_requests} requests "
                        f"({stats.failed_requests} failed), {stats.total_input_tokens} input "
                        f"and {stats.total_output_tokens} output tokens, "
                        f"${stats.total_cost_micros / 1e6:.6f}",
                        file=sys.stderr,
                        flush=True,
                    )

    async def proxy(request: Request) -> Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if labels and key not in labels:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        client: httpx2.AsyncClient = request.app.state.client
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST_HEADERS}
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


def _keys(text: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {key.strip(): label.strip() for label, _, key in pairs}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--db", default="analytics.db", help="SQLite file (':memory:' = none)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--keys", default="", help="label=key,... (default: accept any key)")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="IP/CIDR")
    parser.add_argument("--anonymize-ip", action="store_true")
    args = parser.parse_args(argv)

    secret = os.environ.get("LLMTALLY_KEY_SECRET")
    app = create_app(
        args.upstream,
        None if args.db == ":memory:" else args.db,
        keys=_keys(args.keys),
        upstream_key=os.environ.get("UPSTREAM_API_KEY"),
        key_secret=secret.encode() if secret else None,
        trusted_proxies=args.trusted_proxy,
        anonymize_ip=args.anonymize_ip,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # requests wait in the backlog until uvicorn has started the app
    host, port = sock.getsockname()[:2]
    print(f"mini_router listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

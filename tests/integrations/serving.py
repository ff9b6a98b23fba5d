"""Serve an ASGI app with uvicorn inside the test's event loop, on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import uvicorn

from llmtally.integrations.asgi import RequestRecord

__all__ = ["Records", "serve"]


@asynccontextmanager
async def serve(app: Any, *, lifespan: Literal["auto", "on", "off"] = "off") -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields its base URL.

    The socket listens before uvicorn starts, so requests wait in the backlog until it
    accepts them (no readiness poll). uvicorn's own ``X-Forwarded-For`` handling is off, so
    the middleware under test sees the real peer.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        http="h11",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    sock.listen(64)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()  # uvicorn closes it on a clean exit, not when cancelled


class Records:
    """Collects ``RequestRecord``s (pass ``records.append`` as ``on_request``); ``wait(n)``
    returns once ``n`` arrived (the middleware finishes after the response is sent)."""

    def __init__(self) -> None:
        self.items: list[RequestRecord] = []
        self._changed = anyio.Event()

    def append(self, record: RequestRecord) -> None:
        self.items.append(record)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, n: int = 1) -> list[RequestRecord]:
        with anyio.fail_after(10):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items

"""A scripted collector for sync fault tests: real HTTP on loopback, answers chosen per request.

``FakeCollector`` is a small Starlette app served by uvicorn inside the test's event loop,
on a socket bound to a free 127.0.0.1 port before the server starts — so a collector
that is "down" (bound, not listening) refuses connections, and ``start()`` brings it up
on the same URL. Each request takes the next ``Reply`` of the script (``ok`` once the
script is used up); ``token`` and ``max_batch`` add the real collector's 401 and 413.

An ``ok`` reply stores each event id once, like the real collector, and answers
``{"accepted", "duplicates", "rejected"}``; ``arrivals`` counts every time an id was
received by a storing reply, so a retried batch shows up there and not in ``stored``.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import msgspec
import uvicorn
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmtally.pipeline.sync import INGEST_PATH

__all__ = ["FakeCollector", "Received", "RecordedSleep", "Reply"]

Kind = Literal["answer", "ok", "hang", "store_then_drop"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    kind: Kind = "ok"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    rejected: tuple[str, ...] = ()  # for ``ok``: event ids to list as invalid

    @classmethod
    def ok(cls, *, rejected: Iterable[str] = ()) -> Reply:
        """Store the events (each id once) and answer 200 with the counts."""
        return cls("ok", rejected=tuple(rejected))

    @classmethod
    def status_code(
        cls, status: int, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Reply:
        """Answer ``status`` without storing anything."""
        return cls("answer", status, dict(headers or {}), body)

    @classmethod
    def hang(cls) -> Reply:
        """Never answer (until the collector stops); nothing is stored."""
        return cls("hang")

    @classmethod
    def store_then_drop(cls) -> Reply:
        """Store the events, then close the connection without an answer."""
        return cls("store_then_drop")


@dataclass(frozen=True)
class Received:
    """A request as the collector saw it, and what it answered (``0``: no answer)."""

    event_ids: tuple[str, ...]
    kind: Kind
    status: int


class FakeCollector:
    """``async with FakeCollector(...) as fake:`` — serves on ``fake.url`` until exit.

    ``listening=False`` keeps it down (connections refused) until ``await fake.start()``.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        token: str | None = None,
        max_batch: int | None = None,
        listening: bool = True,
    ) -> None:
        self.script: list[Reply] = list(replies)
        self.token = token
        self.max_batch = max_batch
        self.requests: list[Received] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.arrivals: Counter[str] = Counter()
        self._listening = listening
        self._release = anyio.Event()
        self._changed = anyio.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._tg: TaskGroup | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tg = await anyio.create_task_group().__aenter__()
        if self._listening:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._release.set()  # end any hanging request
        if self._server is not None:
            self._server.should_exit = True
        else:
            self._sock.close()
        await self._tg.__aexit__(exc_type, exc, tb)

    async def start(self) -> None:
        """Start serving on ``url`` (connections made before this were refused)."""
        assert self._tg is not None and self._server is None
        config = uvicorn.Config(
            self._app(),
            lifespan="off",
            http="h11",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        # The socket is listening once create_server has run; until the server accepts,
        # connections wait in the backlog, so no readiness poll is needed.
        self._sock.listen(64)
        self._tg.start_soon(self._server.serve, [self._sock])

    # --- observing -----------------------------------------------------------------------

    async def wait_for(self, requests: int = 0, stored: int = 0) -> None:
        """Wait until at least ``requests`` requests were received and ``stored`` events
        stored. Raises ``TimeoutError`` after 10 seconds."""
        with anyio.fail_after(10):
            while len(self.requests) < requests or len(self.stored) < stored:
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # --- the app -------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[Route(INGEST_PATH, self._ingest, methods=["POST"])])

    async def _ingest(self, request: Request) -> Response:
        body = await request.body()
        events: list[dict[str, Any]] = msgspec.json.decode(body)["events"]
        ids = tuple(e["event_id"] for e in events)
        reply = self._choose(request, len(events))
        status = 0 if reply.kind in ("hang", "store_then_drop") else reply.status
        self.requests.append(Received(ids, reply.kind, status))
        self._notify()
        try:
            if reply.kind == "hang":
                await self._release.wait()
                return Response(status_code=503)
            if reply.kind == "answer":
                return Response(reply.body, reply.status, headers=dict(reply.headers))
            accepted = duplicates = 0
            for e in events:
                self.arrivals[e["event_id"]] += 1
                if e["event_id"] in reply.rejected:
                    continue
                if e["event_id"] in self.stored:
                    duplicates += 1
                else:
                    self.stored[e["event_id"]] = e
                    accepted += 1
            if reply.kind == "store_then_drop":
                await _drop_connection(request)
                return Response(status_code=500)  # never sent: the connection is gone
            rejected = [{"event_id": i, "error": "invalid"} for i in reply.rejected if i in ids]
            answer = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
            return Response(msgspec.json.encode(answer), media_type="application/json")
        finally:
            self._notify()

    def _choose(self, request: Request, size: int) -> Reply:
        if self.token is not None and request.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return Reply.status_code(401, {"WWW-Authenticate": "Bearer"}, b'{"error":"token"}')
        if self.max_batch is not None and size > self.max_batch:
            return Reply.status_code(413, body=b'{"error":"batch too large"}')
        return self.script.pop(0) if self.script else Reply.ok()


async def _drop_connection(request: Request) -> None:
    """Abort the TCP connection under ``request`` (uvicorn's h11 cycle holds the transport)
    and wait until uvicorn has noticed, so it sends nothing more on it."""
    cycle = request.receive.__self__  # type: ignore[attr-defined]
    cycle.transport.abort()
    for _ in range(1_000):  # connection_lost runs on a following loop iteration
        if cycle.disconnected:
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("uvicorn did not notice the aborted connection")


class RecordedSleep:
    """An injectable ``sleep`` that records each delay and returns at once, or after at
    most ``cap`` seconds of real time; with ``gate``, it waits until ``open_gate()``."""

    def __init__(self, *, cap: float = 0.0, gate: bool = False) -> None:
        self.calls: list[float] = []
        self.cap = cap
        self._gate: anyio.Event | None = anyio.Event() if gate else None
        self._changed = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self._changed.set()
        self._changed = anyio.Event()
        if self._gate is not None:
            await self._gate.wait()
        elif self.cap > 0:
            await anyio.sleep(min(seconds, self.cap))
        else:
            await anyio.lowlevel.checkpoint()

    def open_gate(self) -> None:
        assert self._gate is not None
        self._gate.set()

    async def wait_calls(self, n: int) -> None:
        """Wait until ``sleep`` has been called ``n`` times (``TimeoutError`` after 10 s)."""
        with anyio.fail_after(10):
            while len(self.calls) < n:
                await self._changed.wait()

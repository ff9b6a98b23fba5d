"""A fake OpenAI + Anthropic API: real HTTP on loopback, the providers' JSON and SSE shapes.

``FakeUpstream`` is a Starlette app served by uvicorn inside the caller's event loop on a
socket bound to a free 127.0.0.1 port before the server starts (connections wait in the
backlog until uvicorn accepts: no readiness poll). ``listening=False`` keeps the port
bound but not listening, so connections are refused (connection-error tests). The demo
runs it as a process: ``python -m llmtally.demo.child upstream``.

Answers are deterministic (fixed ids and timestamps), so two identical requests get
byte-identical bodies. The ``x-fake`` request header picks a scenario:

- ``ok`` (default): JSON, or SSE when the body says ``"stream": true``;
- ``429``, ``500``, ``529``: the provider's error body with that status (OpenAI has no 529);
- ``no-usage``: a chat stream without the final usage chunk, or a JSON body without usage;
- ``stream-error``: a stream that reports an error event after one delta;
- ``drop``: the status line and headers, then the connection breaks mid-body;
- ``hang``: no answer until the fake stops (for timeouts);
- ``slow``: a stream that sends its first deltas and then waits until the fake stops
  (for a client that closes early);
- ``gzip``: the body (JSON or SSE) ``Content-Encoding: gzip``;
- ``big``: a JSON body over 256 KiB (embeddings).

Two more headers shape an answer (chat and Anthropic messages): ``x-fake-usage:
INPUT,OUTPUT,CACHED`` (token counts; input includes the cached part) and ``x-fake-latency:
TTFT_MS,TOTAL_MS`` (a JSON body comes after ``TOTAL_MS``; a stream sends what comes up to
its first content delta after ``TTFT_MS``, and the rest at ``TOTAL_MS``: two writes).
With ``echo_model=True`` answers name the request's ``model`` instead of a fixed one.
"""

from __future__ import annotations

import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec
import uvicorn
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import fake_payloads as fp
from .fake_payloads import (
    ANTHROPIC_MODEL,
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    EMBEDDING_MODEL,
    INSTRUCT_MODEL,
    OPENAI_MODEL,
    RESPONSES_USAGE,
    TEXT,
    TOKENS,
)

__all__ = [
    "ANTHROPIC_MODEL",
    "ANTHROPIC_USAGE",
    "CHAT_USAGE",
    "OPENAI_MODEL",
    "RESPONSES_USAGE",
    "TEXT",
    "TOKENS",
    "FakeUpstream",
    "Seen",
]

_MAX_LATENCY_MS = 60_000.0


@dataclass(frozen=True)
class Seen:
    """A request as the fake received it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Ask:
    """What one request asks of the fake."""

    scenario: str
    body: dict[str, Any]
    usage: tuple[int, int, int] | None
    ttft_s: float
    total_s: float


def _numbers(text: str | None, n: int) -> list[float] | None:
    if not text:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        return None
    if len(values) != n or not all(0 <= v <= _MAX_LATENCY_MS for v in values):
        return None
    return values


class _Dropped(Exception):
    """Breaks a response mid-body (scenario ``drop``)."""


class FakeUpstream:
    """``async with FakeUpstream() as fake:`` — serves on ``fake.url`` until exit.

    ``record=False`` keeps no ``requests`` list (long runs: bounded memory).
    """

    def __init__(
        self,
        *,
        listening: bool = True,
        echo_model: bool = False,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.requests: list[Seen] = []
        self.served = 0
        self.disconnects = 0
        self._record = record
        self._echo_model = echo_model
        self._listening = listening
        self._log_level = log_level
        self._release = anyio.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._server: uvicorn.Server | None = None
        self._tg: TaskGroup | None = None
        self.stopped = anyio.Event()
        """Set once the server has stopped serving (on ``__aexit__``, or a signal)."""

    async def __aenter__(self) -> Self:
        self._tg = await anyio.create_task_group().__aenter__()
        if self._listening:
            config = uvicorn.Config(
                self._app(),
                lifespan="off",
                http="h11",
                log_config=None,
                log_level=self._log_level,
                access_log=False,
                timeout_graceful_shutdown=1,
            )
            self._server = uvicorn.Server(config)
            self._sock.listen(1024)
            self._tg.start_soon(self._serve, self._server)
        return self

    async def _serve(self, server: uvicorn.Server) -> None:
        try:
            await server.serve([self._sock])
        finally:
            self.stopped.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._release.set()
        if self._server is not None:
            self._server.should_exit = True
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._sock.close()  # uvicorn closes it on a clean exit, not when cancelled

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # --- plumbing ---------------------------------------------------------------------

    async def _seen(self, request: Request) -> _Ask:
        body = await request.body()
        self.served += 1
        if self._record:
            self.requests.append(Seen(request.url.path, dict(request.headers), body))
        headers = request.headers
        scenario = headers.get("x-fake", "ok")
        if scenario == "hang":
            await self._release.wait()
        usage = _numbers(headers.get("x-fake-usage"), 3)
        latency = _numbers(headers.get("x-fake-latency"), 2) or [0.0, 0.0]
        ttft, total = latency[0] / 1000, max(latency) / 1000
        return _Ask(
            scenario,
            msgspec.json.decode(body) if body else {},
            None if usage is None else (int(usage[0]), int(usage[1]), int(usage[2])),
            ttft,
            total,
        )

    def _model(self, ask: _Ask, default: str) -> str:
        model = ask.body.get("model") if self._echo_model else None
        return model if isinstance(model, str) and model else default

    def _stream(self, ask: _Ask, events: Iterable[tuple[bool, bytes]]) -> Response:
        headers = {"content-encoding": "gzip"} if ask.scenario == "gzip" else {}
        return StreamingResponse(
            self._relay(ask, events), media_type="text/event-stream", headers=headers
        )

    @staticmethod
    def _paced(ask: _Ask, events: Iterable[tuple[bool, bytes]]) -> list[tuple[float, bytes]]:
        """``(pause before, bytes)`` writes: without a latency, one per event; with one,
        the events up to the first content delta after ``ttft``, the rest at ``total``."""
        items = list(events)
        if ask.total_s <= 0:
            return [(0.0, data) for _, data in items]
        first = next((i for i, (is_delta, _) in enumerate(items) if is_delta), len(items) - 1)
        head = b"".join(data for _, data in items[: first + 1])
        tail = b"".join(data for _, data in items[first + 1 :])
        writes = [(ask.ttft_s, head)]
        if tail:
            writes.append((ask.total_s - ask.ttft_s, tail))
        return writes

    async def _relay(self, ask: _Ask, events: Iterable[tuple[bool, bytes]]) -> AsyncIterator[bytes]:
        gzipped = ask.scenario == "gzip"
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16) if gzipped else None
        try:
            for i, (pause, data) in enumerate(self._paced(ask, events)):
                if ask.scenario == "slow" and i == 3:
                    await self._release.wait()
                if pause > 0:
                    await anyio.sleep(pause)
                if compressor is not None:
                    data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
                yield data
                if ask.scenario == "drop":
                    raise _Dropped
            if compressor is not None:
                yield compressor.flush()
        except BaseException:
            self.disconnects += 1
            raise

    async def _body(self, ask: _Ask, obj: Any, status: int = 200) -> Response:
        if ask.total_s > 0:
            await anyio.sleep(ask.total_s)
        if ask.scenario == "gzip":
            return Response(
                gzip.compress(msgspec.json.encode(obj), mtime=0),
                status,
                media_type="application/json",
                headers={"content-encoding": "gzip"},
            )
        data = msgspec.json.encode(obj)
        if ask.scenario == "drop":  # half the body, then the connection breaks
            return StreamingResponse(
                self._relay(ask, [(False, data[: len(data) // 2])]),
                status,
                media_type="application/json",
            )
        return Response(data, status, media_type="application/json")

    async def _error(self, ask: _Ask, obj: dict[str, Any] | None) -> Response | None:
        if obj is None:
            return None
        plain = _Ask("ok", ask.body, ask.usage, ask.ttft_s, ask.total_s)
        return await self._body(plain, obj, int(ask.scenario))

    # --- OpenAI -----------------------------------------------------------------------

    def _openai_failure(self, ask: _Ask) -> dict[str, Any] | None:
        return fp.openai_error(int(ask.scenario)) if ask.scenario in ("429", "500") else None

    async def _chat(self, request: Request) -> Response:
        ask = await self._seen(request)
        if (error := await self._error(ask, self._openai_failure(ask))) is not None:
            return error
        model = self._model(ask, OPENAI_MODEL)
        usage = CHAT_USAGE if ask.usage is None else fp.chat_usage(*ask.usage)
        if ask.body.get("stream"):
            include_usage = bool((ask.body.get("stream_options") or {}).get("include_usage"))
            if ask.scenario == "no-usage":
                include_usage = False
            return self._stream(ask, fp.chat_chunks(model, usage, include_usage, ask.scenario))
        return await self._body(
            ask, fp.chat_answer(model, None if ask.scenario == "no-usage" else usage)
        )

    async def _completions(self, request: Request) -> Response:
        ask = await self._seen(request)
        if (error := await self._error(ask, self._openai_failure(ask))) is not None:
            return error
        answer = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": fp.CREATED,
            "model": INSTRUCT_MODEL,
            "choices": [{"text": TEXT, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }
        return await self._body(ask, answer)

    async def _embeddings(self, request: Request) -> Response:
        ask = await self._seen(request)
        if (error := await self._error(ask, self._openai_failure(ask))) is not None:
            return error
        inputs = ask.body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        big = ask.scenario == "big"
        vector = [0.012345678] * (2_000 if big else 3)
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i in range(20 if big else n)
            ],
            "model": EMBEDDING_MODEL,
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
        return await self._body(ask, answer)

    async def _responses(self, request: Request) -> Response:
        ask = await self._seen(request)
        if (error := await self._error(ask, self._openai_failure(ask))) is not None:
            return error
        model = self._model(ask, OPENAI_MODEL)
        if not ask.body.get("stream"):
            return await self._body(ask, fp.response_object(model, "completed", RESPONSES_USAGE))
        return self._stream(ask, fp.response_events(model, ask.scenario))

    async def _models(self, request: Request) -> Response:
        if self._record:
            self.requests.append(Seen(request.url.path, dict(request.headers), b""))
        return Response(
            msgspec.json.encode({"object": "list", "data": [{"id": OPENAI_MODEL}]}),
            media_type="application/json",
        )

    # --- Anthropic --------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        ask = await self._seen(request)
        failure = fp.anthropic_error(int(ask.scenario)) if ask.scenario.isdigit() else None
        if (error := await self._error(ask, failure)) is not None:
            return error
        model = self._model(ask, ANTHROPIC_MODEL)
        usage = ANTHROPIC_USAGE if ask.usage is None else fp.anthropic_usage(*ask.usage)
        if ask.body.get("stream"):
            return self._stream(ask, fp.message_events(model, usage, ask.scenario))
        return await self._body(
            ask, fp.message_answer(model, None if ask.scenario == "no-usage" else usage)
        )

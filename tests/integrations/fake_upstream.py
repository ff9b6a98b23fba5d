"""A fake OpenAI + Anthropic API: real HTTP on loopback, the providers' JSON and SSE shapes.

``FakeUpstream`` is a Starlette app served by uvicorn inside the test's event loop on a
socket bound to a free 127.0.0.1 port before the server starts (connections wait in the
backlog until uvicorn accepts: no readiness poll). ``listening=False`` keeps the port
bound but not listening, so connections are refused (connection-error tests).

Answers are deterministic (fixed ids and timestamps), so two identical requests get
byte-identical bodies. The ``x-fake`` request header picks a scenario:

- ``ok`` (default): JSON, or SSE when the body says ``"stream": true``;
- ``429``, ``500``, ``529``: the provider's error body with that status;
- ``no-usage``: a chat stream without the final usage chunk, or a JSON body without usage;
- ``stream-error``: a stream that reports an error event after one delta;
- ``hang``: no answer until the fake stops (for timeouts);
- ``slow``: a stream that sends its first deltas and then waits until the fake stops
  (for a client that closes early);
- ``gzip``: the body (JSON or SSE) ``Content-Encoding: gzip``;
- ``big``: a JSON body over 256 KiB (embeddings).

Shapes follow the public API references: OpenAI ``chat.completion`` /
``chat.completion.chunk`` (``stream_options.include_usage`` adds a final chunk with empty
``choices`` and the usage), Responses (``response.created`` … ``response.completed``),
legacy completions, embeddings; Anthropic ``message`` and ``message_start`` /
``content_block_delta`` / ``message_delta`` / ``message_stop`` with ``event:`` lines.
"""

from __future__ import annotations

import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Iterator
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

__all__ = [
    "ANTHROPIC_MODEL",
    "ANTHROPIC_USAGE",
    "CHAT_USAGE",
    "OPENAI_MODEL",
    "RESPONSES_USAGE",
    "TOKENS",
    "FakeUpstream",
    "Seen",
]

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
EMBEDDING_MODEL = "text-embedding-3-small"
INSTRUCT_MODEL = "gpt-3.5-turbo-instruct"
TOKENS = ["Hello", " there", ",", " friend"]
TEXT = "".join(TOKENS)
CREATED = 1_700_000_000

CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 11,
    "completion_tokens": 4,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 20,
    "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 2},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 24,
}
ANTHROPIC_USAGE: dict[str, Any] = {
    "input_tokens": 7,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 200,
    "output_tokens": 4,
}

_OPENAI_ERRORS: dict[int, dict[str, Any]] = {
    429: {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini in organization org-fake on "
            "requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    500: {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
}
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _json(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    body = data if isinstance(data, bytes) else _json(data)
    return head + b"data: " + body + b"\n\n"


@dataclass(frozen=True)
class Seen:
    """A request as the fake received it."""

    path: str
    headers: dict[str, str]
    body: bytes


class FakeUpstream:
    """``async with FakeUpstream() as fake:`` — serves on ``fake.url`` until exit."""

    def __init__(self, *, listening: bool = True) -> None:
        self.requests: list[Seen] = []
        self.disconnects = 0
        self._listening = listening
        self._release = anyio.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._tg = await anyio.create_task_group().__aenter__()
        if self._listening:
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
            self._sock.listen(64)
            self._tg.start_soon(self._server.serve, [self._sock])
        return self

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

    async def _seen(self, request: Request) -> tuple[str, dict[str, Any]]:
        body = await request.body()
        self.requests.append(Seen(request.url.path, dict(request.headers), body))
        scenario = request.headers.get("x-fake", "ok")
        if scenario == "hang":
            await self._release.wait()
        return scenario, (msgspec.json.decode(body) if body else {})

    def _stream(self, scenario: str, events: Iterator[bytes]) -> Response:
        headers = {"content-encoding": "gzip"} if scenario == "gzip" else {}
        return StreamingResponse(
            self._relay(scenario, events), media_type="text/event-stream", headers=headers
        )

    async def _relay(self, scenario: str, events: Iterator[bytes]) -> AsyncIterator[bytes]:
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16) if scenario == "gzip" else None
        try:
            for i, event in enumerate(events):
                if scenario == "slow" and i == 3:
                    await self._release.wait()
                if compressor is not None:
                    event = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
                yield event
            if compressor is not None:
                yield compressor.flush()
        except BaseException:
            self.disconnects += 1
            raise

    def _body(self, scenario: str, obj: Any, status: int = 200) -> Response:
        if scenario == "gzip":
            return Response(
                gzip.compress(_json(obj), mtime=0),
                status,
                media_type="application/json",
                headers={"content-encoding": "gzip"},
            )
        return Response(_json(obj), status, media_type="application/json")

    def _openai_error(self, scenario: str) -> Response | None:
        if scenario in ("429", "500"):
            status = int(scenario)
            return self._body("ok", _OPENAI_ERRORS[status], status)
        return None

    # --- OpenAI -----------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        scenario, body = await self._seen(request)
        if (error := self._openai_error(scenario)) is not None:
            return error
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if scenario == "no-usage":
                include_usage = False
            return self._stream(scenario, self._chat_chunks(scenario, include_usage))
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": CHAT_USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if scenario == "no-usage":
            del answer["usage"]
        return self._body(scenario, answer)

    def _chat_chunks(self, scenario: str, include_usage: bool) -> Iterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": OPENAI_MODEL,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                c["usage"] = None
            return _sse(c)

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for i, token in enumerate(TOKENS):
            if scenario == "stream-error" and i == 1:
                yield _sse(
                    {"error": {"message": "overloaded", "type": "server_error", "code": None}}
                )
                return
            yield chunk({"content": token})
        yield chunk({}, "stop")
        if include_usage:
            yield _sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": OPENAI_MODEL,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": CHAT_USAGE,
                }
            )
        yield b"data: [DONE]\n\n"

    async def _completions(self, request: Request) -> Response:
        scenario, _ = await self._seen(request)
        if (error := self._openai_error(scenario)) is not None:
            return error
        return self._body(
            scenario,
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": CREATED,
                "model": INSTRUCT_MODEL,
                "choices": [{"text": TEXT, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            },
        )

    async def _embeddings(self, request: Request) -> Response:
        scenario, body = await self._seen(request)
        if (error := self._openai_error(scenario)) is not None:
            return error
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        width = 2_000 if scenario == "big" else 3
        vector = [0.012345678] * width
        return self._body(
            scenario,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i in range(n if scenario != "big" else 20)
                ],
                "model": EMBEDDING_MODEL,
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            },
        )

    def _response_object(self, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
        done = status == "completed"
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "model": OPENAI_MODEL,
            "output": [
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
                }
            ]
            if done
            else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }

    async def _responses(self, request: Request) -> Response:
        scenario, body = await self._seen(request)
        if (error := self._openai_error(scenario)) is not None:
            return error
        if not body.get("stream"):
            return self._body(scenario, self._response_object("completed", RESPONSES_USAGE))
        return self._stream(scenario, self._response_events(scenario))

    def _response_events(self, scenario: str) -> Iterator[bytes]:
        seq = iter(range(1_000))

        def ev(kind: str, **fields: Any) -> bytes:
            return _sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

        yield ev("response.created", response=self._response_object("in_progress", None))
        yield ev("response.in_progress", response=self._response_object("in_progress", None))
        item = {
            "id": "msg_fake",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        yield ev("response.output_item.added", output_index=0, item=item)
        part = {"type": "output_text", "text": "", "annotations": []}
        yield ev(
            "response.content_part.added",
            item_id="msg_fake",
            output_index=0,
            content_index=0,
            part=part,
        )
        for i, token in enumerate(TOKENS):
            if scenario == "stream-error" and i == 1:
                yield ev("error", code="server_error", message="The model crashed", param=None)
                return
            yield ev(
                "response.output_text.delta",
                item_id="msg_fake",
                output_index=0,
                content_index=0,
                delta=token,
                logprobs=[],
            )
        yield ev(
            "response.output_text.done",
            item_id="msg_fake",
            output_index=0,
            content_index=0,
            text=TEXT,
            logprobs=[],
        )
        done = self._response_object("completed", RESPONSES_USAGE)
        yield ev(
            "response.content_part.done",
            item_id="msg_fake",
            output_index=0,
            content_index=0,
            part={**part, "text": TEXT},
        )
        yield ev("response.output_item.done", output_index=0, item=done["output"][0])
        yield ev("response.completed", response=done)

    async def _models(self, request: Request) -> Response:
        self.requests.append(Seen(request.url.path, dict(request.headers), b""))
        return self._body("ok", {"object": "list", "data": [{"id": OPENAI_MODEL}]})

    # --- Anthropic --------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        scenario, body = await self._seen(request)
        if scenario in ("429", "500", "529"):
            status = int(scenario)
            kind, message = _ANTHROPIC_ERRORS[status]
            return self._body(
                "ok",
                {
                    "type": "error",
                    "error": {"type": kind, "message": message},
                    "request_id": "req_fake",
                },
                status,
            )
        if body.get("stream"):
            return self._stream(scenario, self._message_events(scenario))
        usage = dict(ANTHROPIC_USAGE)
        answer: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if scenario == "no-usage":
            del answer["usage"]
        return self._body(scenario, answer)

    def _message_events(self, scenario: str) -> Iterator[bytes]:
        start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
        yield _sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": ANTHROPIC_MODEL,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            "message_start",
        )
        yield _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        yield _sse({"type": "ping"}, "ping")
        for i, text in enumerate(("Hello there", ", friend")):
            if scenario == "stream-error" and i == 1:
                yield _sse(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                    "error",
                )
                return
            yield _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
                "content_block_delta",
            )
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        if scenario != "no-usage":
            yield _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
                },
                "message_delta",
            )
        yield _sse({"type": "message_stop"}, "message_stop")

"""The ASGI middleware inside a real Starlette app served by uvicorn on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally.demo.fake_upstream import OPENAI_MODEL, FakeUpstream
from llmtally.integrations.asgi import LlmTallyMiddleware, RequestRecord, api_key_id
from llmtally.integrations.httpx import LlmTallyTransport

from .serving import Records, serve

SECRET = "test-secret-0123456789abcdef"
KEYS = {"sk-alice-0001": "alice", "sk-bob-0002": "bob"}
USAGE = {"prompt_tokens": 21, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5}}
BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "SECRET-PROMPT-TEXT"},
    ],
}


def _sse(obj: Any) -> bytes:
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


async def chat(request: Request) -> Response:
    """A stand-in LLM endpoint: answers from the request, in JSON or SSE."""
    body = await request.json()
    mode = request.headers.get("x-app", "ok")
    if mode == "raise":
        raise RuntimeError("handler bug")
    if mode == "429":
        return JSONResponse(
            {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            429,
        )
    routing = {"x-llmtally-backend": "openai", "x-llmtally-upstream-mode": "chat"}
    if not body.get("stream"):
        answer = {"model": OPENAI_MODEL, "choices": [{"message": {"content": "COMPLETION-TEXT"}}]}
        return JSONResponse({**answer, "usage": USAGE}, headers=routing)

    async def events() -> AsyncIterator[bytes]:
        yield _sse({"model": OPENAI_MODEL, "choices": [{"delta": {"role": "assistant"}}]})
        for word in ("COMPLETION", "-", "TEXT"):
            yield _sse({"model": OPENAI_MODEL, "choices": [{"delta": {"content": word}}]})
            if mode == "hang":
                await anyio.Event().wait()  # until the client goes away
        yield _sse({"model": OPENAI_MODEL, "choices": [], "usage": USAGE})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=routing)


async def digest(request: Request) -> Response:
    """Echoes what arrived: the body's length and SHA-256."""
    body = await request.body()
    return JSONResponse({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def app_routes(extra: list[Route] | None = None) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/digest/v1/embeddings", digest, methods=["POST"]),
            Route("/health", health),
            *(extra or []),
        ]
    )


class Env:
    def __init__(self, store: EventStore, url: str, mw: LlmTallyMiddleware, records: Records):
        self.store = store
        self.url = url
        self.mw = mw
        self.records = records

    async def events(self, n: int) -> list[AnalyticsEvent]:
        await self.store.flush()
        events = await self.store.snapshot_events()
        assert len(events) == n, events
        return events


@asynccontextmanager
async def served(
    app_factory: Callable[[EventStore], Starlette] = lambda _: app_routes(), **options: Any
) -> AsyncIterator[Env]:
    records = Records()
    options.setdefault("api_key_secret", SECRET)
    options.setdefault("label_for_key", KEYS.get)
    async with EventStore(None) as store:
        mw = LlmTallyMiddleware(app_factory(store), store, on_request=records.append, **options)
        async with serve(mw) as url:
            yield Env(store, url, mw, records)


def alice(**headers: str) -> dict[str, str]:
    return {"authorization": "Bearer sk-alice-0001", "user-agent": "test-agent/1.0", **headers}


async def test_json_request() -> None:
    async with served(trusted_proxies=["127.0.0.1"]) as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            content = msgspec.json.encode(BODY)
            headers = alice(**{"x-forwarded-for": "198.51.100.9, 203.0.113.7"})
            response = await client.post("/v1/chat/completions", content=content, headers=headers)
        assert response.status_code == 200
        assert "x-llmtally-backend" not in response.headers  # internal: stripped
        (record,) = await env.records.wait()
        (event,) = await env.events(1)

        key_id = api_key_id("sk-alice-0001", SECRET.encode())
        assert record.event_id == event.event_id and record.recorded
        req = record.request
        assert (req.endpoint, req.method, req.model, req.stream) == (
            "/v1/chat/completions",
            "POST",
            "gpt-4o-mini",
            False,
        )
        assert (req.size_bytes, req.message_count) == (len(content), 2)
        assert (req.input_tokens, req.user_agent) == (21, "test-agent/1.0")
        assert req.client_ip == "203.0.113.7"  # the hop our trusted proxy saw
        resp = record.response
        assert resp is not None
        assert (resp.status_code, resp.success, resp.output_tokens) == (200, True, 3)
        assert resp.size_bytes == len(response.content)
        perf = record.performance
        assert perf.duration_ms > 0 and perf.ttfb_ms is not None
        assert perf.ttfb_ms <= perf.duration_ms
        assert perf.ttft_ms is None and perf.upstream_duration_ms is None
        assert record.auth.authenticated
        assert (record.auth.api_key_id, record.auth.api_key_label) == (key_id, "alice")
        assert record.auth.auth_method == "bearer"
        assert (record.routing.backend, record.routing.upstream_mode) == ("openai", "chat")
        assert record.upstream_calls == 0

        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (event.agent_id, p.provider_id) == ("alice", key_id)
        assert (p.model, p.provider, p.endpoint) == (OPENAI_MODEL, "openai", "/v1/chat/completions")
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (21, 3, 5)
        assert p.cost_nanos == env.store.pricing.cost(OPENAI_MODEL, "openai", 21, 3, 5, 0)[0]
        assert p.duration_ms == pytest.approx(perf.duration_ms)

        stored = msgspec.json.encode(event) + msgspec.json.encode(record)
        for secret in (b"sk-alice-0001", b"SECRET-PROMPT-TEXT", b"COMPLETION-TEXT"):
            assert secret not in stored


async def test_stream_request() -> None:
    async with served() as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            body = {**BODY, "stream": True}
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=alice()
            ) as r:
                text = b"".join([chunk async for chunk in r.aiter_bytes()])
        assert b"[DONE]" in text
        (record,) = await env.records.wait()
        (event,) = await env.events(1)
        assert record.request.stream is True
        assert record.response is not None and record.response.size_bytes == len(text)
        assert record.performance.ttft_ms is not None and record.performance.ttfb_ms is not None
        assert record.performance.ttfb_ms <= record.performance.ttft_ms
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (p.input_tokens, p.output_tokens, p.usage_missing) == (21, 3, False)
        assert p.ttft_ms == record.performance.ttft_ms
        assert p.itl_mean_ms is not None


async def test_the_app_receives_the_body_unchanged() -> None:
    async with served(max_body_bytes=64 * 1024) as env:
        big = {"model": "text-embedding-3-small", "input": ["x" * 1000] * 600}
        content = msgspec.json.encode(big)
        assert len(content) > 64 * 1024

        async def upload() -> AsyncIterator[bytes]:
            for i in range(0, len(content), 10_000):
                yield content[i : i + 10_000]

        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post("/digest/v1/embeddings", content=upload())
        assert response.json() == {
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        (record,) = await env.records.wait()
        assert record.request.size_bytes == len(content)
        assert record.request.model == "text-embedding-3-small"  # found at the body's head
        assert record.request.message_count is None  # not counted past the bound
        assert record.auth.api_key_id is None and not record.auth.authenticated


async def test_error_status() -> None:
    async with served() as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post(
                "/v1/chat/completions", json=BODY, headers=alice(**{"x-app": "429"})
            )
        assert response.status_code == 429
        (record,) = await env.records.wait()
        (event,) = await env.events(1)
        assert record.response is not None
        assert (record.response.success, record.response.error_code) == (
            False,
            "rate_limit_exceeded",
        )
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.error_message, p.status_code) == (
            "rate_limit_exceeded",
            "slow down",
            429,
        )
        assert p.model == "gpt-4o-mini" and event.agent_id == "alice"


async def test_an_app_that_raises() -> None:
    async with served() as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post(
                "/v1/chat/completions", json=BODY, headers=alice(**{"x-app": "raise"})
            )
        assert response.status_code == 500
        (record,) = await env.records.wait()
        (event,) = await env.events(1)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == ("app_error", 500)
        assert p.error_message == "RuntimeError: handler bug"
        assert record.response is not None and record.response.status_code == 500


async def test_a_client_that_goes_away_mid_stream() -> None:
    async with served() as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            body = {**BODY, "stream": True}
            headers = alice(**{"x-app": "hang"})
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as r:
                async for chunk in r.aiter_raw():
                    if b"COMPLETION" in chunk:
                        break
        (record,) = await env.records.wait()
        (event,) = await env.events(1)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == ("client_closed", None)
        assert p.usage_missing is True and p.output_tokens >= 1
        assert record.response is not None and record.response.success is False


async def test_untracked_requests_pass_through() -> None:
    async with served() as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            assert (await client.get("/health")).text == "ok"
            assert (await client.get("/v1/chat/completions")).status_code == 405
        await env.events(0)
        assert env.records.items == []


def proxy_app(upstream: FakeUpstream) -> Callable[[EventStore], Starlette]:
    """A router whose handler calls the fake upstream through the transport."""

    def factory(store: EventStore) -> Starlette:
        async def route(request: Request) -> Response:
            transport = LlmTallyTransport(store)
            async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
                answer = await client.post("/v1/chat/completions", content=await request.body())
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route("/router/v1/chat/completions", route, methods=["POST"])])

    return factory


@pytest.mark.parametrize(
    ("record", "events"),
    [
        pytest.param("auto", 1, id="auto"),
        pytest.param("always", 2, id="always"),
        pytest.param("never", 1, id="never"),
    ],
)
async def test_requests_served_through_the_transport(record: str, events: int) -> None:
    async with FakeUpstream() as upstream, served(proxy_app(upstream), record=record) as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post("/router/v1/chat/completions", json=BODY, headers=alice())
        assert response.status_code == 200
        (rec,) = await env.records.wait()
        stored = await env.events(events)
        key_id = api_key_id("sk-alice-0001", SECRET.encode())
        upstream_event = stored[0]  # the transport finishes first
        p = upstream_event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.endpoint == "/v1/chat/completions"  # the upstream call
        assert (upstream_event.agent_id, p.provider_id) == ("alice", key_id)
        assert (p.input_tokens, p.output_tokens) == (11, 4)
        assert rec.upstream_calls == 1 and rec.recorded is (record == "always")
        assert rec.event_id != upstream_event.event_id
        if record == "always":  # the middleware's own event, under the record's id
            assert stored[1].event_id == rec.event_id
        assert (rec.routing.backend, rec.routing.upstream_mode) == ("openai", "chat")
        assert rec.request.input_tokens == 11
        assert rec.performance.upstream_duration_ms is not None
        assert rec.performance.upstream_duration_ms <= rec.performance.duration_ms


async def test_api_key_header_and_no_secret() -> None:
    async with served(api_key_secret=None, label_for_key=None) as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            await client.post(
                "/v1/chat/completions", json=BODY, headers={"x-api-key": "sk-bob-0002"}
            )
        (record,) = await env.records.wait()
        assert record.auth == record.auth.__class__(
            authenticated=True, api_key_id=None, api_key_label=None, auth_method="header"
        )
        (event,) = await env.events(1)
        assert event.agent_id is None and event.payload.provider_id is None  # type: ignore[union-attr]


async def test_failing_hooks_never_fail_the_request() -> None:
    def label(key: str) -> str:
        raise KeyError("labels unavailable")

    def routing(scope: object) -> None:
        raise RuntimeError("hook bug")

    async with served(label_for_key=label, routing_hook=routing) as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post("/v1/chat/completions", json=BODY, headers=alice())
        assert response.status_code == 200
        (record,) = await env.records.wait()
        assert record.auth.api_key_label is None
        assert record.routing.backend == "openai"  # the response header still told us
        assert env.mw.counters.errors == 2


async def test_anonymized_client_ip() -> None:
    async with served(anonymize_ip=True) as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            headers = alice(**{"x-forwarded-for": "203.0.113.7"})  # peer not trusted: ignored
            await client.post("/v1/chat/completions", json=BODY, headers=headers)
        (record,) = await env.records.wait()
        assert record.request.client_ip == "127.0.0.0"


def test_record_type_is_exported() -> None:
    assert RequestRecord.__struct_fields__[:3] == ("event_id", "timestamp_ms", "request")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"x-correlation-id": "req-42"}, ("req-42", None), id="x-correlation-id"),
        pytest.param(
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
            id="traceparent",
        ),
        pytest.param(
            {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, (None, None), id="bad"
        ),
    ],
)
async def test_the_inbound_correlation_reaches_the_upstream_calls(
    headers: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    async with FakeUpstream() as upstream, served(proxy_app(upstream), record="always") as env:
        async with httpx2.AsyncClient(base_url=env.url) as client:
            response = await client.post(
                "/router/v1/chat/completions", json=BODY, headers=alice(**headers)
            )
        assert response.status_code == 200
        await env.records.wait()
        stored = await env.events(2)  # the transport's upstream call, then the middleware's
    assert [(e.correlation_id, e.parent_event_id) for e in stored] == [expected, expected]

"""The transport with httpx2 directly: bytes unchanged, pass-through, failures, robustness."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import msgspec
import pytest

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally.demo.fake_upstream import ANTHROPIC_MODEL, OPENAI_MODEL, FakeUpstream
from llmtally.integrations import _watch
from llmtally.integrations.httpx import LlmTallyTransport, attribution

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
MESSAGE_STREAM = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
}


async def recorded(store: EventStore, n: int = 1) -> list[AnalyticsEvent]:
    await store.flush()
    events = await store.snapshot_events()
    assert len(events) == n, events
    return events


async def raw_chunks(
    client: httpx2.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, list[bytes]]:
    async with client.stream("POST", path, json=body, headers=headers) as response:
        return response.status_code, [chunk async for chunk in response.aiter_raw()]


@pytest.mark.parametrize(
    ("path", "body", "scenario"),
    [
        pytest.param("/v1/chat/completions", CHAT_STREAM, "ok", id="openai-sse"),
        pytest.param("/v1/chat/completions", CHAT_STREAM, "gzip", id="openai-sse-gzip"),
        pytest.param("/v1/chat/completions", CHAT, "gzip", id="openai-json-gzip"),
        pytest.param("/v1/messages", MESSAGE_STREAM, "ok", id="anthropic-sse"),
        pytest.param("/v1/chat/completions", CHAT, "429", id="error-json"),
    ],
)
async def test_caller_sees_the_same_bytes(path: str, body: dict[str, Any], scenario: str) -> None:
    headers = {"x-fake": scenario}
    async with EventStore(None) as store, FakeUpstream() as upstream:
        async with httpx2.AsyncClient(base_url=upstream.url) as bare:
            status, plain = await raw_chunks(bare, path, body, headers)
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as watched:
            watched_status, seen = await raw_chunks(watched, path, body, headers)
        assert watched_status == status
        assert b"".join(seen) == b"".join(plain)
        assert len(b"".join(plain)) > 0
        (event,) = await recorded(store)
        assert (event.payload.output_tokens > 0) is (status == 200)  # type: ignore[union-attr]
        assert transport.counters.errors == 0


class _Chunks(httpx2.AsyncByteStream):
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = chunks
        self.closed = False
        self.iterator_closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
        finally:
            self.iterator_closed = True

    async def aclose(self) -> None:
        self.closed = True


class Scripted(httpx2.AsyncBaseTransport):
    """Answers every request with the given chunks (and records the requests)."""

    def __init__(self, chunks: Sequence[bytes], content_type: str = "text/event-stream") -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.requests: list[httpx2.Request] = []
        self.streams: list[_Chunks] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        stream = _Chunks(self.chunks)
        self.streams.append(stream)
        return httpx2.Response(200, headers={"content-type": self.content_type}, stream=stream)


def _openai_transcript() -> bytes:
    def chunk(**fields: Any) -> bytes:
        return b"data: " + msgspec.json.encode({"model": OPENAI_MODEL, **fields}) + b"\r\n\r\n"

    body = chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    for token in ["H\u00e9", "llo", " w\u00f6rld"]:
        body += chunk(choices=[{"index": 0, "delta": {"content": token}}])
    body += b": keep-alive comment\r\n\r\n"
    body += chunk(
        choices=[],
        usage={
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    )
    return body + b"data: [DONE]\r\n\r\n"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
async def test_chunks_pass_as_the_same_objects_whatever_their_boundaries(size: int) -> None:
    transcript = _openai_transcript()
    chunks = [transcript[i : i + size] for i in range(0, len(transcript), size)]
    chunks.insert(1, b"")  # an empty chunk is passed on too
    inner = Scripted(chunks)
    async with EventStore(None) as store:
        transport = LlmTallyTransport(store, inner)
        async with httpx2.AsyncClient(transport=transport) as client:
            async with client.stream("POST", "http://llm/v1/chat/completions", json=CHAT) as r:
                seen = [c async for c in r.aiter_raw()]
        non_empty = [c for c in chunks if c]
        assert len(seen) == len(non_empty)
        assert all(a is b for a, b in zip(seen, non_empty, strict=True))  # not even copied
        assert inner.streams[0].closed
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (9, 3, 4)
        assert p.model == OPENAI_MODEL and p.usage_missing is False
        assert p.ttft_ms is not None


async def test_other_requests_pass_through_untouched() -> None:
    async with EventStore(None) as store, FakeUpstream() as upstream:
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
            models = await client.get("/v1/models")
            missing = await client.post("/v1/files", content=b"x")
            wrong_method = await client.get("/v1/chat/completions")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == OPENAI_MODEL
        assert missing.status_code == 404
        assert wrong_method.status_code == 405
        await recorded(store, 0)
        assert transport.counters.as_dict() == {"recorded": 0, "dropped": 0, "errors": 0}


async def test_connection_refused() -> None:
    async with EventStore(None) as store, FakeUpstream(listening=False) as upstream:
        transport = LlmTallyTransport(store, agent_id="a")
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.post("/v1/chat/completions", json=CHAT)
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code, p.model) == ("connect_error", None, "gpt-4o-mini")
        assert p.error_message is not None and p.error_message.startswith("ConnectError")
        assert p.duration_ms is not None and p.usage_missing is False
        assert event.agent_id == "a"


async def test_timeout() -> None:
    async with EventStore(None) as store, FakeUpstream() as upstream:
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(
            base_url=upstream.url, transport=transport, timeout=httpx2.Timeout(5, read=0.2)
        ) as client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.post("/v1/chat/completions", json=CHAT, headers={"x-fake": "hang"})
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == ("timeout", None)
        assert p.duration_ms is not None and p.duration_ms >= 150


async def test_caller_closing_a_stream_early() -> None:
    async with EventStore(None) as store, FakeUpstream() as upstream:
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
            async with client.stream(
                "POST", "/v1/chat/completions", json=CHAT_STREAM, headers={"x-fake": "slow"}
            ) as response:
                received = b""
                async for chunk in response.aiter_raw():
                    received += chunk
                    if b" there" in received:
                        break  # two deltas in; the rest never comes
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == ("client_closed", None)
        assert p.output_tokens == 2 and p.usage_missing is True
        assert p.model == OPENAI_MODEL
        assert p.ttft_ms is not None


async def test_streaming_upload_is_not_read() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield msgspec.json.encode(CHAT)

    inner = Scripted([msgspec.json.encode({"model": OPENAI_MODEL})], "application/json")
    async with EventStore(None) as store:
        transport = LlmTallyTransport(store, inner)
        async with httpx2.AsyncClient(transport=transport) as client:
            response = await client.post("http://llm/v1/chat/completions", content=body())
        assert response.status_code == 200
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.model == OPENAI_MODEL and p.usage_missing is True


async def test_attribution_overrides_the_defaults() -> None:
    inner = Scripted([b'{"model": "gpt-4o", "usage": {"prompt_tokens": 1}}'], "application/json")
    async with EventStore(None) as store:
        transport = LlmTallyTransport(store, inner, agent_id="default", provider_id="key-0")
        async with httpx2.AsyncClient(transport=transport) as client:
            with attribution(agent_id="agent-2") as scope:
                await client.post("http://llm/v1/chat/completions", json=CHAT)
            await client.post("http://llm/v1/chat/completions", json=CHAT)
        inside, outside = await recorded(store, 2)
        assert (inside.agent_id, inside.payload.provider_id) == ("agent-2", "key-0")  # type: ignore[union-attr]
        assert (outside.agent_id, outside.payload.provider_id) == ("default", "key-0")  # type: ignore[union-attr]
        assert (scope.upstream_calls, scope.input_tokens, scope.backend) == (1, 1, "openai")


async def test_a_failing_store_never_fails_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(event: AnalyticsEvent) -> bool:
        raise RuntimeError("disk on fire")

    async with EventStore(None) as store, FakeUpstream() as upstream:
        monkeypatch.setattr(store, "record_nowait", boom)
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] == 11
        assert transport.counters.errors == 1
        assert transport.counters.last_error is not None
        assert "disk on fire" in transport.counters.last_error


async def test_a_failing_parser_never_changes_the_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(self: object, chunk: bytes, now_ns: int) -> None:
        raise ValueError("parser bug")

    async with EventStore(None) as store, FakeUpstream() as upstream:
        async with httpx2.AsyncClient(base_url=upstream.url) as bare:
            _, plain = await raw_chunks(bare, "/v1/messages", MESSAGE_STREAM, {})
        monkeypatch.setattr(_watch.ResponseWatcher, "feed", boom)
        transport = LlmTallyTransport(store)
        async with httpx2.AsyncClient(base_url=upstream.url, transport=transport) as client:
            _, seen = await raw_chunks(client, "/v1/messages", MESSAGE_STREAM, {})
        assert b"".join(seen) == b"".join(plain)
        assert transport.counters.errors == 1
        (event,) = await recorded(store)  # still recorded, with what is known
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.model == "claude-haiku-4-5" and p.usage_missing is True
        assert p.provider == "anthropic"
    assert ANTHROPIC_MODEL.startswith("claude-haiku-4-5")


async def test_unopened_and_closed_stores_are_counted_not_raised() -> None:
    inner = Scripted([b'{"model": "gpt-4o"}'], "application/json")
    unopened = LlmTallyTransport(EventStore(None), inner)
    async with httpx2.AsyncClient(transport=unopened) as client:
        assert (await client.post("http://llm/v1/responses", json=CHAT)).status_code == 200
    assert unopened.counters.errors == 1

    async with EventStore(None) as store:
        pass
    closed = LlmTallyTransport(store, inner)
    async with httpx2.AsyncClient(transport=closed) as client:
        assert (await client.post("http://llm/v1/responses", json=CHAT)).status_code == 200
    assert closed.counters.as_dict() == {"recorded": 0, "dropped": 1, "errors": 0}


async def test_stopping_early_closes_the_wrapped_iterator_at_once() -> None:
    # As httpx2 does over a bare transport: when the caller closes its iterator, the
    # wrapped transport's iterator is closed then, not later by the garbage collector.
    inner = Scripted([b"data: {}\n\n", b"data: {}\n\n"])
    async with EventStore(None) as store:
        transport = LlmTallyTransport(store, inner)
        async with httpx2.AsyncClient(transport=transport) as client:
            async with client.stream("POST", "http://llm/v1/chat/completions", json=CHAT) as r:
                async with contextlib.aclosing(r.aiter_raw()) as chunks:
                    async for _ in chunks:
                        break
                (stream,) = inner.streams
                assert stream.iterator_closed and stream.closed
        (event,) = await recorded(store)
        assert isinstance(event.payload, LlmRequestFailed)
        assert event.payload.error_code == "client_closed"


async def test_closing_after_the_final_usage_is_a_completed_call() -> None:
    transcript = _openai_transcript()
    done = transcript.index(b"data: [DONE]")
    inner = Scripted([transcript[:done], transcript[done:]])
    async with EventStore(None) as store:
        transport = LlmTallyTransport(store, inner)
        async with httpx2.AsyncClient(transport=transport) as client:
            async with client.stream("POST", "http://llm/v1/chat/completions", json=CHAT) as r:
                async for _ in r.aiter_raw():
                    break  # usage seen, [DONE] never read
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (p.input_tokens, p.output_tokens, p.usage_missing) == (9, 3, False)


async def test_correlation_from_the_scope_else_the_outgoing_headers() -> None:
    inner = Scripted([b'{"model": "gpt-4o", "usage": {"prompt_tokens": 1}}'], "application/json")
    url = "http://llm/v1/chat/completions"
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with EventStore(None, environment="prod") as store:
        async with httpx2.AsyncClient(transport=LlmTallyTransport(store, inner)) as client:
            with attribution(correlation_id="req-7", parent_event_id="span-1"):
                await client.post(url, json=CHAT, headers={"x-correlation-id": "ignored"})
            await client.post(url, json=CHAT, headers={"X-Correlation-Id": "req-8"})
            await client.post(url, json=CHAT, headers={"traceparent": traceparent})
            await client.post(url, json=CHAT, headers={"x-correlation-id": "not valid!"})
            with attribution(correlation_id="x" * 500):  # out of bounds: dropped, never raised
                await client.post(url, json=CHAT)
        events = await recorded(store, 5)
    assert [(e.correlation_id, e.parent_event_id) for e in events] == [
        ("req-7", "span-1"),
        ("req-8", None),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        (None, None),
        (None, None),
    ]
    assert {(e.severity, e.environment) for e in events} == {(None, "prod")}

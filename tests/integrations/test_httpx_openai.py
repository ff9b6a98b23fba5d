"""The transport under the real ``openai`` SDK, against the fake upstream over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import openai
import pytest

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally.demo.fake_upstream import (
    CHAT_USAGE,
    EMBEDDING_MODEL,
    INSTRUCT_MODEL,
    OPENAI_MODEL,
    RESPONSES_USAGE,
    TEXT,
    FakeUpstream,
)
from llmtally.integrations.httpx import LlmTallyTransport

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello. SECRET-PROMPT-TEXT"},
]


class Env:
    """An open store, the fake upstream, and an SDK client whose http client carries the
    transport."""

    def __init__(
        self,
        store: EventStore,
        upstream: FakeUpstream,
        client: openai.AsyncOpenAI,
        transport: LlmTallyTransport,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.client = client
        self.transport = transport


@asynccontextmanager
async def sdk() -> AsyncIterator[Env]:
    async with EventStore(None) as store, FakeUpstream() as upstream:
        transport = LlmTallyTransport(store, agent_id="agent-7", provider_id="key-1")
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            openai.AsyncOpenAI(
                base_url=f"{upstream.url}/v1", api_key="sk-test", http_client=http, max_retries=0
            ) as client,
        ):
            yield Env(store, upstream, client, transport)


async def recorded(store: EventStore, n: int = 1) -> list[AnalyticsEvent]:
    await store.flush()
    events = await store.snapshot_events()
    assert len(events) == n, events
    return events


def cost_of(store: EventStore, model: str, i: int, o: int, c: int = 0, w: int = 0) -> int:
    cost, status = store.pricing.cost(model, "openai", i, o, c, w)
    assert status == "priced"
    return cost


async def test_chat_completion_json() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        transport = env.transport
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == TEXT
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert event.agent_id == "agent-7"
        assert p.provider_id == "key-1"
        assert p.model == OPENAI_MODEL  # from the response, not the request's alias
        assert p.provider == "openai"
        assert p.endpoint == "/v1/chat/completions"
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (11, 4, 3)
        assert p.cache_write_input_tokens == 0
        assert p.cost_nanos == cost_of(store, OPENAI_MODEL, 11, 4, 3) > 0
        assert p.pricing_status == "priced"
        assert p.duration_ms is not None and p.duration_ms > 0
        assert p.ttft_ms is None and p.itl_mean_ms is None  # not a stream
        assert p.usage_missing is False
        assert transport.counters.as_dict() == {"recorded": 1, "dropped": 0, "errors": 0}


async def test_chat_stream_with_usage() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert text == TEXT
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.model == OPENAI_MODEL
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (
            CHAT_USAGE["prompt_tokens"],
            CHAT_USAGE["completion_tokens"],
            3,
        )
        assert p.cost_nanos == cost_of(store, OPENAI_MODEL, 11, 4, 3)
        assert p.usage_missing is False
        assert p.ttft_ms is not None and p.duration_ms is not None
        assert 0 < p.ttft_ms <= p.duration_ms
        # four content deltas, one token each: ITL over the three after the first
        assert p.itl_mean_ms is not None and p.itl_p95_ms is not None
        assert p.itl_mean_ms >= 0


async def test_chat_stream_without_usage_counts_chunks() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-fake": "no-usage"},
        )
        async for _ in stream:
            pass
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.usage_missing is True
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (0, 4, 0)
        assert p.cost_nanos == cost_of(store, OPENAI_MODEL, 0, 4)
        assert p.ttft_ms is not None


async def test_json_without_usage() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-fake": "no-usage"},
        )
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.usage_missing is True
        assert (p.input_tokens, p.output_tokens, p.cost_nanos) == (0, 0, 0)


async def test_responses_api_json_and_stream() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        reply = await client.responses.create(model="gpt-4o-mini", input="Say hello.")
        assert reply.output_text == TEXT
        stream = await client.responses.create(model="gpt-4o-mini", input="Say hello.", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        events = await recorded(store, 2)
        for event in events:
            p = event.payload
            assert isinstance(p, LlmRequestCompleted)
            assert p.endpoint == "/v1/responses"
            assert p.model == OPENAI_MODEL
            assert (p.input_tokens, p.output_tokens) == (20, 4)
            assert (p.cached_input_tokens, p.cache_write_input_tokens) == (5, 2)
            assert p.cost_nanos == cost_of(store, OPENAI_MODEL, 20, 4, 5, 2)
            assert p.usage_missing is False
        assert events[0].payload.ttft_ms is None  # type: ignore[union-attr]
        assert events[1].payload.ttft_ms is not None  # type: ignore[union-attr]
        assert RESPONSES_USAGE["output_tokens"] == 4


async def test_completions_and_embeddings() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello.")
        await client.embeddings.create(
            model=EMBEDDING_MODEL, input=["a", "b"], encoding_format="float"
        )
        completion, embedding = await recorded(store, 2)
        c, e = completion.payload, embedding.payload
        assert isinstance(c, LlmRequestCompleted) and isinstance(e, LlmRequestCompleted)
        assert (c.model, c.endpoint, c.input_tokens, c.output_tokens) == (
            INSTRUCT_MODEL,
            "/v1/completions",
            5,
            4,
        )
        assert (e.model, e.endpoint, e.input_tokens, e.output_tokens) == (
            EMBEDDING_MODEL,
            "/v1/embeddings",
            8,
            0,
        )
        assert e.provider == "openai"


async def test_large_json_body_is_scanned_at_its_ends() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        result = await client.embeddings.create(
            model=EMBEDDING_MODEL,
            input="a",
            encoding_format="float",
            extra_headers={"x-fake": "big"},
        )
        assert len(result.data) == 20
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (p.model, p.input_tokens, p.usage_missing) == (EMBEDDING_MODEL, 8, False)


@pytest.mark.parametrize(
    ("scenario", "error", "code", "status"),
    [
        pytest.param("429", openai.RateLimitError, "rate_limit_exceeded", 429, id="429"),
        pytest.param("500", openai.InternalServerError, "server_error", 500, id="500"),
    ],
)
async def test_http_errors_carry_the_provider_error(
    scenario: str,
    error: type[Exception],
    code: str,
    status: int,
) -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        with pytest.raises(error):
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers={"x-fake": scenario},
            )
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == (code, status)
        assert p.error_message and p.error_message.startswith(("Rate limit", "The server had"))
        assert p.model == "gpt-4o-mini"  # the request's: an error body names no model
        assert (p.input_tokens, p.output_tokens, p.cost_nanos) == (0, 0, 0)
        assert p.usage_missing is False
        assert event.agent_id == "agent-7"


async def test_retries_are_one_event_per_call() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        client = client.with_options(max_retries=1)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers={"x-fake": "429", "retry-after-ms": "1"},
            )
        events = await recorded(store, 2)
        assert [e.payload.error_code for e in events] == ["rate_limit_exceeded"] * 2  # type: ignore[union-attr]


async def test_error_chunk_inside_a_stream() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-fake": "stream-error"},
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.error_message, p.status_code) == (
            "server_error",
            "overloaded",
            None,
        )
        assert p.usage_missing is True and p.output_tokens == 1  # one delta arrived


async def test_responses_stream_error_event() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        stream = await client.responses.create(
            model="gpt-4o-mini", input="x", stream=True, extra_headers={"x-fake": "stream-error"}
        )
        kinds = [event.type async for event in stream]
        assert kinds[-1] == "error"  # the SDK yields it as an event
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.error_message) == ("server_error", "The model crashed")
        assert p.output_tokens == 1 and p.usage_missing is True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_gzip_bodies(stream: bool) -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        if stream:
            chunks = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-fake": "gzip"},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers={"x-fake": "gzip"},
            )
            text = reply.choices[0].message.content or ""
        assert text == TEXT
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (11, 4, 3)
        assert (p.ttft_ms is not None) is stream


async def test_prompt_and_completion_text_are_not_stored() -> None:
    async with sdk() as env:
        client, store = env.client, env.store
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        (event,) = await recorded(store)
        import msgspec

        encoded = msgspec.json.encode(event)
        assert b"SECRET-PROMPT-TEXT" not in encoded
        assert TEXT.encode() not in encoded
        assert b"sk-test" not in encoded


async def test_connection_refused_through_the_sdk() -> None:
    async with EventStore(None) as store, FakeUpstream(listening=False) as down:
        transport = LlmTallyTransport(store)
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            openai.AsyncOpenAI(
                base_url=f"{down.url}/v1", api_key="sk-test", http_client=http, max_retries=0
            ) as client,
        ):
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        (event,) = await recorded(store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code, p.model) == ("connect_error", None, "gpt-4o-mini")


async def test_closing_a_stream_early_through_the_sdk() -> None:
    async with sdk() as env:
        stream = await env.client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake": "slow"},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break  # the first token is enough
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code, p.usage_missing) == ("client_closed", None, True)
        assert p.output_tokens >= 1 and p.ttft_ms is not None

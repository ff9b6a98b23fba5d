"""The transport under the real ``anthropic`` SDK, against the fake upstream over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import httpx2
import pytest

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally.demo.fake_upstream import ANTHROPIC_MODEL, ANTHROPIC_USAGE, TEXT, FakeUpstream
from llmtally.integrations.httpx import LlmTallyTransport

MESSAGES = [{"role": "user", "content": "Say hello. SECRET-PROMPT-TEXT"}]
# llmtally's input is the total: uncached 7 + cache reads 200 + cache writes 100.
TOTAL_INPUT = (
    ANTHROPIC_USAGE["input_tokens"]
    + ANTHROPIC_USAGE["cache_read_input_tokens"]
    + ANTHROPIC_USAGE["cache_creation_input_tokens"]
)


class Env:
    def __init__(
        self, store: EventStore, client: anthropic.AsyncAnthropic, transport: LlmTallyTransport
    ) -> None:
        self.store = store
        self.client = client
        self.transport = transport


@asynccontextmanager
async def sdk() -> AsyncIterator[Env]:
    async with EventStore(None) as store, FakeUpstream() as upstream:
        transport = LlmTallyTransport(store, agent_id="agent-9")
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            anthropic.AsyncAnthropic(
                base_url=upstream.url, api_key="sk-ant-test", http_client=http, max_retries=0
            ) as client,
        ):
            yield Env(store, client, transport)


async def recorded(store: EventStore, n: int = 1) -> list[AnalyticsEvent]:
    await store.flush()
    events = await store.snapshot_events()
    assert len(events) == n, events
    return events


def check_usage(store: EventStore, p: LlmRequestCompleted) -> None:
    assert p.model == ANTHROPIC_MODEL
    assert p.provider == "anthropic"
    assert p.endpoint == "/v1/messages"
    assert p.input_tokens == TOTAL_INPUT == 307
    assert p.cached_input_tokens == 200
    assert p.cache_write_input_tokens == 100
    assert p.output_tokens == 4
    cost, status = store.pricing.cost(ANTHROPIC_MODEL, "anthropic", 307, 4, 200, 100)
    assert (p.cost_nanos, p.pricing_status) == (cost, status)
    assert status == "priced" and cost > 0
    assert p.usage_missing is False


async def test_message_json() -> None:
    async with sdk() as env:
        message = await env.client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        assert message.content[0].text == TEXT  # type: ignore[union-attr]
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        check_usage(env.store, p)
        assert event.agent_id == "agent-9" and p.provider_id is None
        assert p.ttft_ms is None


async def test_message_stream_events() -> None:
    async with sdk() as env:
        stream = await env.client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        text = ""
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
        assert text == TEXT
        (recorded_event,) = await recorded(env.store)
        p = recorded_event.payload
        assert isinstance(p, LlmRequestCompleted)
        check_usage(env.store, p)
        assert p.ttft_ms is not None and p.duration_ms is not None
        assert 0 < p.ttft_ms <= p.duration_ms
        assert p.itl_mean_ms is not None  # two deltas → one gap


async def test_message_stream_helper() -> None:
    async with sdk() as env:
        async with env.client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_message()
        assert final.usage.output_tokens == 4
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        check_usage(env.store, p)


async def test_stream_without_message_delta_keeps_the_reported_input() -> None:
    async with sdk() as env:
        stream = await env.client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-fake": "no-usage"},
        )
        async for _ in stream:
            pass
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert p.usage_missing is True
        # message_start reported the input exactly; the output is the deltas seen
        assert (p.input_tokens, p.cached_input_tokens, p.cache_write_input_tokens) == (
            307,
            200,
            100,
        )
        assert p.output_tokens == 2


@pytest.mark.parametrize(
    ("scenario", "error", "code"),
    [
        pytest.param("429", anthropic.RateLimitError, "rate_limit_error", id="429"),
        pytest.param("500", anthropic.InternalServerError, "api_error", id="500"),
        pytest.param("529", anthropic.APIStatusError, "overloaded_error", id="529"),
    ],
)
async def test_http_errors(scenario: str, error: type[Exception], code: str) -> None:
    async with sdk() as env:
        with pytest.raises(error):
            await env.client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers={"x-fake": scenario},
            )
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.status_code) == (code, int(scenario))
        assert p.model == "claude-haiku-4-5"
        assert p.provider == "anthropic"
        assert (p.input_tokens, p.output_tokens, p.cost_nanos) == (0, 0, 0)


async def test_error_event_inside_a_stream() -> None:
    async with sdk() as env:
        stream = await env.client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-fake": "stream-error"},
        )
        with pytest.raises(anthropic.APIStatusError):
            async for _ in stream:
                pass
        (event,) = await recorded(env.store)
        p = event.payload
        assert isinstance(p, LlmRequestFailed)
        assert (p.error_code, p.error_message, p.status_code) == (
            "overloaded_error",
            "Overloaded",
            None,
        )
        assert p.input_tokens == 307  # message_start said so before the failure
        assert p.usage_missing is True

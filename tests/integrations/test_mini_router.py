"""examples/mini_router.py as a real process between the openai SDK and the fake upstream."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import openai
import pytest
from anyio.abc import ByteReceiveStream

from llmtally import EventStore, LlmRequestCompleted, LlmRequestFailed
from llmtally.demo.fake_upstream import OPENAI_MODEL, TEXT, FakeUpstream
from llmtally.integrations.asgi import api_key_id

ROUTER = Path(__file__).resolve().parents[2] / "examples" / "mini_router.py"
SECRET = "router-test-secret-0123456789"
MESSAGES = [{"role": "user", "content": "Say hello."}]


async def first_line(stream: ByteReceiveStream) -> str:
    data = b""
    with anyio.fail_after(30):
        while b"\n" not in data:
            data += await stream.receive()
    return data.split(b"\n", 1)[0].decode()


@pytest.mark.slow
async def test_router_records_upstream_calls_for_the_client_key(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    env = {**os.environ, "LLMTALLY_KEY_SECRET": SECRET, "UPSTREAM_API_KEY": "sk-upstream"}
    async with FakeUpstream() as upstream:
        command = [
            sys.executable,
            str(ROUTER),
            "--upstream",
            f"{upstream.url}/v1",
            "--db",
            str(db),
            "--port",
            "0",
            "--keys",
            "alice=sk-router-alice",
        ]
        log = tmp_path / "router.log"
        with log.open("wb") as stderr:
            proc = await anyio.open_process(command, env=env, stderr=stderr)
        async with proc:
            try:
                assert proc.stdout is not None
                url = (await first_line(proc.stdout)).rsplit(" ", 1)[-1]
                async with openai.AsyncOpenAI(
                    base_url=f"{url}/v1", api_key="sk-router-alice", max_retries=0
                ) as client:
                    reply = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=MESSAGES,  # type: ignore[arg-type]
                    )
                    assert reply.choices[0].message.content == TEXT
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=MESSAGES,  # type: ignore[arg-type]
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    )
                    assert text == TEXT
                async with openai.AsyncOpenAI(
                    base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0
                ) as intruder:
                    with pytest.raises(openai.AuthenticationError):
                        await intruder.chat.completions.create(
                            model="gpt-4o-mini",
                            messages=MESSAGES,  # type: ignore[arg-type]
                        )
            finally:
                proc.terminate()  # SIGTERM: uvicorn shuts down, the store drains to disk
                with anyio.fail_after(30):
                    await proc.wait()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
        assert "mini_router: 3 requests (1 failed)" in log.read_text()  # lifespan ran to its end
        # the router swapped the client's key for its own upstream key
        assert {seen.headers["authorization"] for seen in upstream.requests} == {
            "Bearer sk-upstream"
        }

    async with EventStore(db) as store:
        events = [e for e in await store.snapshot_events() if e.event_type.startswith("llm_")]
    alice = api_key_id("sk-router-alice", SECRET.encode())
    json_call, stream_call, refused = events
    for event, streamed in ((json_call, False), (stream_call, True)):
        p = event.payload
        assert isinstance(p, LlmRequestCompleted)
        assert (event.agent_id, p.provider_id) == ("alice", alice)
        assert (p.model, p.endpoint) == (OPENAI_MODEL, "/v1/chat/completions")
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (11, 4, 3)
        assert p.cost_nanos > 0 and (p.ttft_ms is not None) is streamed
    p = refused.payload
    assert isinstance(p, LlmRequestFailed)  # recorded by the middleware: nothing went upstream
    assert (p.error_code, p.status_code, p.model) == ("invalid_api_key", 401, "gpt-4o-mini")
    assert refused.agent_id is None
    assert p.provider_id == api_key_id("sk-wrong", SECRET.encode())

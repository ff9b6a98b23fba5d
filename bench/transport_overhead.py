"""Per-request cost of ``LlmTallyTransport`` beside the bare transport, in the same run.

Variants are measured in blocks of 100 requests whose order rotates every round, so drift
(CPU frequency, neighbours on the machine, GC) hits them alike; each reports the median
wall time per request and the median CPU time per request (process CPU over a block,
including the store's pipeline work the block triggered, flushed at its end):

- ``bare``: ``httpx2.AsyncClient`` over its transport;
- ``wrapped``: the same wrapped in ``LlmTallyTransport`` recording into an open in-memory
  ``EventStore`` — the real path: parse, price, build the event, ``record_nowait``, and
  the store's aggregator/persister handling it;
- ``wrapped, null store``: the transport's own cost alone (a store stand-in that accepts
  events and does nothing);
- ``wrapped, no linger`` (TCP only): ``wrapped`` into a second in-memory store with
  ``aggregate_linger=0``, the aggregator as it was before it lingered: over TCP every
  request yields to the event loop, so each event is a pipeline batch of its own.

Against (1) a local upstream over TCP (an in-process asyncio HTTP/1.1 server answering an
OpenAI chat completion with usage, keep-alive), and (2) an in-memory transport returning
the same answer (no network noise). A streamed row (40 deltas + usage) is for
information, and so is the recording path alone in a hot loop (no HTTP client around it:
the floor of the transport's own cost). Target: < 50 µs added per non-streamed request
(median).

    .venv/bin/python bench/transport_overhead.py [--requests 3000] [--loop uvloop|asyncio]
        [--aggregate-linger SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx2
import msgspec

from llmtally import EventStore
from llmtally.integrations.httpx import LlmTallyTransport

REQUEST = msgspec.json.encode(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant." * 4},
            {"role": "user", "content": "Summarise the plot of Hamlet in one sentence." * 4},
        ],
        "temperature": 0.2,
    }
)
ANSWER = msgspec.json.encode(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A prince avenges his father. " * 8},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 61,
            "completion_tokens": 48,
            "total_tokens": 109,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    }
)


def _sse_answer(deltas: int = 40) -> bytes:
    def chunk(**fields: object) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", **fields}
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    out = chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    for i in range(deltas):
        out += chunk(choices=[{"index": 0, "delta": {"content": f" w{i}"}}])
    out += chunk(choices=[], usage={"prompt_tokens": 61, "completion_tokens": deltas})
    return out + b"data: [DONE]\n\n"


SSE_ANSWER = _sse_answer()


def _http(body: bytes, content_type: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


HTTP_JSON = _http(ANSWER, b"application/json")
HTTP_SSE = _http(SSE_ANSWER, b"text/event-stream")


class _Upstream(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server: one canned answer per request."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(HTTP_SSE if b" /stream/" in head else HTTP_JSON)


class _Canned(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=httpx2.ByteStream(ANSWER)
        )


Call = Callable[[], Awaitable[object]]


class _NullStore:
    """Accepts events and does nothing: isolates the transport from the store pipeline."""

    def __init__(self, store: EventStore) -> None:
        self.pricing = store.pricing
        self.now_ms = store.now_ms
        self.environment = store.environment

    def record_nowait(self, event: object) -> bool:
        return True


class Samples:
    """Per-request wall times, and per block the CPU time per request."""

    def __init__(self) -> None:
        self.wall: list[int] = []
        self.cpu: list[float] = []

    def wall_us(self) -> float:
        return statistics.median(self.wall) / 1000

    def cpu_us(self) -> float:
        return statistics.median(self.cpu) / 1000


async def _measure(
    stores: tuple[EventStore, ...], variants: dict[str, Call], n: int, block: int = 100
) -> dict[str, Samples]:
    """``n`` requests per variant, in blocks whose order rotates every round."""
    samples = {name: Samples() for name in variants}
    for _ in range(50):  # warm-up: connections, caches, price lookups
        for call in variants.values():
            await call()
    for store in stores:
        await store.flush()
    gc.collect()
    names = list(variants)
    for r in range(max(1, n // block)):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            call, out = variants[name], samples[name]
            c0 = time.process_time_ns()
            for _ in range(block):
                t0 = time.perf_counter_ns()
                await call()
                out.wall.append(time.perf_counter_ns() - t0)
            for store in stores:  # the pipeline's share of this block's events, if any
                await store.flush()
            out.cpu.append((time.process_time_ns() - c0) / block)
    return samples


def _recording_path(store: EventStore | _NullStore, n: int) -> float:
    """Median µs of the transport's own work for one non-streamed call, without the HTTP
    client around it: read the request, watch the response, parse, price, build and offer
    the event (internal API; a hot loop, so a lower bound of the in-situ cost)."""
    from llmtally.integrations._usage import ApiKind
    from llmtally.integrations.httpx import _Call

    transport = LlmTallyTransport(store)  # type: ignore[arg-type]
    request = httpx2.Request("POST", "http://llm/v1/chat/completions", content=REQUEST)
    response = httpx2.Response(200, headers={"content-type": "application/json"}, content=ANSWER)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call = _Call(transport, request, ApiKind.CHAT, "/v1/chat/completions")
        call.respond(response)
        call.feed(ANSWER)
        call.finish()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def _report(title: str, samples: dict[str, Samples]) -> dict[str, float]:
    """Prints the medians; returns the wall time added over ``bare`` per variant (µs)."""
    print(title)
    bare = samples["bare"]
    added: dict[str, float] = {}
    for name, s in samples.items():
        wall, cpu = s.wall_us(), s.cpu_us()
        added[name] = wall - bare.wall_us()
        extra = (
            ""
            if name == "bare"
            else f"   added: wall {added[name]:+6.1f} µs, CPU {cpu - bare.cpu_us():+6.1f} µs"
        )
        print(f"    {name:<22} wall {wall:7.1f} µs   CPU {cpu:7.1f} µs{extra}")
    return added


async def main(requests: int, linger: float | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    lingering = {} if linger is None else {"aggregate_linger": linger}
    try:
        async with (
            EventStore(None, capacity=100_000, **lingering) as store,
            EventStore(None, capacity=100_000, aggregate_linger=0) as eager,
        ):
            null = _NullStore(store)
            real = LlmTallyTransport(store, agent_id="bench")
            async with (
                httpx2.AsyncClient(base_url=url, headers=headers) as bare,
                httpx2.AsyncClient(base_url=url, headers=headers, transport=real) as wrapped,
                httpx2.AsyncClient(
                    base_url=url,
                    headers=headers,
                    transport=LlmTallyTransport(eager, agent_id="bench"),
                ) as wrapped_eager,
                httpx2.AsyncClient(
                    base_url=url,
                    headers=headers,
                    transport=LlmTallyTransport(null, agent_id="bench"),  # type: ignore[arg-type]
                ) as wrapped_null,
                httpx2.AsyncClient(base_url="http://llm", transport=_Canned()) as mem_bare,
                httpx2.AsyncClient(
                    base_url="http://llm", transport=LlmTallyTransport(store, _Canned())
                ) as mem_wrapped,
                httpx2.AsyncClient(
                    base_url="http://llm",
                    transport=LlmTallyTransport(null, _Canned()),  # type: ignore[arg-type]
                ) as mem_null,
            ):

                def post(client: httpx2.AsyncClient, path: str = "/v1/chat/completions") -> Call:
                    return lambda: client.post(path, content=REQUEST)

                print(f"{requests} requests per variant, event loop: {type(loop).__module__}")
                tcp = _report(
                    "non-streamed chat completion, local upstream over TCP",
                    await _measure(
                        (store, eager),
                        {
                            "bare": post(bare),
                            "wrapped": post(wrapped),
                            "wrapped, null store": post(wrapped_null),
                            "wrapped, no linger": post(wrapped_eager),
                        },
                        requests,
                    ),
                )
                mem = _report(
                    "non-streamed chat completion, in-memory upstream",
                    await _measure(
                        (store,),
                        {
                            "bare": post(mem_bare),
                            "wrapped": post(mem_wrapped),
                            "wrapped, null store": post(mem_null),
                        },
                        requests,
                    ),
                )
                streamed = "/stream/v1/chat/completions"
                _report(
                    "streamed chat completion (40 deltas + usage), local upstream over TCP",
                    await _measure(
                        (store,),
                        {"bare": post(bare, streamed), "wrapped": post(wrapped, streamed)},
                        requests // 3,
                    ),
                )
                print("the transport's recording path alone (hot loop, no HTTP client)")
                for name, target in (("real store", store), ("null store", null)):
                    median = _recording_path(target, requests)
                    print(f"    {name:<22} {median:7.1f} µs per call (median)")
                    await store.flush()
            await store.flush()
            print(
                f"recorded {store.stats().total_requests} events, dropped "
                f"{store.dropped_count()}, transport errors {real.counters.errors}"
            )
            for name in ("wrapped", "wrapped, null store"):
                worst = max(tcp[name], mem[name])
                verdict = "OK" if worst < 50 else "OVER"
                print(f"target < 50 µs added (median), {name}: {verdict} ({worst:+.1f} µs)")
    finally:
        server.close()
        await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument(
        "--aggregate-linger", type=float, help="the real store's aggregate_linger (s)"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.requests, args.aggregate_linger))
    else:
        asyncio.run(main(args.requests, args.aggregate_linger))

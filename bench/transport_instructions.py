"""Instructions per request that ``LlmTallyTransport`` adds, counted by valgrind.

CPU and wall time swing with the machine's load; instruction counts do not (to within a
fraction of a percent). For each variant of ``transport_overhead.py`` (bare, wrapped into
a null store, wrapped into an in-memory ``EventStore``; in-memory upstream and loopback
TCP), a child process makes 100 warm-up requests and then N more under
``valgrind --tool=cachegrind --cache-sim=no``; the count for N = 0 is subtracted, so
start-up and imports cancel out:

    .venv/bin/python bench/transport_instructions.py [--requests 1000]

Takes about a minute per variant (valgrind runs Python ~50x slower).
"""

from __future__ import annotations

import argparse
import asyncio

import httpx2
from _valgrind import child_instructions
from transport_overhead import REQUEST, _Canned, _NullStore, _Upstream

from llmtally import EventStore
from llmtally.integrations.httpx import LlmTallyTransport

VARIANTS = ("bare", "null", "real", "tcp-bare", "tcp-null", "tcp-real")


async def _requests(variant: str, n: int) -> None:
    """The measured work: ``100 + n`` non-streamed chat completions through ``variant``."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tcp = variant.startswith("tcp-")
    kind = variant.removeprefix("tcp-")
    async with EventStore(None, capacity=100_000) as store:
        inner: httpx2.AsyncBaseTransport = httpx2.AsyncHTTPTransport() if tcp else _Canned()
        transport = (
            inner
            if kind == "bare"
            else LlmTallyTransport(store if kind == "real" else _NullStore(store), inner)  # type: ignore[arg-type]
        )
        base = f"http://127.0.0.1:{port}" if tcp else "http://llm"
        async with httpx2.AsyncClient(base_url=base, transport=transport) as client:
            for i in range(100 + n):
                await client.post("/v1/chat/completions", content=REQUEST)
                if i % 100 == 99:
                    await store.flush()
            await store.flush()
    server.close()
    await server.wait_closed()


def _instructions(variant: str, n: int) -> int:
    return child_instructions(__file__, variant, str(n))


def main(requests: int) -> None:
    counts = {}
    for variant in VARIANTS:
        counts[variant] = (_instructions(variant, requests) - _instructions(variant, 0)) / requests
        base = counts["tcp-bare" if variant.startswith("tcp-") else "bare"]
        added = "" if variant.endswith("bare") else f"   added {counts[variant] - base:+9,.0f}"
        print(f"{variant:<10} {counts[variant]:11,.0f} instructions/request{added}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(_requests(args.child[0], int(args.child[1])))
    else:
        main(args.requests)

"""The README's embedding example: record two calls, flush, print the stats.

python examples/quickstart.py [path/to/analytics.db]
"""

from __future__ import annotations

import sys

import anyio

from llmtally import EventStore


async def main(path: str) -> None:
    async with EventStore(path) as store:
        await store.record_llm_completed(
            "gpt-4o-mini",
            input_tokens=11,
            output_tokens=1,
            agent_id="agent-7",
            provider_id="key-1",
            duration_ms=812.0,
            ttft_ms=95.0,
        )
        await store.record_llm_failed(
            "claude-3-5-sonnet",
            error_code="rate_limited",
            error_message="429 Too Many Requests",
            status_code=429,
        )
        await store.flush()  # barrier: everything accepted is aggregated + on disk
        stats = store.stats()
        print(stats.total_requests, stats.total_cost_micros, stats.by_model["gpt-4o-mini"].ttft_ms)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "analytics.db")

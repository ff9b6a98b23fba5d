"""A router process for the crash-recovery test.

``python router_process.py DB URL TOKEN N``: opens a store on ``DB`` with sync to ``URL``
configured so that it will not sync on its own (huge interval and threshold), records
``N`` request events, flushes, prints ``READY <unsynced> <dropped>`` and waits to be
killed (the test sends SIGKILL: no shutdown, no last sync).
"""

from __future__ import annotations

import sys

import anyio

from llmtally import EventStore, SyncConfig


async def main(path: str, url: str, token: str, n: int) -> None:
    config = SyncConfig(url, token, sync_interval=86_400.0, batch_threshold=1_000_000_000)
    async with EventStore(path, sync=config, overflow="block") as store:
        for i in range(n):
            await store.record_llm_completed(
                "gpt-4o-mini" if i % 2 else "claude-3-5-sonnet",
                input_tokens=100 + i % 50,
                output_tokens=i % 20,
                agent_id=f"agent-{i % 7}",
                duration_ms=50.0 + i % 300,
            )
        await store.flush()
        print(f"READY {store.unsynced_count()} {store.dropped_count()}", flush=True)
        await anyio.sleep_forever()  # until SIGKILL


if __name__ == "__main__":
    db, url, token, count = sys.argv[1:5]
    anyio.run(main, db, url, token, int(count))

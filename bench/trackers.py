"""What the trackers (errors, SLO, streaming, budgets) cost the aggregator actor.

The aggregator alone, on uvloop: the ingest stream is filled, then drained by the actor
into a persist stream that a no-op task empties (no storage). Printed beside, in the same
run and with the same events: trackers off (``trackers=None``) and on (three budgets, one
of them hard). Runs alternate off/on and the best of ``--rounds`` is kept for each.
Rates are events per CPU second of the process (``time.process_time``).

Two shapes of traffic:
  full batches  the buffer holds every event before the actor starts (batches of 2,000);
  small batches a producer sends 64 events, then yields to the loop (batches of ~64).

Two event mixes: "plain" requests (duration, TTFT; 2% failed), and "streams" (every
request also carries ITL and tokens/s, as ``track_stream`` records them — the worst case).
Failed requests carry a unique request id in their message (no normalization shortcut).

Then end to end (``record_llm_completed`` → aggregate → SQLite, the ``bench/ingest.py``
path), trackers off and on, with the three budgets.

    .venv/bin/python bench/trackers.py [--events 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import uvloop

import llmtally.store
from llmtally import EventStore
from llmtally._ids import new_event_id
from llmtally.analysis.budgets import Budget
from llmtally.analysis.stats import Aggregate
from llmtally.analysis.trackers import Trackers
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.pipeline.aggregate import IngestItem, aggregate
from llmtally.pipeline.fanout import Fanout
from llmtally.pipeline.messages import PersistBatch

# CPU time of this process, not wall time: on a shared machine other processes take the
# cores in turns, which wall time would charge to whichever run was unlucky.
_clock = time.process_time

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-3-5-haiku", "gemini-1.5-flash"]
AGENTS = [f"agent-{i}" for i in range(8)]
T0 = 1_760_000_000_000


def make_events(n: int, *, streams: bool) -> list[AnalyticsEvent]:
    out: list[AnalyticsEvent] = []
    for i in range(n):
        common = {
            "model": MODELS[i % 5],
            "provider": "openai",
            "provider_id": "key-1",
            "input_tokens": 100 + i % 900,
            "output_tokens": 20 + i % 300,
            "cost_nanos": 1_000 + i % 5_000,
            "duration_ms": 200.0 + i % 1000,
            "ttft_ms": 20.0 + i % 100,
        }
        if streams:
            common["itl_mean_ms"] = 5.0 + i % 20
            common["itl_p95_ms"] = 9.0 + i % 30
            common["output_tokens_per_s"] = 40.0 + i % 120
        payload: LlmRequestCompleted | LlmRequestFailed
        if i % 50 == 7:
            payload = LlmRequestFailed(
                error_code="rate_limited",
                error_message=f"429 Too Many Requests: req_{i:08x}9 retry in {i % 30}s",
                status_code=429,
                **common,  # type: ignore[arg-type]
            )
        else:
            payload = LlmRequestCompleted(**common)  # type: ignore[arg-type]
        ts = T0 + i // 10  # 10 events per millisecond: batches span seconds, not minutes
        out.append(
            AnalyticsEvent(
                event_id=new_event_id(ts), timestamp_ms=ts, payload=payload, agent_id=AGENTS[i % 8]
            )
        )
    return out


def make_trackers() -> Trackers:
    return Trackers(
        [
            Budget(id="all", limit_micros=10**12, period="monthly"),
            Budget(
                id="a3",
                scope="agent_id",
                scope_value="agent-3",
                limit_micros=10**12,
                period="daily",
                kind="hard",
            ),
            Budget(id="mini", scope="model", scope_value="gpt-4o-mini", limit_micros=10**12),
        ],
        now_ms=T0,
    )


async def _drain(rx: anyio.abc.ObjectReceiveStream[PersistBatch]) -> None:
    async with rx:
        async for batch in rx:
            for b in batch.barriers:
                b.done.set()


async def run(events: list[AnalyticsEvent], trackers: Trackers | None, chunk: int | None) -> float:
    """Events per second through the aggregator (best effort, one run)."""
    ingest_tx, ingest_rx = anyio.create_memory_object_stream[IngestItem](len(events) + 1)
    persist_tx, persist_rx = anyio.create_memory_object_stream[PersistBatch](len(events) + 1)
    gc.collect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, persist_rx)
        if chunk is None:
            for e in events:
                ingest_tx.send_nowait(e)
            ingest_tx.close()
            t0 = _clock()
            await aggregate(ingest_rx, persist_tx, Aggregate(), Fanout(), trackers=trackers)
        else:

            async def produce() -> None:
                async with ingest_tx:
                    for j in range(0, len(events), chunk):
                        for e in events[j : j + chunk]:
                            ingest_tx.send_nowait(e)
                        await anyio.lowlevel.checkpoint()

            t0 = _clock()
            tg.start_soon(produce)
            await aggregate(ingest_rx, persist_tx, Aggregate(), Fanout(), trackers=trackers)
        elapsed = _clock() - t0
    return len(events) / elapsed


async def end_to_end(path: Path, n: int, trackers: bool) -> float:
    """``record_llm_completed`` → SQLite, events per second."""
    real = llmtally.store.aggregate

    def without_trackers(*args: object, **kwargs: object) -> object:
        return real(*args, **{**kwargs, "trackers": None})  # type: ignore[arg-type]

    if not trackers:
        llmtally.store.aggregate = without_trackers  # type: ignore[assignment]
    try:
        budgets = make_trackers().budgets.budgets()
        async with EventStore(path, capacity=10_000, overflow="block", budgets=budgets) as store:
            rec = store.record_llm_completed
            gc.collect()
            t0 = _clock()
            for i in range(n):
                await rec(
                    MODELS[i % 5],
                    input_tokens=100 + i % 900,
                    output_tokens=20 + i % 300,
                    agent_id=AGENTS[i % 8],
                    provider_id="key-1",
                    duration_ms=200.0 + i % 1000,
                    ttft_ms=20.0 + i % 100,
                )
            await store.flush()
            elapsed = _clock() - t0
            assert store.stats().total_requests == n
    finally:
        llmtally.store.aggregate = real
    return n / elapsed


async def main_async(n: int, rounds: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {n:,} events, uvloop")
    print(f"{'mix':<8} {'batches':<14} {'trackers off':>14} {'trackers on':>14} {'cost':>7}")
    for mix in ("plain", "streams"):
        events = make_events(n, streams=mix == "streams")
        for label, chunk in (("full (2,000)", None), ("small (~64)", 64)):
            off = on = 0.0
            for _ in range(rounds):
                off = max(off, await run(events, None, chunk))
                on = max(on, await run(events, make_trackers(), chunk))
            cost = off / on - 1  # extra time per event, relative to trackers off
            print(f"{mix:<8} {label:<14} {off:>10,.0f} ev/s {on:>10,.0f} ev/s {cost:>6.0%}")
    tmp = Path(tempfile.mkdtemp(prefix="llmtally-bench-"))
    off = on = 0.0
    for r in range(rounds):
        off = max(off, await end_to_end(tmp / f"off-{r}.db", n, trackers=False))
        on = max(on, await end_to_end(tmp / f"on-{r}.db", n, trackers=True))
    cost = off / on - 1
    label = "SQLite"
    print(f"{'end2end':<8} {label:<14} {off:>10,.0f} ev/s {on:>10,.0f} ev/s {cost:>6.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    uvloop.run(main_async(args.events, args.rounds))


if __name__ == "__main__":
    main()

"""End-to-end ingest rate: record → aggregate → persisted in SQLite, on uvloop.

Printed beside, in the same run:
  (a) plain sqlite3 ``executemany`` of the same rows into the same schema and indexes;
  (b) the OpenTelemetry SDK recording the same fields as span attributes through a
      BatchSpanProcessor (to a no-op exporter) — what a tracing-based setup costs.

Both SQLite writers are measured (``writer="thread"``, the default, and
``writer="process"``), interleaved, best of two runs each.

Also: ``record_nowait`` cost per call (median), and peak RSS after 1,000,000 events with
capacity 10,000.

    .venv/bin/python bench/ingest.py [--events 300000]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _plain import plain_sqlite3

from llmtally import EventStore
from llmtally.storage.rows import COLUMNS, event_to_row
from llmtally.storage.sqlite import MIGRATIONS

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-3-5-haiku", "gemini-1.5-flash"]
AGENTS = [f"agent-{i}" for i in range(8)]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def record(store: EventStore, n: int) -> None:
    """The workload: ``n`` completed requests over 5 models and 8 agents, then a flush."""
    rec = store.record_llm_completed
    for i in range(n):
        await rec(
            MODELS[i % 5],
            input_tokens=100 + i % 900,
            output_tokens=20 + i % 300,
            cached_input_tokens=i % 50,
            agent_id=AGENTS[i % 8],
            provider_id="key-1",
            duration_ms=200.0 + i % 1000,
            ttft_ms=20.0 + i % 100,
        )
    await store.flush()


async def _llmtally(path: Path, n: int, writer: str = "thread") -> tuple[float, float, list]:
    """(events/s, CPU µs per event of this process — the router's — , a sample)."""
    async with EventStore(path, capacity=10_000, overflow="block", writer=writer) as store:  # type: ignore[arg-type]
        c0 = time.process_time()
        t0 = time.perf_counter()
        await record(store, n)
        elapsed = time.perf_counter() - t0
        cpu_us = (time.process_time() - c0) / n * 1e6
        assert store.stats().total_requests == n, store.stats().total_requests
        assert store.dropped_count() == 0
        sample = await store.snapshot_events(limit=n)
    return n / elapsed, cpu_us, sample


def _plain_sqlite(path: Path, rows: list[tuple], batch: int = 1000) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for migration in MIGRATIONS:
        db.executescript(migration)
    sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    with plain_sqlite3():
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, rows[i : i + batch])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - t0
    db.close()
    return len(rows) / elapsed


def _otel(n: int) -> float | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class Null(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Null(), max_queue_size=10_000))
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter()
    for i in range(n):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.request.model": MODELS[i % 5],
                    "gen_ai.provider.name": "openai",
                    "gen_ai.usage.input_tokens": 100 + i % 900,
                    "gen_ai.usage.output_tokens": 20 + i % 300,
                    "gen_ai.usage.cache_read.input_tokens": i % 50,
                    "gen_ai.agent.id": AGENTS[i % 8],
                    "llmtally.provider_id": "key-1",
                    "llmtally.duration_ms": 200.0 + i % 1000,
                    "llmtally.ttft_ms": 20.0 + i % 100,
                }
            )
    provider.force_flush()
    elapsed = time.perf_counter() - t0
    provider.shutdown()
    return n / elapsed


async def _nowait_cost(path: Path, calls: int = 200_000) -> float:
    from llmtally import AnalyticsEvent, LlmRequestCompleted
    from llmtally._ids import new_event_id

    events = [
        AnalyticsEvent(
            event_id=new_event_id(),
            timestamp_ms=1,
            payload=LlmRequestCompleted(model="gpt-4o-mini", provider="openai", input_tokens=5),
        )
        for _ in range(calls)
    ]
    samples: list[float] = []
    async with EventStore(path, capacity=calls + 1) as store:
        rec = store.record_nowait
        clock = time.perf_counter_ns
        for chunk in range(0, calls, 1000):
            t0 = clock()
            for ev in events[chunk : chunk + 1000]:
                rec(ev)
            samples.append((clock() - t0) / 1000 / 1000)
        await store.flush()
    return statistics.median(samples)


async def _rss(path: Path, n: int = 1_000_000) -> tuple[float, float]:
    async with EventStore(path, capacity=10_000) as store:
        rec = store.record_llm_completed
        after_100k = 0.0
        for i in range(n):
            if (
                await rec(
                    MODELS[i % 5],
                    input_tokens=10,
                    output_tokens=5,
                    agent_id=AGENTS[i % 8],
                    duration_ms=100.0 + i % 500,
                )
                is None
            ):
                await store.flush()  # back off the way a router would: let the pipeline catch up
            if i == 100_000:
                gc.collect()
                after_100k = _rss_mb()
        await store.flush()
        gc.collect()
        return after_100k, _rss_mb()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_only:  # run in a fresh process so earlier measurements don't skew RSS
        import uvloop

        at_100k, at_1m = uvloop.run(_rss(Path(tempfile.mkdtemp(prefix="llmtally-rss-")) / "r.db"))
        print(
            f"RSS after 100k events: {at_100k:.1f} MB; after 1M: {at_1m:.1f} MB; "
            f"growth {at_1m - at_100k:+.1f} MB (capacity 10,000)"
        )
        return
    n = args.events
    tmp = Path(tempfile.mkdtemp(prefix="llmtally-bench-"))
    import uvloop

    # Interleaved, each writer twice: the best of two (a shared machine drifts).
    rates: dict[str, list[float]] = {"thread": [], "process": []}
    cpu: dict[str, list[float]] = {"thread": [], "process": []}
    for i in range(2):
        for writer in rates:
            rate, cpu_us, sample = uvloop.run(_llmtally(tmp / f"ours-{writer}-{i}.db", n, writer))
            rates[writer].append(rate)
            cpu[writer].append(cpu_us)
    rows = [event_to_row(e) for e in sample]
    plain = max(_plain_sqlite(tmp / f"plain-{i}.db", rows) for i in range(2))
    otel = _otel(min(n, 100_000))
    nowait_us = uvloop.run(_nowait_cost(tmp / "nowait.db"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {n:,} events")
    print(f"plain sqlite3 executemany, same rows:      {plain:>10,.0f} rows/s")
    if otel:
        print(f"OpenTelemetry SDK spans (BatchSpanProc.):  {otel:>10,.0f} spans/s")
    for writer, runs in rates.items():
        ours = max(runs)
        line = f"llmtally end-to-end, writer={writer + ':':8s}   {ours:>10,.0f} events/s"
        line += f"   ours/plain = {ours / plain:.0%}"
        if otel:
            line += f"   ours/otel = {ours / otel:.1f}x"
        line += f"   router process CPU {min(cpu[writer]):.1f} µs/event"
        print(line)
    print(f"record_nowait median cost:                 {nowait_us:>10.2f} µs/call")
    if not args.skip_rss:
        import subprocess

        subprocess.run([sys.executable, __file__, "--rss-only"], check=True)


if __name__ == "__main__":
    main()

"""Soak: millions of events through an ``EventStore`` syncing to a collector process.

One ``llmtally serve`` subprocess (SQLite, uvloop) and, in this process, one store
(SQLite, ``overflow="block"``) that records ``--events`` request events as fast as it
can while its syncer ships them to the collector. Every ``--sample-every`` events it
prints the resident memory (RSS) of this process and of the collector, the rate, and the
outbox (events persisted, not yet accepted by the collector). At the end: the outbox
must be empty, nothing dropped, and the collector must hold every event exactly once
(``count(*)`` and ``count(DISTINCT event_id)`` both equal to ``--events``).

Minutes, not seconds: not part of the test suite. Linux (reads ``/proc``).

    .venv/bin/python bench/soak.py [--events 5000000] [--sample-every 250000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import uvloop

from llmtally import EventStore, SyncConfig

TOKEN = "soak-ingest-token"
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-5-haiku", "mistral-large"]
AGENTS = [f"agent-{i}" for i in range(8)]
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Sample:
    events: int
    seconds: float
    store_rss_mb: float
    collector_rss_mb: float
    unsynced: int
    collector_rows: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collector(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTALLY_")}
    env["LLMTALLY_INGEST_TOKENS"] = TOKEN
    cmd = [sys.executable, "-m", "llmtally.cli", "serve", "--db", str(db), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + 30
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        while True:  # readiness poll of a subprocess, bounded
            if proc.poll() is not None:
                raise SystemExit(f"collector exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if client.get("/health").status_code == 200:
                    return proc
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise SystemExit(f"collector did not start:\n{log.read_text()}")
            time.sleep(0.05)


async def rss_mb(pid: int | str) -> float:
    """Resident set size of process ``pid`` (or ``"self"``) in MB, from /proc."""
    status = await anyio.Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def query(db: Path, sql: str) -> tuple[int, ...]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return tuple(conn.execute(sql).fetchone())
    finally:
        conn.close()


async def collector_rows(db: Path) -> int:
    try:
        return (await anyio.to_thread.run_sync(query, db, "SELECT count(*) FROM events"))[0]
    except sqlite3.OperationalError:
        return -1  # busy: the table is shown as unknown for this sample


async def soak(
    workdir: Path, url: str, collector: subprocess.Popen[bytes], events: int, every: int
) -> tuple[list[Sample], EventStore]:
    config = SyncConfig(url, TOKEN, batch_threshold=500, max_batch=1000, sync_interval=1.0)
    store = EventStore(
        workdir / "router.db", sync=config, overflow="block", max_pending_events=None
    )
    samples: list[Sample] = []
    collector_db = workdir / "collector.db"

    async def sample(n: int) -> None:
        s = Sample(
            events=n,
            seconds=time.perf_counter() - started,
            store_rss_mb=await rss_mb("self"),
            collector_rss_mb=await rss_mb(collector.pid),
            unsynced=store.unsynced_count(),
            collector_rows=await collector_rows(collector_db),
        )
        samples.append(s)
        print_row(s, samples[-2] if len(samples) > 1 else None)

    print_header()
    started = time.perf_counter()
    async with store:
        await sample(0)
        for i in range(events):
            m = i % 5
            if i % 50 == 49:
                await store.record_llm_failed(
                    MODELS[m],
                    error_code="rate_limited",
                    error_message=f"429 Too Many Requests (req_{i})",
                    status_code=429,
                    agent_id=AGENTS[i % 8],
                    provider_id=f"key-{i % 3}",
                )
            else:
                await store.record_llm_completed(
                    MODELS[m],
                    input_tokens=100 + i % 900,
                    output_tokens=20 + i % 300,
                    cached_input_tokens=i % 50,
                    agent_id=AGENTS[i % 8],
                    provider_id=f"key-{i % 3}",
                    duration_ms=200.0 + i % 1000,
                    ttft_ms=20.0 + i % 100,
                )
            if (i + 1) % every == 0:
                await sample(i + 1)
        await store.flush()
        with anyio.fail_after(DRAIN_TIMEOUT_S):
            while store.unsynced_count():
                await store.sync_now()
        await sample(events)
    return samples, store


def print_header() -> None:
    print(
        f"{'events':>10} {'s':>8} {'ev/s':>8} {'store RSS MB':>13} {'collector RSS MB':>17} "
        f"{'unsynced':>9} {'at collector':>13}"
    )


def print_row(s: Sample, previous: Sample | None) -> None:
    rate = ""
    if previous is not None and s.seconds > previous.seconds and s.events > previous.events:
        rate = f"{(s.events - previous.events) / (s.seconds - previous.seconds):,.0f}"
    print(
        f"{s.events:>10,} {s.seconds:>8.1f} {rate:>8} {s.store_rss_mb:>13.1f} "
        f"{s.collector_rss_mb:>17.1f} {s.unsynced:>9,} {s.collector_rows:>13,}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--sample-every", type=int, default=0, help="default: events / 20")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    args = parser.parse_args()
    every = args.sample_every or max(1, args.events // 20)
    with tempfile.TemporaryDirectory(prefix="llmtally-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        collector = start_collector(workdir / "collector.db", port, workdir / "collector.log")
        try:
            samples, store = anyio.run(
                soak,
                workdir,
                f"http://127.0.0.1:{port}",
                collector,
                args.events,
                every,
                backend_options={"loop_factory": uvloop.new_event_loop},
            )
        finally:
            collector.send_signal(signal.SIGTERM)
            code = collector.wait(60)
        stats = store.stats()
        total, distinct = query(
            workdir / "collector.db", "SELECT count(*), count(DISTINCT event_id) FROM events"
        )
        pending = query(workdir / "router.db", "SELECT count(*) FROM events WHERE sync_state = 0")
        first, steady, last = samples[0], samples[min(2, len(samples) - 1)], samples[-1]
        elapsed = last.seconds
        print()
        print(f"events recorded           {args.events:,} in {elapsed:.0f} s")
        print(f"dropped                   {stats.dropped_events:,} {dict(stats.dropped_by_cause)}")
        print(f"unsynced at the end       {pending[0]:,}")
        print(f"at the collector          {total:,} rows, {distinct:,} distinct event ids")
        print(f"peak unsynced (outbox)    {max(s.unsynced for s in samples):,}")
        print(
            f"store RSS                 {first.store_rss_mb:.1f} MB at start, "
            f"{steady.store_rss_mb:.1f} MB at {steady.events:,}, {last.store_rss_mb:.1f} MB at end"
        )
        print(
            f"collector RSS             {first.collector_rss_mb:.1f} MB at start, "
            f"{steady.collector_rss_mb:.1f} MB at {steady.events:,}, "
            f"{last.collector_rss_mb:.1f} MB at end"
        )
        print(f"collector exit code       {code}")
        ok = (
            stats.dropped_events == 0
            and pending[0] == 0
            and total == distinct == args.events
            and code == 0
        )
        print("RESULT                    " + ("PASS" if ok else "FAIL"))
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Collector ingest rate over HTTP, against a plain insert of the same rows.

Starts one ``llmtally serve`` process (uvloop), then a few concurrent async clients
(httpx2, one connection each, pre-encoded bodies) post batches of Protocol 012 events
over loopback until ``--events`` are in. Reports accepted events/s, and the CPU per event
of the collector (its process and writer process) and of the clients (this process).

Backends (``--db``):

- ``sqlite`` (default): the collector's database is a file in a temporary folder. The
  plain baseline, in the same run: ``sqlite3`` ``executemany`` of the same rows (built by
  ``event_to_row``) into the same schema and indexes (``MIGRATIONS``), one transaction
  per batch of the same size, WAL and ``synchronous=NORMAL`` like the collector.
- a ``postgresql://`` URL: the collector and the baseline each get a fresh schema
  there (dropped afterwards). The plain baseline: asyncpg ``copy_records_to_table`` of
  the same rows straight into ``events`` (same schema and indexes, ``postgres.MIGRATIONS``),
  one transaction per batch of the same size.

Targets: >= 100,000 events/s over HTTP, and >= 40% of the plain rate.

    .venv/bin/python bench/collector_ingest.py [--events 200000] [--batch 500] [--clients 4]
        [--db sqlite | postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx2
import msgspec
from _plain import plain_sqlite3

from llmtally._ids import new_event_id
from llmtally.events import (
    AnalyticsEvent,
    LlmRequestCompleted,
    LlmRequestFailed,
    WireBatch,
    WireEvent,
    from_wire,
    to_wire,
)
from llmtally.storage.rows import COLUMNS, SYNCED, event_to_row
from llmtally.storage.sqlite import MIGRATIONS

T = TypeVar("T")

TOKEN = "bench-ingest-token"
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-5-haiku", "mistral-large"]
PROVIDERS = ["openai", "openai", "anthropic", "anthropic", "mistral"]
AGENTS = [f"agent-{i}" for i in range(8)]
T0_MS = 1_700_000_000_000


def make_wire(n: int) -> list[WireEvent]:
    """``n`` realistic request events (every 20th failed) in wire form."""
    out: list[WireEvent] = []
    for i in range(n):
        m = i % 5
        common: dict[str, Any] = {
            "model": MODELS[m],
            "provider": PROVIDERS[m],
            "provider_id": f"key-{i % 3}",
            "input_tokens": 100 + i % 900,
            "output_tokens": 20 + i % 300,
            "cached_input_tokens": i % 50,
            "cost_nanos": 1_000_000 + i % 7919,
            "duration_ms": 200.0 + i % 1000,
            "ttft_ms": 20.0 + i % 100,
        }
        payload: LlmRequestCompleted | LlmRequestFailed
        if i % 20 == 19:
            payload = LlmRequestFailed(error_code="rate_limited", status_code=429, **common)
        else:
            payload = LlmRequestCompleted(**common)
        event = AnalyticsEvent(
            event_id=new_event_id(),
            timestamp_ms=T0_MS + i,
            payload=payload,
            agent_id=AGENTS[i % 8],
        )
        out.append(to_wire(event))
    return out


def chunks(items: list[WireEvent], size: int) -> Iterator[list[WireEvent]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- over HTTP ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collector(
    db: str, port: int, log: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTALLY_")}
    env["LLMTALLY_INGEST_TOKENS"] = TOKEN
    cmd = [sys.executable, "-m", "llmtally.cli", "serve", "--db", db, "--port", str(port)]
    cmd += extra or []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + 20
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


async def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[int, float, float]:
    """Post every body from ``clients`` concurrent clients; returns (accepted, seconds,
    the clients' CPU seconds: this process's)."""
    queue = iter(bodies)
    decoder = msgspec.json.Decoder(dict[str, Any])
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def worker(client: httpx2.AsyncClient) -> int:
        accepted = 0
        for content in queue:  # one shared iterator: each body is taken once
            r = await client.post("/api/v1/analytics/events", content=content, headers=headers)
            if r.status_code != 200:
                raise SystemExit(f"collector answered {r.status_code}: {r.text}")
            accepted += decoder.decode(r.content)["accepted"]
        return accepted

    limits = httpx2.Limits(max_connections=1)
    pool = [httpx2.AsyncClient(base_url=url, timeout=60.0, limits=limits) for _ in range(clients)]
    try:
        # Warm up each connection (and the server's imports) outside the timing.
        for client in pool:
            await client.get("/health")
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        counts = await asyncio.gather(*(worker(c) for c in pool))
        elapsed = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
    finally:
        for client in pool:
            await client.aclose()
    return sum(counts), elapsed, client_cpu


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; else ``None``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(``cpu_seconds`` of ``pid``, that of its direct children: the SQLite writer
    process), or ``None``."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own, sum(cpu_seconds(int(c)) or 0.0 for c in children)


class HttpRun(NamedTuple):
    """What ``run_http`` measured."""

    rate: float
    """Accepted events/s."""
    collector_us: tuple[float, float] | None
    """CPU microseconds per event of the collector's process and of its writer process
    (``None`` without ``/proc``)."""
    clients_us: float
    """CPU microseconds per event of the clients (this process, on the same cores)."""


def run_http(
    db: str,
    log: Path,
    wire: list[WireEvent],
    batch: int,
    clients: int,
    extra: list[str] | None = None,
) -> HttpRun:
    """Post ``wire`` to a collector started for the run. ``extra``: more ``llmtally
    serve`` arguments."""
    encode = msgspec.json.Encoder().encode
    bodies = [encode(WireBatch(events=b)) for b in chunks(wire, batch)]
    port = free_port()
    proc = start_collector(db, port, log, extra)
    try:
        cpu0 = tree_cpu_seconds(proc.pid)
        accepted, elapsed, client_cpu = _run(post_all(f"http://127.0.0.1:{port}", bodies, clients))
        cpu1 = tree_cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    if accepted != len(wire):
        raise SystemExit(f"accepted {accepted} of {len(wire)}")
    if code != 0:
        raise SystemExit(f"collector exited with {code}")
    clients_us = client_cpu / accepted * 1e6
    if cpu0 is None or cpu1 is None:
        return HttpRun(accepted / elapsed, None, clients_us)
    own, children = ((b - a) / accepted * 1e6 for a, b in zip(cpu0, cpu1, strict=True))
    return HttpRun(accepted / elapsed, (own, children), clients_us)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed, like the collector."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- plain baselines -----------------------------------------------------------------------


def run_plain_sqlite(workdir: Path, wire: list[WireEvent], batch: int) -> float:
    rows = [event_to_row(from_wire(w), SYNCED) for w in wire]
    conn = sqlite3.connect(workdir / "plain.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        for migration in MIGRATIONS:
            conn.executescript(migration)
        sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        with plain_sqlite3():
            t0 = time.perf_counter()
            for i in range(0, len(rows), batch):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows[i : i + batch])
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - t0
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    assert count == len(rows)
    return len(rows) / elapsed


async def run_plain_postgres(url: str, wire: list[WireEvent], batch: int) -> float:
    """asyncpg binary ``COPY`` of the same rows into the same schema, a transaction per
    batch (``url`` names a fresh schema)."""
    import asyncpg  # type: ignore[import-untyped]

    from llmtally.storage.postgres import MIGRATIONS as PG_MIGRATIONS

    rows = [event_to_row(from_wire(w), SYNCED) for w in wire]
    conn = await asyncpg.connect(url)
    try:
        for migration in PG_MIGRATIONS:
            await conn.execute(migration)
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "events", records=rows[i : i + batch], columns=COLUMNS
                )
        elapsed = time.perf_counter() - t0
        count = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    assert count == len(rows)
    return len(rows) / elapsed


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _with_search_path(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set (asyncpg passes unknown query parameters on as
    server settings)."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


def run_postgres(
    url: str, wire: list[WireEvent], batch: int, clients: int
) -> tuple[HttpRun, float]:
    """(``run_http``'s answer, plain rate), each in a fresh schema dropped afterwards."""
    tag = secrets.token_hex(4)
    schemas = [f"llmtally_bench_{tag}_collector", f"llmtally_bench_{tag}_plain"]
    for schema in schemas:
        _run(_admin(url, f'CREATE SCHEMA "{schema}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="llmtally-bench-") as tmp:
            log = Path(tmp) / "collector.log"
            http = run_http(_with_search_path(url, schemas[0]), log, wire, batch, clients)
        plain_rate = _run(run_plain_postgres(_with_search_path(url, schemas[1]), wire, batch))
    finally:
        for schema in schemas:
            _run(_admin(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return http, plain_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events to post")
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--db", default="sqlite", help="'sqlite' (default) or a postgresql:// URL")
    parser.add_argument(
        "--writer",
        choices=("thread", "process"),
        default=None,
        help="SQLite: llmtally serve --writer (default: serve's own default)",
    )
    args = parser.parse_args()

    wire = make_wire(args.events)
    if args.db.startswith(("postgresql://", "postgres://")):
        peer = "plain asyncpg COPY:"
        http, plain_rate = run_postgres(args.db, wire, args.batch, args.clients)
    elif args.db == "sqlite":
        peer = "plain sqlite3:"
        with tempfile.TemporaryDirectory(prefix="llmtally-bench-") as tmp:
            workdir = Path(tmp)
            db = str(workdir / "collector.db")
            log = workdir / "collector.log"
            extra = [] if args.writer is None else ["--writer", args.writer]
            http = run_http(db, log, wire, args.batch, args.clients, extra)
            plain_rate = run_plain_sqlite(workdir, wire, args.batch)
    else:
        parser.error("--db must be 'sqlite' or a postgresql:// URL")
    http_rate, cpu_us = http.rate, http.collector_us
    ratio = http_rate / plain_rate
    cpus = os.cpu_count()
    print(f"events: {args.events:,}  batch: {args.batch}  clients: {args.clients}  cpus: {cpus}")
    print(f"collector over HTTP: {http_rate:>10,.0f} events/s   (target >= 100,000)")
    print(f"{peer:<21}{plain_rate:>10,.0f} events/s")
    print(f"ratio:               {ratio:>10.0%}            (target >= 40%)")
    if cpu_us is not None:
        own, child = cpu_us
        print(
            f"collector CPU:       {own + child:>10.1f} us/event"
            f"   (event loop's process {own:.1f}, writer process {child:.1f})"
        )
    print(f"clients' CPU:        {http.clients_us:>10.1f} us/event   (this process, same cores)")


if __name__ == "__main__":
    main()

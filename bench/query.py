"""Query speed: an aggregate over 30 days from rollups, beside the same answer from a full
scan of the raw events, in the same run; CSV export rate; the aggregate on PostgreSQL.

N synthetic request events (default 10,000,000) spread over 30 days are written straight
into a SQLite file with ``sqlite3`` (no pipeline), with their rollups computed by the
same ``rollup_events`` the storages use — minute rows as each minute is generated, hour
rows as each hour completes. Then, through ``llmtally.query``:

1. ``aggregate(group_by="model", window="1h")`` over the 30 days from rollups (median of
   several runs), and once from a full scan of the raw events (``source="raw"``); the two
   answers are checked equal (counters exactly, percentiles as the same sketch buckets);
2. ``export(format="csv")`` of one day: rows/s;
3. the same rollups (and, unless ``--pg-skip-events``, the events) copied into a fresh
   schema on PostgreSQL, and the rollup aggregate timed there.

    .venv/bin/python bench/query.py [--events 10000000] [--pg postgresql://...|none]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.query import aggregate, export
from llmtally.storage.rollups import MINUTE_MS, Rollup, rollup_events, rollup_to_row
from llmtally.storage.rows import COLUMNS, SYNCED, event_to_row
from llmtally.storage.sqlite import SqliteStorage

DAY_MS = 86_400_000
MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-3-5-haiku", "anthropic"),
    ("gemini-1.5-flash", "google"),
]
AGENTS = [f"agent-{i}" for i in range(8)]
KEYS = ["key-1", "key-2"]
ROLLUP_INSERT = (
    "INSERT INTO rollups (period_ms, dim, start_ms, value, requests, failed_requests, "
    "input_tokens, output_tokens, cached_input_tokens, cache_write_input_tokens, cost_nanos, "
    "unpriced_requests, unpriced_input_tokens, unpriced_output_tokens, duration_count, "
    "duration_sum, duration_min, duration_max, ttft_count, ttft_sum, ttft_min, ttft_max, "
    "sketches, mix) VALUES (" + ", ".join("?" * 24) + ")"
)


def _event_id(ts: int, i: int) -> str:
    """A UUIDv7-shaped id: time-ordered, unique per ``i``."""
    h = f"{ts:012x}"
    tail = f"{i:015x}"
    return f"{h[:8]}-{h[8:]}-7{tail[:3]}-8{tail[3:6]}-{tail[6:]}000"


def _minute_events(minute: int, n: int, first: int, rng: random.Random) -> list[AnalyticsEvent]:
    out = []
    rand = rng.random
    offsets = sorted(rng.randrange(MINUTE_MS) for _ in range(n))
    for k, off in enumerate(offsets):
        ts = minute + off
        model, provider = MODELS[int(rand() * 5)]
        common: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "provider_id": KEYS[int(rand() * 2)],
            "input_tokens": int(rand() * 4000),
            "output_tokens": int(rand() * 800),
            "cached_input_tokens": int(rand() * 500),
            "cost_nanos": int(rand() * 20_000_000),
            "duration_ms": math.exp(6.0 + 1.2 * (rand() + rand() + rand() - 1.5)),
            "ttft_ms": math.exp(4.5 + 0.8 * (rand() + rand() + rand() - 1.5)),
        }
        if rand() < 0.05:
            payload: Any = LlmRequestFailed(error_code="rate_limited", status_code=429, **common)
        else:
            payload = LlmRequestCompleted(**common)
        out.append(
            AnalyticsEvent(
                event_id=_event_id(ts, first + k),
                timestamp_ms=ts,
                payload=payload,
                agent_id=AGENTS[int(rand() * 8)],
                synced=True,
            )
        )
    return out


def generate(path: Path, n: int, start_ms: int, days: int) -> float:
    """Write ``n`` events over ``days`` days from ``start_ms`` (an hour boundary) and their
    rollups; returns the seconds it took."""
    asyncio.run(_migrate(path))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    insert = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    rng = random.Random(42)
    minutes = days * 24 * 60
    per_minute, extra = divmod(n, minutes)
    t0 = time.perf_counter()
    written = 0
    hour_rows: dict[tuple[int, str, int, str], Rollup] = {}
    db.execute("BEGIN")
    for m in range(minutes):
        minute = start_ms + m * MINUTE_MS
        count = per_minute + (1 if m < extra else 0)
        events = _minute_events(minute, count, written, rng)
        written += count
        db.executemany(insert, [event_to_row(e, SYNCED) for e in events])
        rows = []
        for key, r in rollup_events(events).items():
            if key[0] == MINUTE_MS:
                rows.append((*key, *rollup_to_row(r)))
            else:
                acc = hour_rows.get(key)
                if acc is None:
                    acc = hour_rows[key] = Rollup()
                acc.merge(r)
        db.executemany(ROLLUP_INSERT, rows)
        if (m + 1) % 60 == 0:  # the hour is complete
            db.executemany(
                ROLLUP_INSERT,
                [(*k, *rollup_to_row(r, percentiles=True)) for k, r in hour_rows.items()],
            )
            hour_rows.clear()
            db.execute("COMMIT")
            db.execute("BEGIN")
            if (m + 1) % (24 * 60) == 0:
                rate = written / (time.perf_counter() - t0)
                print(
                    f"  day {(m + 1) // 1440}/{days}: {written:,} events ({rate:,.0f}/s)",
                    flush=True,
                )
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - t0


async def _migrate(path: Path) -> None:
    s = SqliteStorage(path)
    await s.open()
    await s.close()


def _check_same(fast: Any, slow: Any) -> None:
    assert len(fast.buckets) == len(slow.buckets), (len(fast.buckets), len(slow.buckets))
    for a, b in zip([fast, *fast.buckets], [slow, *slow.buckets], strict=True):
        for name in (
            "total_requests",
            "failed_requests",
            "total_input_tokens",
            "total_cost_micros",
        ):
            assert getattr(a, name) == getattr(b, name), name
        assert a.models_used == b.models_used
        assert (a.duration_ms.p50, a.duration_ms.p99) == (b.duration_ms.p50, b.duration_ms.p99)
        assert (a.ttft_ms.p95, a.duration_ms.max) == (b.ttft_ms.p95, b.duration_ms.max)


async def _timed_aggregate(
    storage: Any, start: int, end: int, runs: int
) -> tuple[list[float], Any]:
    times = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await aggregate(storage, start, end, group_by="model", window="1h")
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


async def bench_sqlite(path: Path, start: int, end: int, raw: bool) -> Any:
    storage = SqliteStorage(path)
    await storage.open()
    try:
        times, fast = await _timed_aggregate(storage, start, end, 7)
        print(
            f"aggregate from rollups (SQLite):   median {statistics.median(times):8.1f} ms   "
            f"min {min(times):8.1f} ms   ({len(fast.buckets):,} buckets, "
            f"{fast.total_requests:,} requests)"
        )
        if raw:
            t0 = time.perf_counter()
            slow = await aggregate(storage, start, end, group_by="model", window="1h", source="raw")
            raw_ms = (time.perf_counter() - t0) * 1000
            _check_same(fast, slow)
            print(
                f"same aggregate, full raw scan:            {raw_ms:10,.0f} ms   "
                f"rollups are {raw_ms / statistics.median(times):,.0f}x faster (answers equal)"
            )
        day_end = start + DAY_MS
        t0 = time.perf_counter()
        rows = size = 0
        async for chunk in export(storage, start, day_end, "csv"):
            size += len(chunk)
            rows += chunk.count(b"\n")
        secs = time.perf_counter() - t0
        print(
            f"CSV export of one day:             {rows - 1:,} rows in {secs:.2f} s = "
            f"{(rows - 1) / secs:,.0f} rows/s ({size / secs / 1e6:.1f} MB/s)"
        )
        return fast
    finally:
        await storage.close()


def _sqlite_rows(path: Path, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cur = db.execute(sql)
        while batch := cur.fetchmany(50_000):
            yield batch
    finally:
        db.close()


async def bench_postgres(
    url: str, path: Path, start: int, end: int, events: bool, fast: Any
) -> None:
    import asyncpg

    from llmtally.storage.postgres import PostgresStorage

    schema = f"llmtally_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        storage = PostgresStorage(url, schema=schema)
        await storage.open()
        try:
            t0 = time.perf_counter()
            async with storage.pool.acquire() as conn:
                cols = ["period_ms", "dim", "start_ms", "value"]
                cols += ROLLUP_INSERT.split("(")[1].split(")")[0].split(", ")[4:]
                for batch in _sqlite_rows(path, f"SELECT {', '.join(cols)} FROM rollups"):
                    await conn.copy_records_to_table("rollups", records=batch, columns=cols)
                copied = "rollups"
                if events:
                    for batch in _sqlite_rows(path, f"SELECT {', '.join(COLUMNS)} FROM events"):
                        await conn.copy_records_to_table("events", records=batch, columns=COLUMNS)
                    copied += " and events"
                await conn.execute("ANALYZE")
            print(f"copied {copied} to PostgreSQL in {time.perf_counter() - t0:.0f} s")
            times, result = await _timed_aggregate(storage, start, end, 7)
            _check_same(result, fast)
            print(
                f"aggregate from rollups (PostgreSQL): median {statistics.median(times):6.1f} ms   "
                f"min {min(times):8.1f} ms   (answer equals SQLite's)"
            )
        finally:
            await storage.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument(
        "--db", type=Path, help="reuse (or keep) this SQLite file; else a temporary one"
    )
    ap.add_argument("--no-raw", action="store_true", help="skip the full raw scan")
    ap.add_argument(
        "--pg",
        default=os.environ.get(
            "LLMTALLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL URL, or 'none'",
    )
    ap.add_argument("--pg-skip-events", action="store_true", help="copy only rollups to PostgreSQL")
    args = ap.parse_args()
    day0 = (int(time.time() * 1000) // DAY_MS - args.days) * DAY_MS
    tmp = None if args.db else tempfile.TemporaryDirectory(prefix="llmtally-bench-")
    path = args.db or Path(tmp.name) / "query.db"  # type: ignore[union-attr]
    try:
        _run(args, path, day0)
    finally:
        if tmp is not None:
            tmp.cleanup()  # the file is large: never left behind


def _run(args: argparse.Namespace, path: Path, day0: int) -> None:
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, sqlite {sqlite3.sqlite_version}"
    )
    if not path.exists():
        print(f"generating {args.events:,} events over {args.days} days into {path}")
        secs = generate(path, args.events, day0, args.days)
        print(f"generated in {secs:.0f} s ({args.events / secs:,.0f} events/s, rollups included)")
    start, end = day0, day0 + args.days * DAY_MS
    import uvloop

    fast = uvloop.run(bench_sqlite(path, start, end, raw=not args.no_raw))
    if args.pg != "none":
        uvloop.run(bench_postgres(args.pg, path, start, end, not args.pg_skip_events, fast))


if __name__ == "__main__":
    main()

"""The storage contract, on SQLite and PostgreSQL alike: dedupe, rollups written with the
events (once per event id), checkpoint + replay, the outbox, keyset queries, retention."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import asyncpg
import pytest

from llmtally.analysis.stats import StatsDelta
from llmtally.events import LlmRequestCompleted, LlmRequestFailed
from llmtally.storage.base import EventFilter, QueryStorage
from llmtally.storage.rollups import HOUR_MS, MINUTE_MS, rollup_from_row
from llmtally.storage.rows import REFUSED, SYNCED

from .backends import BACKENDS, open_storage
from .factory import T0, lifecycle, random_requests, request

FAR = T0 + 10 * 86_400_000


async def _rollup_totals(s: QueryStorage, period: int, dim: str) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for _, value, stored in await s.scan_rollups(period, dim, 0, FAR, limit=100_000):
        r = rollup_from_row(stored)
        prev = out.get(value, (0, 0, 0, 0))
        out[value] = tuple(
            a + b
            for a, b in zip(
                prev, (r.requests, r.failed_requests, r.input_tokens, r.cost_nanos), strict=True
            )
        )
    return out


def _expected(events: list, key) -> dict[str, tuple[int, ...]]:  # type: ignore[no-untyped-def]
    out: dict[str, tuple[int, ...]] = {}
    for e in events:
        p = e.payload
        if not isinstance(p, LlmRequestCompleted | LlmRequestFailed):
            continue
        k = key(e)
        prev = out.get(k, (0, 0, 0, 0))
        out[k] = (
            prev[0] + 1,
            prev[1] + isinstance(p, LlmRequestFailed),
            prev[2] + p.input_tokens,
            prev[3] + p.cost_nanos,
        )
    return out


async def test_ingest_stores_each_event_once_and_rolls_up_only_new_ones(
    storage: QueryStorage,
) -> None:
    batch = random_requests(50, seed=1, start_ms=T0, span_ms=3 * HOUR_MS)
    first = await storage.ingest([*batch, batch[0]])  # a repeat inside the batch
    assert len(first.inserted) == 50
    assert first.duplicates == 1
    again = await storage.ingest(batch[:20])
    assert again.inserted == []
    assert again.duplicates == 20
    assert await storage.count_events() == 50
    assert await storage.count_pending() == 0
    expected = _expected(batch, lambda e: e.payload.model)
    assert await _rollup_totals(storage, MINUTE_MS, "model") == expected
    assert await _rollup_totals(storage, HOUR_MS, "model") == expected


async def test_write_batch_retry_rolls_up_once(storage: QueryStorage) -> None:
    batch = [*random_requests(30, seed=2, start_ms=T0, span_ms=HOUR_MS), lifecycle(T0)]
    await storage.write_batch(batch)
    await storage.write_batch(batch)  # the commit outcome was unknown: retried
    await storage.write_batch([*batch[:5], *random_requests(3, seed=3, start_ms=T0, span_ms=10)])
    assert await storage.count_events() == 34
    assert await storage.count_pending() == 33
    stored = await storage.snapshot()
    expected = _expected(stored, lambda e: "")
    assert await _rollup_totals(storage, HOUR_MS, "") == expected
    assert expected[""][0] == 33


@pytest.mark.parametrize(
    ("dim", "key"),
    [
        pytest.param("provider", lambda e: e.payload.provider, id="provider"),
        pytest.param("agent", lambda e: e.agent_id or "", id="agent"),
        pytest.param("provider_id", lambda e: e.payload.provider_id or "", id="provider_id"),
        pytest.param("endpoint", lambda e: e.payload.endpoint or "", id="endpoint"),
        pytest.param(
            "status",
            lambda e: "failure" if isinstance(e.payload, LlmRequestFailed) else "success",
            id="status",
        ),
    ],
)
async def test_every_facet_sums_to_the_events(storage: QueryStorage, dim: str, key) -> None:  # type: ignore[no-untyped-def]
    events = random_requests(80, seed=4, start_ms=T0 - 30 * MINUTE_MS, span_ms=2 * HOUR_MS)
    await storage.write_batch(events[:40])
    await storage.ingest(events[40:])
    assert await _rollup_totals(storage, MINUTE_MS, dim) == _expected(events, key)
    assert await _rollup_totals(storage, HOUR_MS, dim) == _expected(events, key)


async def test_rollup_rows_keep_exact_min_max_and_the_mix(storage: QueryStorage) -> None:
    events = [
        request(T0 + 1, duration_ms=5.0, endpoint="/v1/a"),
        request(T0 + 2, duration_ms=500.0, model="gpt-4o", endpoint="/v1/a"),
        request(T0 + 3, duration_ms=None, ttft_ms=0.0, model="claude", provider="anthropic"),
    ]
    await storage.write_batch(events[:1])
    await storage.write_batch(events[1:])  # read-merge-write of the same rows
    [(start, value, stored)] = await storage.scan_rollups(MINUTE_MS, "", T0, T0 + MINUTE_MS)
    assert (start, value) == (T0, "")
    r = rollup_from_row(stored)
    assert (r.duration.count, r.duration.min, r.duration.max, r.duration.sum) == (
        2,
        5.0,
        500.0,
        505.0,
    )
    assert (r.ttft.count, r.ttft.min, r.ttft.bins.zero) == (3, 0.0, 1)
    assert r.models == {"gpt-4o-mini": 1, "gpt-4o": 1, "claude": 1}
    assert r.providers == {"openai": 2, "anthropic": 1}
    assert r.endpoints == {"/v1/a": 2}


async def test_scan_rollups_pages_by_start_then_value(storage: QueryStorage) -> None:
    events = random_requests(60, seed=5, start_ms=T0, span_ms=20 * MINUTE_MS)
    await storage.ingest(events)
    everything = await storage.scan_rollups(MINUTE_MS, "model", T0, T0 + HOUR_MS, limit=10_000)
    pages, after = [], None
    while page := await storage.scan_rollups(
        MINUTE_MS, "model", T0, T0 + HOUR_MS, after=after, limit=7
    ):
        pages.extend(page)
        after = (page[-1][0], page[-1][1])
    assert [(t, v) for t, v, _ in pages] == [(t, v) for t, v, _ in everything]
    assert [(t, v) for t, v, _ in everything] == sorted((t, v) for t, v, _ in everything)


async def test_checkpoint_plus_replay(storage: QueryStorage) -> None:
    first = random_requests(20, seed=6, start_ms=T0, span_ms=HOUR_MS)
    await storage.write_batch(first, StatsDelta().add_all(first))
    later = random_requests(7, seed=7, start_ms=T0, span_ms=HOUR_MS)
    await storage.write_batch(later)
    loaded = await storage.load_totals()
    expected = StatsDelta().add_all(first + later)
    assert loaded.series.keys() == expected.series.keys()
    for key, t in expected.series.items():
        assert loaded.series[key].counters() == t.counters()


async def test_outbox_pending_in_stored_order_and_mark(storage: QueryStorage) -> None:
    events = [request(T0 + 1000 - i) for i in range(6)]  # stored order != time order
    await storage.write_batch([*events, lifecycle(T0)])
    assert [e.event_id for e in await storage.pending(4)] == [e.event_id for e in events[:4]]
    assert await storage.mark([e.event_id for e in events[:2]], SYNCED) == 2
    assert await storage.mark([events[2].event_id], REFUSED) == 1
    assert await storage.mark([events[0].event_id], SYNCED) == 0
    assert await storage.count_pending() == 3
    assert [e.synced for e in await storage.snapshot(2)] == [True, True]


async def test_events_round_trip_with_streaming_detail(storage: QueryStorage) -> None:
    ev = request(T0, endpoint="/v1/chat/completions", itl_mean_ms=12.5, output_tokens_per_s=80.0)
    failed = request(T0 + 1, failed=True)
    local = lifecycle(T0 + 2)
    await storage.write_batch([ev, failed, local])
    assert await storage.snapshot() == [ev, failed, local]
    assert await storage.drain() == [ev, failed, local]
    assert await storage.count_events() == 0
    assert await _rollup_totals(storage, HOUR_MS, "")  # drain keeps the rollups
    await storage.clear()
    assert await _rollup_totals(storage, HOUR_MS, "") == {}


async def test_query_events_filters(storage: QueryStorage) -> None:
    events = random_requests(120, seed=8, start_ms=T0, span_ms=HOUR_MS)
    await storage.ingest(events)
    await storage.write_batch([lifecycle(T0 + 5)])
    window = EventFilter(start_ms=T0 + 600_000, end_ms=T0 + 2_400_000)

    def expect(pred) -> list[str]:  # type: ignore[no-untyped-def]
        chosen = [
            e for e in events if window.start_ms <= e.timestamp_ms < window.end_ms and pred(e)
        ]
        return [e.event_id for e in sorted(chosen, key=lambda e: (e.timestamp_ms, e.event_id))]

    async def got(**kw: object) -> list[str]:
        flt = EventFilter(start_ms=window.start_ms, end_ms=window.end_ms, **kw)  # type: ignore[arg-type]
        return [e.event_id for e in await storage.query_events(flt, limit=1000)]

    assert await got() == expect(lambda e: True)
    assert await got(model="gpt-4o") == expect(lambda e: e.payload.model == "gpt-4o")
    assert await got(provider="anthropic") == expect(lambda e: e.payload.provider == "anthropic")
    assert await got(agent_id="agent-b") == expect(lambda e: e.agent_id == "agent-b")
    assert await got(provider_id="key-1") == expect(lambda e: e.payload.provider_id == "key-1")
    assert await got(success=False) == expect(lambda e: isinstance(e.payload, LlmRequestFailed))
    assert await got(event_type="llm_request_completed", agent_id="agent-a") == expect(
        lambda e: not isinstance(e.payload, LlmRequestFailed) and e.agent_id == "agent-a"
    )
    everything = EventFilter(start_ms=0, end_ms=FAR)
    [local] = await storage.query_events(
        EventFilter(start_ms=0, end_ms=FAR, event_type="router_started")
    )
    assert local.event_type == "router_started"
    assert len(await storage.query_events(everything, limit=1000)) == 121


async def test_keyset_pages_are_stable_under_concurrent_inserts(storage: QueryStorage) -> None:
    events = random_requests(60, seed=9, start_ms=T0, span_ms=HOUR_MS)
    same_ms = [request(T0 + 1234) for _ in range(5)]  # ties on the timestamp
    await storage.ingest(events + same_ms)
    flt = EventFilter(start_ms=T0, end_ms=T0 + HOUR_MS)
    seen: list[str] = []
    after = None
    late: list = []
    while page := await storage.query_events(flt, after=after, limit=9):
        seen.extend(e.event_id for e in page)
        after = (page[-1].timestamp_ms, page[-1].event_id)
        if len(late) < 6:
            # Meanwhile a collector stores more: one before the cursor, one after it.
            more = [request(after[0] - 1), request(min(after[0] + 1, T0 + HOUR_MS - 1))]
            late.extend(more)
            await storage.ingest(more)
    assert len(seen) == len(set(seen))  # nothing twice
    first_pass = {e.event_id for e in events + same_ms}
    assert first_pass <= set(seen)  # nothing skipped
    assert {e.event_id for e in late[1::2]} <= set(seen)  # later events past the cursor: reached


@pytest.mark.parametrize("backend", BACKENDS)
async def test_expire_deletes_old_rows_in_chunks_and_keeps_the_outbox(
    tmp_path: Path, backend: str
) -> None:
    day = 86_400_000
    async with open_storage(backend, tmp_path, raw_ttl_ms=10 * day, rollup_ttl_ms=20 * day) as s:
        now = T0 + 100 * day
        old = random_requests(25, seed=10, start_ms=now - 15 * day, span_ms=day)
        very_old = random_requests(5, seed=11, start_ms=now - 25 * day, span_ms=day)
        fresh = random_requests(5, seed=12, start_ms=now - day, span_ms=day)
        unsynced_old = request(now - 15 * day)
        await s.ingest(old + very_old + fresh)
        await s.write_batch([unsynced_old])  # pending: never expired
        before = len(await s.scan_rollups(MINUTE_MS, "", 0, FAR * 10, limit=100_000))
        result = await s.expire(now, chunk_size=4)
        assert result.events == 30, backend
        remaining = await s.snapshot()
        assert {e.event_id for e in remaining} == {e.event_id for e in fresh} | {
            unsynced_old.event_id
        }
        minute_rows = await s.scan_rollups(MINUTE_MS, "", 0, FAR * 10, limit=100_000)
        assert all(t >= now - 20 * day for t, _, _ in minute_rows)
        assert 0 < len(minute_rows) < before
        assert result.rollups > 0
        assert (await s.expire(now)).events == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_writers_share_one_database(tmp_path: Path, backend: str) -> None:
    """Two storages on one database (two collectors): overlapping batches, at once."""
    async with open_storage(backend, tmp_path) as a:
        if backend != "postgres":
            b: QueryStorage = type(a)(tmp_path / "storage.db")  # type: ignore[call-arg]
        else:
            b = type(a)(a.dsn, schema=a.schema)  # type: ignore[attr-defined, call-arg]
        await b.open()
        try:
            events = random_requests(400, seed=13, start_ms=T0, span_ms=10 * MINUTE_MS)
            counts: Counter[str] = Counter()

            async def send(s: QueryStorage, lo: int) -> None:
                for i in range(lo, lo + 300, 50):
                    r = await s.ingest(events[i : i + 50])
                    counts.update(e.event_id for e in r.inserted)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, a, 0)
                tg.start_soon(send, b, 100)  # 200 events overlap
            assert set(counts.values()) == {1}
            assert await a.count_events() == 400
            assert await _rollup_totals(a, HOUR_MS, "") == _expected(events, lambda e: "")
        finally:
            await b.close()


async def test_a_lock_wait_past_the_busy_timeout_is_transient(tmp_path: Path) -> None:
    """PostgreSQL: a writer blocked on a rollup row fails fast with a SQLSTATE the
    collector answers with 503 (so the syncer retries), not a hang or a 4xx."""
    from llmtally.server.failures import is_transient

    async with open_storage("postgres", tmp_path, busy_timeout_ms=100) as s:
        await s.ingest([request(T0)])
        async with s.pool.acquire() as other, other.transaction():  # type: ignore[attr-defined]
            await other.execute("SELECT * FROM rollups FOR UPDATE")
            with pytest.raises(asyncpg.PostgresError) as info:
                await s.ingest([request(T0 + 1)])
        assert is_transient(info.value), repr(info.value)
        assert await s.ingest([request(T0 + 2)])  # and it works again once the lock is gone

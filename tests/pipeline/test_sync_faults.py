"""The syncer against a real HTTP server whose answers are scripted (``FakeCollector``).

Every case checks the outcome that matters: each event arrives exactly once (or is
dropped and counted), nothing is lost, the router's calls are unaffected. Backoff waits
go through an injected ``RecordedSleep``, so retries take no real time; sequencing is by
``flush``/``sync_now`` and the collector's own notifications, never by sleeping.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from llmtally import EventStore, SyncConfig
from llmtally.pipeline.sync import SyncHooks
from llmtally.storage import MemoryStorage, SqliteStorage
from llmtally.storage.base import ExpireResult
from llmtally.storage.rows import PENDING, REFUSED, SYNCED

from .fake_collector import FakeCollector, RecordedSleep, Reply

TOKEN = "sync-token-5e1f9a"
NOW = 1_700_000_000.0  # the injected wall clock (unix seconds)


def make_store(
    path: Path | None,
    url: str,
    sleep: RecordedSleep,
    *,
    storage: MemoryStorage | None = None,
    **config: Any,
) -> EventStore:
    """A store syncing to ``url`` only when told (huge interval and threshold) unless
    ``config`` says otherwise; jitter is fixed at 0 (the factor 0.5 + 0.5 = 1)."""
    settings: dict[str, Any] = {
        "sync_interval": 3_600.0,
        "batch_threshold": 1_000_000,
        "timeout": 5.0,
    }
    settings.update(config)
    return EventStore(
        path,
        batch_linger=0.0,
        storage=storage,
        sync=SyncConfig(url, TOKEN, **settings),
        sync_hooks=SyncHooks(sleep=sleep, random=lambda: 0.5, wall_clock=lambda: NOW),
    )


async def record(store: EventStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ev = await store.record_llm_completed("gpt-4o-mini", input_tokens=10 + i, output_tokens=i)
        assert ev is not None
        ids.append(ev.event_id)
    return ids


def sync_states(path: Path) -> Counter[int]:
    """``sync_state -> rows`` among request events, read beside the store (WAL)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT sync_state, count(*) FROM events WHERE event_type LIKE 'llm_request_%' "
            "GROUP BY sync_state"
        ).fetchall()
    finally:
        db.close()
    return Counter(dict(rows))


def assert_stored_once(fake: FakeCollector, ids: list[str]) -> None:
    assert set(fake.stored) == set(ids)
    assert len(fake.stored) == len(ids)


async def test_500_twice_then_200_delivers_every_event_once(db_path: Path) -> None:
    sleep = RecordedSleep()
    fake = FakeCollector([Reply.status_code(500), Reply.status_code(500)])
    async with fake, make_store(db_path, fake.url, sleep) as store:
        ids = await record(store, 25)
        first = await store.sync_now()
        assert (first.sent, first.failed, first.accepted) == (25, 25, 0)
        await fake.wait_for(stored=25)  # the syncer retries on its own after backing off
        await store.sync_now()  # after the round in flight: its marks are done
        assert_stored_once(fake, ids)
        assert [r.status for r in fake.requests] == [500, 500, 200]
        assert all(fake.arrivals[i] == 1 for i in ids)
        assert sleep.calls == [1.0, 2.0]  # min_backoff doubling, jitter factor 1
        s = store.stats()
        assert s.sync_status == "ok"
        assert s.sync["failed_attempts"] == 2
        assert s.sync["accepted"] == 25
        assert store.unsynced_count() == 0
    assert sync_states(db_path) == {SYNCED: 25}


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param("2", 2.0, id="delta-seconds"),
        pytest.param(
            format_datetime(datetime.fromtimestamp(NOW + 5, UTC), usegmt=True), 5.0, id="http-date"
        ),
        pytest.param("86400", 300.0, id="clamped-to-max_retry_after"),
    ],
)
async def test_retry_after_is_the_minimum_wait(
    db_path: Path, retry_after: str, expected: float
) -> None:
    sleep = RecordedSleep()
    fake = FakeCollector([Reply.status_code(429, {"Retry-After": retry_after})])
    async with fake, make_store(db_path, fake.url, sleep, min_backoff=0.1) as store:
        ids = await record(store, 12)
        assert (await store.sync_now()).failed == 12
        await fake.wait_for(stored=12)
        await store.sync_now()
        assert sleep.calls == [expected]  # waited at least Retry-After, not the 0.1 s backoff
        assert [r.status for r in fake.requests] == [429, 200]
        assert_stored_once(fake, ids)


async def test_400_drops_the_batch_counts_it_and_later_batches_flow(db_path: Path) -> None:
    sleep = RecordedSleep()
    fake = FakeCollector([Reply.status_code(400, body=b'{"error":"bad"}')])
    async with fake, make_store(db_path, fake.url, sleep, max_batch=10) as store:
        ids = await record(store, 25)
        result = await store.sync_now()
        assert (result.sent, result.dropped, result.accepted, result.failed) == (25, 10, 15, 0)
        later = await record(store, 5)
        assert (await store.sync_now()).accepted == 5
        assert_stored_once(fake, ids[10:] + later)
        s = store.stats()
        assert s.sync["dropped"] == 10
        assert s.sync_status == "ok"
        assert store.unsynced_count() == 0
        assert sleep.calls == []  # a drop is final: no backoff
    assert sync_states(db_path) == {SYNCED: 20, REFUSED: 10}


async def test_413_splits_the_batch_and_everything_arrives(db_path: Path) -> None:
    fake = FakeCollector(max_batch=7)
    async with fake, make_store(db_path, fake.url, RecordedSleep(), max_batch=50) as store:
        ids = await record(store, 50)
        result = await store.sync_now()
        assert (result.sent, result.accepted, result.dropped, result.failed) == (50, 50, 0, 0)
        assert_stored_once(fake, ids)
        assert all(fake.arrivals[i] == 1 for i in ids)
        assert all(len(r.event_ids) <= 7 for r in fake.requests if r.status == 200)
        splits = store.stats().sync["splits"]
        assert splits >= 3
        more = await record(store, 20)
        assert (await store.sync_now()).accepted == 20
        assert store.stats().sync["splits"] == splits  # batches now fit: no more 413
        assert_stored_once(fake, ids + more)


async def test_a_single_event_still_too_large_is_dropped_and_counted(db_path: Path) -> None:
    fake = FakeCollector(max_batch=0)  # refuses every request with 413
    async with fake, make_store(db_path, fake.url, RecordedSleep()) as store:
        await record(store, 3)
        result = await store.sync_now()
        assert (result.sent, result.dropped, result.accepted) == (3, 3, 0)
        assert store.stats().sync["dropped"] == 3
        assert store.unsynced_count() == 0
        assert fake.stored == {}
    assert sync_states(db_path) == {REFUSED: 3}


async def test_rejected_events_are_refused_and_never_resent(db_path: Path) -> None:
    sleep = RecordedSleep()
    fake = FakeCollector()
    async with fake, make_store(db_path, fake.url, sleep) as store:
        ids = await record(store, 5)
        fake.script.append(Reply.ok(rejected=[ids[2]]))
        result = await store.sync_now()
        assert (result.accepted, result.rejected, result.failed) == (4, 1, 0)
        await store.sync_now()
        assert len(fake.requests) == 1
        assert store.stats().sync["rejected"] == 1
        assert store.unsynced_count() == 0
    assert sync_states(db_path) == {SYNCED: 4, REFUSED: 1}


async def test_stored_then_dropped_connection_is_retried_and_stored_once(db_path: Path) -> None:
    fake = FakeCollector([Reply.store_then_drop()])
    async with fake, make_store(db_path, fake.url, RecordedSleep()) as store:
        ids = await record(store, 10)
        first = await store.sync_now()
        assert first.failed == 10
        await fake.wait_for(requests=2)
        second = await store.sync_now()  # the retry round, or one after it
        assert [r.kind for r in fake.requests] == ["store_then_drop", "ok"]
        assert fake.requests[0].event_ids == fake.requests[1].event_ids  # same ids, resent
        assert_stored_once(fake, ids)
        assert all(fake.arrivals[i] == 2 for i in ids)
        s = store.stats()
        assert s.sync["duplicates"] == 10
        assert s.sync["connection_errors"] == 1
        assert second.failed == 0
        assert store.unsynced_count() == 0


async def test_a_hanging_collector_times_out_and_recording_goes_on(db_path: Path) -> None:
    fake = FakeCollector([Reply.hang()])
    store = make_store(db_path, fake.url, RecordedSleep(), timeout=0.5, batch_threshold=10)
    async with fake, store:
        ids = await record(store, 10)  # the threshold starts a round: it hangs
        await fake.wait_for(requests=1)
        # The router keeps recording while the sync waits on the collector.
        ids += await record(store, 300)
        await store.flush()
        assert store.stats().sync["timeouts"] == 0  # still hanging meanwhile
        assert store.dropped_count() == 0
        result = await store.sync_now()  # after the timeout and the retry
        assert (result.sent, result.accepted) == (310, 310)
        s = store.stats()
        assert s.sync["timeouts"] == 1
        assert s.sync_status == "ok"
        assert_stored_once(fake, ids)
        assert store.unsynced_count() == 0


async def test_collector_down_for_a_while_then_up_gets_everything_once(db_path: Path) -> None:
    sleep = RecordedSleep(cap=0.01)  # really wait a little: the syncer keeps retrying
    fake = FakeCollector(listening=False)
    async with fake, make_store(db_path, fake.url, sleep) as store:
        ids = await record(store, 40)
        result = await store.sync_now()
        assert result.failed == 40
        assert store.stats().sync_status == "retrying"
        await sleep.wait_calls(3)  # three failed retries while down
        await fake.start()
        await fake.wait_for(stored=40)
        await store.sync_now()
        assert_stored_once(fake, ids)
        assert all(fake.arrivals[i] == 1 for i in ids)
        s = store.stats()
        assert s.sync["connection_errors"] >= 3
        assert s.sync_status == "ok"
        assert store.unsynced_count() == 0


async def test_leaving_the_store_makes_a_last_sync(db_path: Path) -> None:
    fake = FakeCollector()
    async with fake:
        async with make_store(db_path, fake.url, RecordedSleep()) as store:
            ids = await record(store, 15)
        assert_stored_once(fake, ids)
    assert sync_states(db_path) == {SYNCED: 15}


async def test_leaving_is_bounded_when_the_collector_hangs(db_path: Path) -> None:
    fake = FakeCollector([Reply.hang()])
    async with fake:
        store = make_store(db_path, fake.url, RecordedSleep(), shutdown_timeout=0.2)
        with anyio.fail_after(5):
            async with store:
                await record(store, 15)
        assert store.stats().sync["requests"] == 1
    assert sync_states(db_path) == {PENDING: 15}  # kept for the next start


async def test_memory_store_syncs_from_its_bounded_outbox() -> None:
    fake = FakeCollector()
    storage = MemoryStorage(max_pending=10)
    async with fake, make_store(None, fake.url, RecordedSleep(), storage=storage) as s:
        ids = await record(s, 30)
        await s.flush()
        assert s.unsynced_count() == 10
        assert s.stats().dropped_by_cause["outbox_full"] == 20
        assert (await s.sync_now()).accepted == 10
        assert_stored_once(fake, ids[20:])  # the oldest pending fell out of the bound
        assert s.unsynced_count() == 0


def stored_rows(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        db.close()


async def test_max_pending_events_bounds_the_disk_while_the_collector_is_down(
    db_path: Path,
) -> None:
    sleep = RecordedSleep(cap=0.01)
    fake = FakeCollector(listening=False)
    store = EventStore(
        db_path,
        batch_linger=0.0,
        max_pending_events=50,
        sync=SyncConfig(fake.url, TOKEN, sync_interval=3_600.0, batch_threshold=1_000_000),
        sync_hooks=SyncHooks(sleep=sleep, random=lambda: 0.5, wall_clock=lambda: NOW),
    )
    async with fake, store:
        accepted = [
            ev.event_id
            for i in range(80)
            if (ev := await store.record_llm_completed("gpt-4o-mini", input_tokens=i)) is not None
        ]
        await store.flush()
        assert len(accepted) == 50  # the router's calls returned; 30 were dropped
        s = store.stats()
        assert s.dropped_by_cause == {"pending_limit": 30}
        assert store.unsynced_count() == 50
        assert stored_rows(db_path) == 50  # the disk holds no more than the bound
        assert not store.record_nowait(
            (await store.snapshot_events(1))[0]  # any event: the bound comes first
        )
        assert (await store.sync_now()).failed == 50  # down: the syncer keeps retrying
        await sleep.wait_calls(2)
        await fake.start()  # the collector comes back: the outbox drains
        await fake.wait_for(stored=50)
        await store.sync_now()
        assert store.unsynced_count() == 0
        later = await record(store, 10)  # recording resumes
        assert (await store.sync_now()).accepted == 10
        assert_stored_once(fake, accepted + later)
        assert store.stats().dropped_by_cause == {"pending_limit": 31}


class _WatchedExpiry(SqliteStorage):
    """A real SQLite storage whose ``next_pass()`` waits for a retention pass that begins
    after the call (the store runs them on its own timer and announces none)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._wanted: anyio.Event | None = None

    async def expire(self, now_ms: int, *, chunk_size: int = 2_000) -> ExpireResult:
        wanted, self._wanted = self._wanted, None
        result = await super().expire(now_ms, chunk_size=chunk_size)
        if wanted is not None:
            # Set before returning: the store counts the deleted rows as soon as this
            # returns, with no await in between, so a woken waiter sees its new count.
            wanted.set()
        return result

    async def next_pass(self) -> None:
        self._wanted = wanted = anyio.Event()
        with anyio.fail_after(10):
            await wanted.wait()


async def test_retention_prunes_synced_rows_and_keeps_pending_ones(db_path: Path) -> None:
    fake = FakeCollector()
    old = int(NOW * 1000) - 40 * 86_400_000  # older than the 30-day raw TTL
    storage = _WatchedExpiry(db_path)
    store = EventStore(
        storage=storage,
        batch_linger=0.0,
        retention_interval=0.05,
        clock=lambda: int(NOW * 1000),
        sync=SyncConfig(fake.url, TOKEN, sync_interval=3_600.0, batch_threshold=1_000_000),
        sync_hooks=SyncHooks(sleep=RecordedSleep(), random=lambda: 0.5, wall_clock=lambda: NOW),
    )
    async with fake, store:
        for i in range(10):
            await store.record_llm_completed("gpt-4o-mini", input_tokens=i, timestamp_ms=old)
        assert (await store.sync_now()).accepted == 10
        for i in range(5):  # old but never synced: the outbox keeps them
            await store.record_llm_completed("gpt-4o-mini", input_tokens=i, timestamp_ms=old)
        await store.record_llm_completed("gpt-4o-mini", input_tokens=1)  # recent
        await store.flush()
        await storage.next_pass()  # one that began with every row written
        assert stored_rows(db_path) == 6
        assert len(store) == 6
        assert store.unsynced_count() == 6
        assert store.stats().total_requests == 16  # statistics are kept

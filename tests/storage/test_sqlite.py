"""SqliteStorage: versioned migrations, WAL, dedupe on ingest, checkpoint + replay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmtally import EventStore
from llmtally._ids import new_event_id
from llmtally.analysis.stats import StatsDelta
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, RouterStarted
from llmtally.storage import MemoryStorage, SqliteStorage
from llmtally.storage.rows import COLUMNS, PENDING, REFUSED, SYNCED, event_to_row, row_to_event
from llmtally.storage.sqlite import MIGRATIONS, Synchronous


def _ev(i: int = 1, *, failed: bool = False) -> AnalyticsEvent:
    if failed:
        payload: object = LlmRequestFailed(
            model="m", provider="p", error_code="e", error_message="msg", status_code=500
        )
    else:
        payload = LlmRequestCompleted(
            model="m", provider="p", input_tokens=i, cost_nanos=i * 10, duration_ms=float(i)
        )
    return AnalyticsEvent(event_id=new_event_id(), timestamp_ms=i, payload=payload, agent_id="a")  # type: ignore[arg-type]


async def test_open_creates_schema_in_wal_and_records_the_version(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    try:
        assert await s.schema_version() == len(MIGRATIONS)
        async with s.db.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
    finally:
        await s.close()
    s2 = SqliteStorage(db_path)  # reopening applies nothing twice
    await s2.open()
    assert await s2.schema_version() == len(MIGRATIONS)
    await s2.close()


@pytest.mark.parametrize(("setting", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_the_durability_setting_reaches_sqlite(
    db_path: Path, setting: Synchronous, level: int
) -> None:
    """``EventStore(synchronous=...)`` is SQLite's own ``PRAGMA synchronous`` in WAL mode:
    NORMAL survives a process crash (``test_crash_recovery``), FULL also a power loss."""
    async with EventStore(db_path, synchronous=setting) as store:
        storage = store._storage  # the pragma is per connection: ask the store's own
        assert isinstance(storage, SqliteStorage)
        async with storage.db.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == level  # type: ignore[index]


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    await s.close()
    db = sqlite3.connect(db_path)
    db.execute("INSERT INTO schema_version (version) VALUES (999)")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this llmtally"):
        await SqliteStorage(db_path).open()


async def test_ingest_stores_each_event_id_once(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    try:
        batch = [_ev(i) for i in range(10)]
        first = await s.ingest(batch)
        assert len(first.inserted) == 10
        assert first.duplicates == 0
        again = await s.ingest([*batch[:5], _ev(99), batch[0]])
        assert [e.payload.input_tokens for e in again.inserted] == [99]  # type: ignore[union-attr]
        assert again.duplicates == 6
        assert await s.count_events() == 11
        assert await s.count_pending() == 0  # the collector stores what it got as synced
        new = _ev(100)
        twice = await s.ingest([new, new])  # repeated within a batch, stored nowhere yet
        assert twice.inserted == [new]
        assert twice.duplicates == 1
        # Absent values are SQL NULLs (bound through the None adapter on Python 3.11).
        async with s.db.execute(
            "SELECT typeof(error_code), typeof(extra), typeof(tags) FROM events"
        ) as cur:
            assert set(await cur.fetchall()) == {("null", "null", "null")}
    finally:
        await s.close()


async def test_write_is_idempotent_per_event_id(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    try:
        batch = [_ev(i) for i in range(5)]
        await s.write_batch(batch)
        await s.write_batch(batch)  # a retry after an unknown commit outcome
        assert await s.count_events() == 5
    finally:
        await s.close()


async def test_checkpoint_plus_replay_equals_the_stored_events(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    try:
        first = [_ev(i) for i in range(1, 20)]
        totals = StatsDelta().add_all(first)
        await s.write_batch(first, totals)
        later = [_ev(i) for i in range(20, 30)] + [_ev(failed=True)]
        await s.write_batch(later)  # no checkpoint: replayed on load
        loaded = await s.load_totals()
        expected = StatsDelta().add_all(first + later)
        assert loaded.series.keys() == expected.series.keys()
        for key, t in expected.series.items():
            assert loaded.series[key].counters() == t.counters()
            assert loaded.series[key].duration.bins == t.duration.bins
    finally:
        await s.close()


async def test_outbox_pending_and_mark(db_path: Path) -> None:
    s = SqliteStorage(db_path)
    await s.open()
    try:
        events = [_ev(i) for i in range(6)]
        local = AnalyticsEvent(
            event_id=new_event_id(), timestamp_ms=1, payload=RouterStarted(port=1)
        )
        await s.write_batch([*events, local])
        assert await s.count_pending() == 6
        assert [e.event_id for e in await s.pending(4)] == [e.event_id for e in events[:4]]
        assert await s.mark([e.event_id for e in events[:2]], SYNCED) == 2
        assert await s.mark([events[2].event_id], REFUSED) == 1
        assert await s.count_pending() == 3
        assert await s.mark([events[0].event_id], SYNCED) == 0
    finally:
        await s.close()


def test_rows_round_trip_every_event_type() -> None:
    for ev in (_ev(3), _ev(failed=True)):
        assert row_to_event(event_to_row(ev)) == ev
    local = AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1, payload=RouterStarted(port=9))
    assert row_to_event(event_to_row(local)) == local
    state = COLUMNS.index("sync_state")
    assert event_to_row(_ev(1))[state] == PENDING


async def test_memory_storage_bounds_history_and_outbox() -> None:
    m = MemoryStorage(history=5, max_pending=3)
    events = [_ev(i) for i in range(10)]
    await m.write_batch(events)
    assert await m.count_events() == 5
    assert m.evicted == 5
    assert await m.count_pending() == 3
    assert m.pending_dropped == 7
    assert [e.event_id for e in await m.pending(10)] == [e.event_id for e in events[-3:]]
    result = await m.ingest([events[-1], _ev(42)])
    assert result.duplicates == 1


def test_streaming_detail_round_trips_through_rows() -> None:
    payload = LlmRequestCompleted(
        model="m",
        provider="p",
        output_tokens=40,
        itl_mean_ms=12.5,
        itl_p95_ms=30.0,
        output_tokens_per_s=80.0,
        usage_missing=True,
        endpoint="/v1/chat/completions",
    )
    ev = AnalyticsEvent(event_id=new_event_id(), timestamp_ms=5, payload=payload)
    assert row_to_event(event_to_row(ev)) == ev

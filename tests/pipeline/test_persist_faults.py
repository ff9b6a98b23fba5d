"""Real storage faults: a database locked by another connection, a full disk.

The router's calls keep returning, nothing accepted is silently lost, persistence resumes
when the fault clears. Synchronisation is on the store's own warning log line, not sleeps.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from llmtally import EventStore
from llmtally.storage import SqliteStorage


class _LogEvent(logging.Handler):
    """Sets an anyio.Event when a record containing ``needle`` is logged."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def write_failures() -> Iterator[_LogEvent]:
    handler = _LogEvent("writing events failed")
    logger = logging.getLogger("llmtally")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        db.close()


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


async def test_a_locked_database_is_retried_and_nothing_is_lost(
    db_path: Path, write_failures: _LogEvent
) -> None:
    storage = SqliteStorage(db_path, busy_timeout_ms=20)
    async with EventStore(storage=storage, batch_linger=0.0) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        locker = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(200):  # the router keeps recording while the disk is stuck
                assert await store.record_llm_completed("gpt-4o", input_tokens=i) is not None
            with anyio.fail_after(10):
                await write_failures.seen.wait()
            assert store.stats().persist_errors >= 1
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        with anyio.fail_after(30):
            await store.flush()
        assert store.dropped_count() == 0
    assert _count(db_path) == 201
    assert _integrity(db_path) == "ok"


async def test_a_full_disk_is_retried_and_persistence_resumes(
    db_path: Path, write_failures: _LogEvent
) -> None:
    storage = SqliteStorage(db_path)
    async with EventStore(storage=storage, batch_linger=0.0) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        async with storage.db.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await storage.db.execute(f"PRAGMA max_page_count = {row[0]}")  # as SQLite's tests do
        for i in range(3_000):
            assert await store.record_llm_completed("gpt-4o", input_tokens=i) is not None
        with anyio.fail_after(10):
            await write_failures.seen.wait()
        await storage.db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        with anyio.fail_after(30):
            await store.flush()
        assert store.stats().total_requests == 3_001
    assert _count(db_path) == 3_001
    assert _integrity(db_path) == "ok"


async def test_a_disk_that_stays_full_loses_only_at_the_deadline_and_counts_it(
    db_path: Path, write_failures: _LogEvent, caplog: pytest.LogCaptureFixture
) -> None:
    storage = SqliteStorage(db_path)
    store = EventStore(storage=storage, batch_linger=0.0, drain_timeout=0.5)
    async with store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        async with storage.db.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await storage.db.execute(f"PRAGMA max_page_count = {row[0]}")
        for i in range(2_000):
            await store.record_llm_completed("gpt-4o", input_tokens=i)
        with anyio.fail_after(10):
            await write_failures.seen.wait()
    lost = store.stats().dropped_by_cause.get("persist_failed", 0)
    assert lost > 0
    assert _count(db_path) + lost == 2_001
    assert "could not be written before shutdown" in caplog.text
    assert _integrity(db_path) == "ok"

"""Real storage faults: a database locked by another connection, a full disk.

The router's calls keep returning, nothing accepted is silently lost, persistence resumes
when the fault clears. Synchronisation is on the store's own warning log line, not sleeps.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from llmtally import EventStore
from llmtally.storage import SqliteStorage
from llmtally.storage.sqlite import CorruptDatabaseError, Writer

from ..sqlite_files import count_events


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


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


# Holds the database in an exclusive transaction from another process until told to
# let go (a line on stdin), then commits and exits.
_LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
db.execute("BEGIN EXCLUSIVE")
print("LOCKED", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
"""


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_database_locked_by_another_process_is_retried_and_nothing_is_lost(
    db_path: Path, write_failures: _LogEvent, writer: Writer
) -> None:
    storage = SqliteStorage(db_path, busy_timeout_ms=20, writer=writer)
    async with EventStore(storage=storage, batch_linger=0.0) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        async with await anyio.open_process([sys.executable, "-c", _LOCKER, str(db_path)]) as p:
            assert p.stdout is not None and p.stdin is not None
            with anyio.fail_after(30):
                assert (await p.stdout.receive()).startswith(b"LOCKED")
            for i in range(200):  # the router keeps recording while the disk is stuck
                assert await store.record_llm_completed("gpt-4o", input_tokens=i) is not None
            with anyio.fail_after(10):
                await write_failures.seen.wait()
            write_failures.seen = anyio.Event()
            with anyio.fail_after(10):
                await write_failures.seen.wait()  # attempt 2: held far past busy_timeout
            assert store.stats().persist_errors >= 2  # the writer retries; it never dies
            await p.stdin.send(b"go\n")  # the other process lets go
            assert await p.wait() == 0
        with anyio.fail_after(30):
            await store.flush()
        assert store.dropped_count() == 0
        assert await store.record_llm_completed("gpt-4o", input_tokens=7) is not None
    assert count_events(db_path) == 202
    assert _integrity(db_path) == "ok"


async def test_a_full_disk_fills_the_buffer_drops_are_counted_and_writing_resumes(
    db_path: Path, write_failures: _LogEvent
) -> None:
    storage = SqliteStorage(db_path)
    async with EventStore(storage=storage, batch_linger=0.0, capacity=100) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        async with storage.db.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await storage.db.execute(f"PRAGMA max_page_count = {row[0]}")  # the disk is full
        accepted = 0
        for i in range(3_000):  # every call returns at once, even with nowhere to write
            accepted += await store.record_llm_completed("gpt-4o", input_tokens=i) is not None
        with anyio.fail_after(10):
            await write_failures.seen.wait()
        dropped = store.stats().dropped_by_cause
        assert dropped["buffer_full"] > 0
        assert accepted + dropped["buffer_full"] == 3_000
        await storage.db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        with anyio.fail_after(30):
            await store.flush()
        assert store.stats().total_requests == 1 + accepted
        assert await store.record_llm_completed("gpt-4o", input_tokens=7) is not None
    assert count_events(db_path) == 2 + accepted  # every accepted event is on disk
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
    assert count_events(db_path) == 3_001
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
    assert count_events(db_path) + lost == 2_001
    assert "could not be written before shutdown" in caplog.text
    assert _integrity(db_path) == "ok"


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _garbage_over_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\x5a" * 4096)


def _truncated(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_garbage_over_header, id="garbage-over-header"),
        pytest.param(_truncated, id="truncated"),
    ],
)
async def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_is_used(
    db_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    async with EventStore(db_path, batch_linger=0.0) as store:
        for i in range(1_000):  # many pages, so that truncation cuts into the tables
            await store.record_llm_completed("gpt-4o", input_tokens=i)
    damage(db_path)
    damaged = _bytes(db_path)
    with caplog.at_level(logging.WARNING, logger="llmtally"):
        async with EventStore(db_path, batch_linger=0.0) as store:
            assert store.stats().total_requests == 0  # a fresh database
            assert await store.record_llm_completed("gpt-4o", input_tokens=1) is not None
            await store.flush()
            assert store.stats().total_requests == 1
    aside = db_path.parent.glob("analytics.db.corrupt-*")
    main = [p for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert len(main) == 1 and _bytes(main[0]) == damaged  # kept for a post-mortem
    assert "is damaged" in caplog.text and str(main[0]) in caplog.text
    assert count_events(db_path) == 1
    assert _integrity(db_path) == "ok"


async def test_a_collector_storage_refuses_a_corrupt_file_and_leaves_it(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
    _garbage_over_header(db_path)
    storage = SqliteStorage(db_path)  # on_corrupt="raise": an operator decides
    with pytest.raises(CorruptDatabaseError):
        await storage.open()
    assert storage.moved_aside == []
    assert list(db_path.parent.glob("*.corrupt-*")) == []

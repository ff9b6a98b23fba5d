"""The SQLite writer process (``writer="process"``): same rows and rollups as the thread
writer, and real faults — the child killed, the child hung (SIGSTOP), the router killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from llmtally import EventStore
from llmtally.storage.rollups import DIMENSIONS, HOUR_MS, MINUTE_MS
from llmtally.storage.sqlite import SqliteStorage
from llmtally.storage.writer_process import WriterError, WriterProcess

from ..sqlite_files import count_events
from .factory import T0, lifecycle, random_requests

FAR = T0 + 1000 * HOUR_MS


def _writer(storage: SqliteStorage) -> WriterProcess:
    writer = storage._writer_process
    assert writer is not None
    return writer


async def _contents(s: SqliteStorage) -> tuple[list[object], list[object]]:
    events = await s.snapshot()
    rollups = [
        row
        for period in (MINUTE_MS, HOUR_MS)
        for dim in DIMENSIONS
        for row in await s.scan_rollups(period, dim, 0, FAR, limit=100_000)
    ]
    return events, rollups


async def test_the_process_writer_stores_what_the_thread_writer_stores(tmp_path: Path) -> None:
    batches = [
        random_requests(300, seed=21, start_ms=T0, span_ms=3 * HOUR_MS),
        [*random_requests(40, seed=22, start_ms=T0, span_ms=HOUR_MS), lifecycle(T0)],
    ]
    contents = []
    for writer in ("thread", "process"):
        s = SqliteStorage(tmp_path / f"{writer}.db", writer=writer)
        await s.open()
        try:
            for i, batch in enumerate(batches):
                await s.write_batch(batch)
                await s.write_batch(batch[: 10 * i + 5])  # a retry: stored already
            contents.append(await _contents(s))
        finally:
            await s.close()
    thread, process = contents
    assert len(process[0]) == 341
    assert len(process[1]) > 0
    assert process == thread


async def test_a_killed_writer_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "a.db", writer="process")
    async with EventStore(storage=storage, batch_linger=0.0) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        first = _writer(storage).pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for i in range(100):
            await store.record_llm_completed("gpt-4o", input_tokens=i)
        with anyio.fail_after(30):
            await store.flush()
        assert store.stats().persist_errors >= 1  # the write that met the dead child
        assert _writer(storage).starts == 2
        assert _writer(storage).pid not in (None, first)
        assert store.dropped_count() == 0
    assert count_events(tmp_path / "a.db") == 101


async def test_a_hung_writer_is_killed_after_its_timeout(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "a.db", writer="process")
    await storage.open()
    try:
        writer = _writer(storage)
        writer.timeout = 0.5
        events = random_requests(20, seed=23, start_ms=T0, span_ms=HOUR_MS)
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, but never answers
        with pytest.raises(WriterError, match="TimeoutError"):
            await storage.write_batch(events)
        assert writer.pid is None  # killed, not left stopped
        writer.timeout = 60.0  # a fresh child imports llmtally first: ~0.3 s, more when busy
        await storage.write_batch(events)
        assert writer.starts == 2
        assert await storage.count_events() == 20
    finally:
        await storage.close()


async def test_the_writer_outlives_a_ctrl_c_of_its_process_group(tmp_path: Path) -> None:
    """Ctrl-C signals the router's whole process group; the router then drains through
    its writer, so the writer must not die of the SIGINT."""
    storage = SqliteStorage(tmp_path / "a.db", writer="process")
    await storage.open()
    try:
        await storage.write_batch(random_requests(2, seed=25, start_ms=T0, span_ms=10))
        pid = _writer(storage).pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        await storage.write_batch(random_requests(3, seed=26, start_ms=T0, span_ms=10))
        assert (_writer(storage).pid, _writer(storage).starts) == (pid, 1)
        assert await storage.count_events() == 5
    finally:
        await storage.close()


async def test_a_refused_write_reports_sqlites_message(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "a.db", writer="process", busy_timeout_ms=10)
    await storage.open()
    try:
        other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(WriterError, match="OperationalError: database is locked"):
                await storage.write_batch(random_requests(3, seed=24, start_ms=T0, span_ms=10))
            assert _writer(storage).starts == 1  # a refusal is not a crash
        finally:
            other.execute("ROLLBACK")
            other.close()
        await storage.write_batch(random_requests(3, seed=24, start_ms=T0, span_ms=10))
        assert await storage.count_events() == 3
    finally:
        await storage.close()


_ROUTER = """
import sys, anyio
from llmtally import EventStore

async def main():
    async with EventStore(sys.argv[1], writer="process", batch_linger=0.0) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        print(store.storage._writer_process.pid, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def _exited(pid: int) -> None:
    """Return once ``pid`` (not our child) has exited: its pidfd turns readable."""
    fd = os.pidfd_open(pid)
    try:
        await anyio.wait_readable(fd)
    finally:
        os.close(fd)


async def test_the_writer_exits_when_its_router_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with await anyio.open_process([sys.executable, "-c", _ROUTER, str(db)]) as router:
        assert router.stdout is not None
        with anyio.fail_after(30):
            child = int((await router.stdout.receive()).decode().split()[0])
        router.kill()  # SIGKILL: no clean-up runs in the router
        await router.wait()
    with anyio.fail_after(10):
        await _exited(child)  # its input closed with the router: it ends by itself
    assert count_events(db) == 1


# --- the collector's ingest through the writer process ----------------------------------


async def test_ingest_in_the_child_dedupes_like_the_thread_writer(tmp_path: Path) -> None:
    batch = random_requests(120, seed=31, start_ms=T0, span_ms=3 * HOUR_MS)
    requests = [
        [*batch[:80], batch[3], batch[3]],  # repeats within the request
        [*batch[60:], batch[0]],  # 20 + 1 stored by the first already
        batch[:10],  # all stored
    ]
    answers, contents = [], []
    for writer in ("thread", "process"):
        s = SqliteStorage(tmp_path / f"{writer}.db", writer=writer)
        await s.open()
        try:
            results = [await s.ingest(r) for r in requests]
            answers.append([([e.event_id for e in r.inserted], r.duplicates) for r in results])
            contents.append(await _contents(s))
        finally:
            await s.close()
    thread, process = answers
    assert [len(ids) for ids, _ in process] == [80, 40, 0]
    assert [dup for _, dup in process] == [2, 21, 10]
    assert process[0][0] == [e.event_id for e in batch[:80]]  # in request order
    assert process == thread
    assert len(contents[1][0]) == 120
    assert contents[1] == contents[0]  # same rows (synced) and the same rollups


async def test_a_writer_killed_between_ingests_is_replaced_unnoticed(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "a.db", writer="process")
    await storage.open()
    try:
        events = random_requests(30, seed=32, start_ms=T0, span_ms=HOUR_MS)
        assert len((await storage.ingest(events[:10])).inserted) == 10
        writer = _writer(storage)
        process = writer._process
        assert process is not None
        process.kill()
        with anyio.fail_after(10):
            await process.wait()  # dead before the next request is sent
        result = await storage.ingest(events[5:])  # no error: sent again to a new child
        assert len(result.inserted) == 20
        assert result.duplicates == 5
        assert writer.starts == 2
        assert await storage.count_events() == 30
    finally:
        await storage.close()


async def test_a_busy_database_fails_an_ingest_as_transient(tmp_path: Path) -> None:
    from llmtally.server.failures import is_transient

    storage = SqliteStorage(tmp_path / "a.db", writer="process", busy_timeout_ms=10)
    await storage.open()
    try:
        events = random_requests(5, seed=33, start_ms=T0, span_ms=10)
        other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(WriterError, match="database is locked") as info:
                await storage.ingest(events)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert info.value.kind == "OperationalError"
        assert is_transient(info.value)  # the collector answers 503 + Retry-After
        assert _writer(storage).starts == 1  # a refusal is not a crash
        assert len((await storage.ingest(events)).inserted) == 5  # nothing was stored
    finally:
        await storage.close()


def test_only_a_locked_database_in_the_child_is_transient() -> None:
    from llmtally.server.failures import is_transient

    assert is_transient(WriterError("OperationalError: database is locked", "OperationalError"))
    assert not is_transient(WriterError("IntegrityError: locked", "IntegrityError"))
    assert not is_transient(WriterError("the writer process failed (EndOfStream: )"))

"""IngestWriter: requests queued behind a write are stored together, each id once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec
import pytest

from llmtally.events import AnalyticsEvent, decode_wire_event, from_wire
from llmtally.server.ingest_writer import IngestWriter
from llmtally.storage.base import IngestResult
from llmtally.storage.memory import MemoryStorage
from llmtally.storage.sqlite import SqliteStorage

from .collector import wire_event


def _events(*ids: int) -> list[AnalyticsEvent]:
    """Events with fixed ids (the same ``i`` gives the same id)."""
    return [
        from_wire(
            decode_wire_event(
                msgspec.json.encode(wire_event(i, event_id=f"0190a1b2-c3d4-7e5f-8a9b-{i:012x}"))
            )
        )
        for i in ids
    ]


class _Gated(MemoryStorage):
    """Memory storage whose first ``ingest`` waits for ``gate``; records each call."""

    def __init__(self, fail: Exception | None = None, poison: str | None = None) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.calls: list[list[str]] = []
        self.fail = fail
        self.poison = poison

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        self.calls.append([e.event_id for e in events])
        if len(self.calls) == 1:
            self.entered.set()
            await self.gate.wait()
        if self.fail is not None and len(events) > 0 and len(self.calls) == 2:
            raise self.fail
        if self.poison is not None and any(e.event_id == self.poison for e in events):
            raise ValueError("the database cannot hold this")
        return await super().ingest(events)


class _GatedSqlite(SqliteStorage):
    """SQLite storage (it answers with the very events it was given) whose first
    ``ingest`` waits for ``gate``; records each call."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.calls: list[list[str]] = []

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        self.calls.append([e.event_id for e in events])
        if len(self.calls) == 1:
            self.entered.set()
            await self.gate.wait()
        return await super().ingest(events)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


async def _run_three(
    storage: _Gated | _GatedSqlite, batches: list[list[AnalyticsEvent]]
) -> list[IngestResult | BaseException]:
    """The first batch starts writing; the others queue behind it; then it is let go."""
    writer = IngestWriter(storage, guard=anyio.Lock, is_transient=_transient)
    results: list[IngestResult | BaseException | None] = [None] * len(batches)

    async def one(i: int) -> None:
        try:
            results[i] = await writer.ingest(batches[i])
        except Exception as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0)
        await storage.entered.wait()
        for i in range(1, len(batches)):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()
        storage.gate.set()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.asyncio
async def test_queued_batches_are_written_together_and_each_id_counted_once() -> None:
    storage = _Gated()
    first, second, third = _events(1, 2), _events(3, 4, 3), _events(4, 5, 1)
    results = await _run_three(storage, [first, second, third])

    # One write for the first batch, one for the two that queued behind it: ids repeated
    # within the group reach the storage once (1 does: the storage knows it is stored).
    assert len(storage.calls) == 2
    assert storage.calls[1] == [e.event_id for e in _events(3, 4, 5, 1)]
    r1, r2, r3 = results
    assert isinstance(r1, IngestResult) and isinstance(r2, IngestResult)
    assert isinstance(r3, IngestResult)
    # 3 repeats within the second batch; 4 was the second's; 1 was stored by the first.
    assert [e.event_id for e in r2.inserted] == [e.event_id for e in _events(3, 4)]
    assert r2.duplicates == 1
    assert [e.event_id for e in r3.inserted] == [e.event_id for e in _events(5)]
    assert r3.duplicates == 2
    assert r1.duplicates == 0
    assert await storage.count_events() == 5


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "stored_before",
    [pytest.param(False, id="all-new"), pytest.param(True, id="one-stored-already")],
)
async def test_a_group_of_distinct_ids_answers_each_request_with_its_own_events(
    tmp_path: Path, stored_before: bool
) -> None:
    storage = _GatedSqlite(tmp_path / "collector.db")
    await storage.open()
    try:
        stored = _events(6)[0].event_id
        if stored_before:
            await SqliteStorage.ingest(storage, _events(6))  # not gated, not recorded
        batches = [_events(1, 2), _events(3, 4), _events(5, 6)]
        results = await _run_three(storage, batches)
        assert len(storage.calls) == 2  # the last two batches were written together
        for batch, result in zip(batches, results, strict=True):
            assert isinstance(result, IngestResult)
            new = [e for e in batch if not (stored_before and e.event_id == stored)]
            assert len(result.inserted) == len(new)
            assert all(a is b for a, b in zip(result.inserted, new, strict=True))
            assert result.duplicates == len(batch) - len(new)
        assert await storage.count_events() == 6
    finally:
        await storage.close()


@pytest.mark.asyncio
async def test_a_busy_database_fails_every_request_of_the_group() -> None:
    storage = _Gated(fail=TimeoutError("busy"))
    results = await _run_three(storage, [_events(1), _events(2), _events(3)])
    assert isinstance(results[0], IngestResult)
    assert all(isinstance(r, TimeoutError) for r in results[1:])
    assert len(storage.calls) == 2  # not retried one by one: the client retries


@pytest.mark.asyncio
async def test_a_refused_request_does_not_fail_its_neighbours() -> None:
    poison = _events(3)[0].event_id
    storage = _Gated(poison=poison)
    results = await _run_three(storage, [_events(1), _events(2), _events(3), _events(4)])
    assert isinstance(results[2], ValueError)
    ok = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, IngestResult) and len(r.inserted) == 1 for r in ok)
    assert await storage.count_events() == 3


@pytest.mark.asyncio
async def test_two_writers_on_a_concurrent_storage_lose_no_request() -> None:
    storage = MemoryStorage()
    writer = IngestWriter(storage, guard=anyio.Lock, is_transient=_transient, writers=2)
    batches = [_events(i, i + 1000) for i in range(40)]
    results: list[IngestResult] = []

    async def one(batch: list[AnalyticsEvent]) -> None:
        results.append(await writer.ingest(batch))

    async with anyio.create_task_group() as tg:
        for batch in batches:
            tg.start_soon(one, batch)
    assert sum(len(r.inserted) for r in results) == 80
    assert await storage.count_events() == 80

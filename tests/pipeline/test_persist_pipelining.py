"""The persister prepares batch k+1 while batch k is written, and still writes in order:
k+1 only after k has committed, retries included; a deadline counts both as lost. Behind
a backlog, a write takes up to ``BACKLOG_FACTOR`` times ``batch_size`` queued events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from llmtally.analysis.stats import StatsDelta
from llmtally.events import AnalyticsEvent
from llmtally.pipeline.messages import Barrier, PersistBatch
from llmtally.pipeline.persist import BACKLOG_FACTOR, persist
from llmtally.storage import SqliteStorage
from llmtally.storage.base import PreparedBatch

from ..storage.factory import T0, request


class _Recorded:
    """A real ``SqliteStorage`` whose writes wait for ``release(label)`` and may be made
    to fail; ``log`` is the order of what happened, per batch label (its first event's
    ``agent_id``)."""

    def __init__(self, inner: SqliteStorage) -> None:
        self.inner = inner
        self.log: list[tuple[str, str]] = []
        self.sizes: dict[str, int] = {}  # label -> events in its prepared batch
        self.fail: dict[str, int] = {}  # label -> writes of it that fail first
        self.gates: dict[str, anyio.Event] = {}
        self.seen: dict[tuple[str, str], anyio.Event] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _note(self, what: str, label: str) -> None:
        self.log.append((what, label))
        self.seen.setdefault((what, label), anyio.Event()).set()

    async def saw(self, what: str, label: str) -> None:
        with anyio.fail_after(10):
            await self.seen.setdefault((what, label), anyio.Event()).wait()

    def release(self, label: str) -> None:
        self.gates.setdefault(label, anyio.Event()).set()

    def prepare_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> PreparedBatch:
        self.sizes[_label(events)] = len(events)
        self._note("prepare", _label(events))
        return self.inner.prepare_batch(events, checkpoint)

    async def write_prepared(self, batch: PreparedBatch) -> None:
        label = _label(batch.events)
        self._note("write", label)
        await self.gates.setdefault(label, anyio.Event()).wait()
        if self.fail.get(label, 0):
            self.fail[label] -= 1
            raise OSError(f"injected: writing {label} failed")
        await self.inner.write_prepared(batch)
        self._note("commit", label)


def _label(events: Sequence[AnalyticsEvent]) -> str:
    return str(events[0].agent_id) if events else "checkpoint"


def _batch(label: str, n: int = 3) -> PersistBatch:
    events = [request(T0 + i, agent_id=label) for i in range(n)]
    delta = StatsDelta()
    delta.add_all(events)
    return PersistBatch(events, delta)


@asynccontextmanager
async def _persister(
    db_path: Path, lost: list[int], errors: list[int]
) -> AsyncIterator[tuple[_Recorded, Any, anyio.CancelScope]]:
    storage = SqliteStorage(db_path)
    await storage.open()
    recorded = _Recorded(storage)
    tx, rx = anyio.create_memory_object_stream[PersistBatch](10)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: persist(
                    rx,
                    recorded,
                    StatsDelta(),
                    batch_size=3,
                    on_committed=lambda events: None,
                    on_error=lambda exc, attempt: errors.append(attempt),
                    on_lost=lost.append,
                    retry_delay=lambda attempt: 0.0,
                    sleep=lambda seconds: anyio.lowlevel.checkpoint(),
                )
            )
            async with tx:
                yield recorded, tx, tg.cancel_scope
    finally:
        await storage.close()


async def test_the_next_batch_is_prepared_during_a_write_and_written_after_its_commit(
    db_path: Path,
) -> None:
    lost: list[int] = []
    errors: list[int] = []
    async with _persister(db_path, lost, errors) as (storage, tx, _):
        await tx.send(_batch("a"))
        await storage.saw("write", "a")  # a is being written (held at its gate)
        barrier = Barrier()
        b = _batch("b")
        b.barriers.append(barrier)
        await tx.send(b)
        await storage.saw("prepare", "b")  # prepared while a is still being written
        assert ("write", "b") not in storage.log
        storage.release("a")
        storage.release("b")
        storage.release("checkpoint")
        with anyio.fail_after(10):
            await barrier.done.wait()
        assert await storage.count_events() == 6
    assert storage.log.index(("commit", "a")) < storage.log.index(("write", "b"))
    assert storage.log.index(("prepare", "b")) < storage.log.index(("commit", "a"))
    assert lost == [] and errors == []


async def test_a_failing_write_is_retried_before_the_next_batch_is_written(
    db_path: Path,
) -> None:
    lost: list[int] = []
    errors: list[int] = []
    async with _persister(db_path, lost, errors) as (storage, tx, _):
        storage.fail["a"] = 2
        storage.release("a")
        storage.release("checkpoint")
        await tx.send(_batch("a"))
        await storage.saw("write", "a")
        b = _batch("b")
        barrier = Barrier()
        b.barriers.append(barrier)
        await tx.send(b)
        await storage.saw("prepare", "b")
        storage.release("b")
        with anyio.fail_after(10):
            await barrier.done.wait()
        assert await storage.count_events() == 6
    writes = [label for what, label in storage.log if what in ("write", "commit")]
    assert writes[:6] == ["a", "a", "a", "a", "b", "b"]  # 3 tries of a, its commit, then b
    assert errors == [1, 2] and lost == []


async def test_a_deadline_counts_the_batch_in_writing_and_the_one_prepared_as_lost(
    db_path: Path,
) -> None:
    lost: list[int] = []
    errors: list[int] = []
    async with _persister(db_path, lost, errors) as (storage, tx, cancel):
        storage.fail["a"] = 1_000_000  # a disk that stays broken
        storage.release("a")
        await tx.send(_batch("a"))
        await tx.send(_batch("b"))
        await storage.saw("prepare", "b")
        await storage.saw("write", "a")
        cancel.cancel()  # the shutdown deadline
    assert sorted(lost) == [3, 3]  # nothing held is dropped uncounted
    assert ("write", "b") not in storage.log  # b never overtook a


async def test_behind_a_backlog_a_write_takes_more_than_batch_size_queued_events(
    db_path: Path,
) -> None:
    lost: list[int] = []
    errors: list[int] = []
    async with _persister(db_path, lost, errors) as (storage, tx, _):
        await tx.send(_batch("a"))
        await storage.saw("write", "a")  # a's write is held: the disk is slow
        await tx.send(_batch("b"))
        await storage.saw("prepare", "b")  # b waits for the writer, prepared
        later = [_batch(f"c{i}") for i in range(BACKLOG_FACTOR + 1)]  # queued behind b
        for batch in later:
            await tx.send(batch)
        barrier = Barrier()
        later[-1].barriers.append(barrier)
        for label in ("a", "b", "c0", f"c{BACKLOG_FACTOR}", "checkpoint"):
            storage.release(label)
        with anyio.fail_after(10):
            await barrier.done.wait()
        assert await storage.count_events() == 3 * (BACKLOG_FACTOR + 3)
    # batch_size is 3: b was taken alone (nothing else was queued), then the backlog in
    # as few writes as BACKLOG_FACTOR allows, each from what was already waiting.
    assert storage.sizes["b"] == 3
    assert storage.sizes["c0"] == 3 * BACKLOG_FACTOR
    assert storage.sizes[f"c{BACKLOG_FACTOR}"] == 3
    assert lost == [] and errors == []

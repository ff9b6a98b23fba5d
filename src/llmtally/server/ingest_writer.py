"""Group commit for the collector: concurrent ingest requests share one storage write.

While a write is in progress, the batches of the requests that arrive are queued; the
next write takes every queued batch (up to ``max_events`` events) in one
``storage.ingest`` call: one transaction, one rollup read-merge-write and one commit
for all of them, instead of one each. Each request still gets its own answer.

Exactly-once holds across the group: an event id that an earlier batch of the group (or
an earlier place in the same batch) already carries is counted as a duplicate of that
request without reaching the storage, so the ids the storage sees are distinct and its
answer maps back to each request by id.

A failure of a group's write is the failure of every request in it, with one exception:
when a group of several requests fails with a non-transient error, each request is
written again on its own, so that one request the storage refuses (a value the
database cannot hold, say) does not fail its neighbours.

``writers`` writes may be in progress at once (more than one only for a storage whose
transactions may overlap, PostgreSQL: one group's round trips then overlap the next
group's Python work). ``guard`` is entered around each write (the collector's shared
write lock, for a storage that must not be written by two callers at once). Writes are
shielded from cancellation: a transaction is never abandoned half-way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from itertools import chain
from operator import attrgetter, is_
from typing import Final

import anyio

from ..events import AnalyticsEvent
from ..storage.base import EventStorage, IngestResult

__all__ = ["DEFAULT_MAX_GROUP_EVENTS", "IngestWriter"]

DEFAULT_MAX_GROUP_EVENTS: Final = 5_000
"""Events written in one transaction at most (a batch larger than this goes alone)."""

_event_id: Final = attrgetter("event_id")


class _Job:
    __slots__ = ("done", "error", "events", "result", "taken")

    def __init__(self, events: Sequence[AnalyticsEvent]) -> None:
        self.events = events
        self.taken = False  # a writer has it
        self.done = anyio.Event()  # set once ``result`` or ``error`` is
        self.result: IngestResult | None = None
        self.error: BaseException | None = None


class IngestWriter:
    """Writes ingest batches, several requests' batches per transaction when they queue
    up; see the module docstring. ``is_transient`` tells a busy database (answered 503,
    retried by the client) from other errors."""

    def __init__(
        self,
        storage: EventStorage,
        *,
        guard: Callable[[], AbstractAsyncContextManager[object]],
        is_transient: Callable[[BaseException], bool],
        writers: int = 1,
        max_events: int = DEFAULT_MAX_GROUP_EVENTS,
    ) -> None:
        if writers < 1 or max_events < 1:
            raise ValueError("writers and max_events must be at least 1")
        self._storage = storage
        self._guard = guard
        self._is_transient = is_transient
        self._slots = anyio.Semaphore(writers)
        self._max_events = max_events
        self._queue: list[_Job] = []

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        """Store ``events`` (each id once) and report which were new, like
        ``EventStorage.ingest``; raises what the storage raised."""
        job = _Job(events)
        self._queue.append(job)
        try:
            # Writers take turns in arrival order (the semaphore is fair). The job is
            # often taken by an earlier writer, as part of its group: it then only
            # waits for that write.
            async with self._slots:
                if not job.taken:
                    await self._write(self._take_group())
        except BaseException:
            if not job.taken:  # cancelled while waiting: never written
                self._queue.remove(job)
            raise
        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _take_group(self) -> list[_Job]:
        """The queued jobs, oldest first, up to ``max_events`` events (at least one)."""
        queue = self._queue
        size = len(queue[0].events)
        n = 1
        while n < len(queue) and size + len(queue[n].events) <= self._max_events:
            size += len(queue[n].events)
            n += 1
        group, self._queue = queue[:n], queue[n:]
        for job in group:
            job.taken = True
        return group

    async def _write(self, group: list[_Job]) -> None:
        """Write ``group``; every job in it gets its result or error, then ``done``."""
        with anyio.CancelScope(shield=True):
            try:
                if len(group) == 1:
                    await self._write_alone(group[0])
                    return
                try:
                    await self._write_together(group)
                except Exception as exc:
                    if self._is_transient(exc):
                        for job in group:
                            job.error = exc
                        return
                    for job in group:  # isolate the request the storage refuses
                        await self._write_alone(job)
            finally:
                for job in group:
                    if job.result is None and job.error is None:
                        job.error = RuntimeError("ingest write did not complete")
                    job.done.set()

    async def _write_alone(self, job: _Job) -> None:
        try:
            async with self._guard():
                job.result = await self._storage.ingest(job.events)
        except Exception as exc:
            job.error = exc

    async def _write_together(self, group: list[_Job]) -> None:
        combined = list(chain.from_iterable(job.events for job in group))
        firsts: list[Sequence[AnalyticsEvent]]  # each job's events first seen in it
        if len(set(map(_event_id, combined))) == len(combined):
            firsts = [job.events for job in group]  # the common case: no id twice
        else:
            seen: set[str] = set()
            combined = []
            firsts = []
            for job in group:
                mine: list[AnalyticsEvent] = []
                for e in job.events:
                    if e.event_id not in seen:
                        seen.add(e.event_id)
                        mine.append(e)
                combined += mine
                firsts.append(mine)
        async with self._guard():
            result = await self._storage.ingest(combined)
        inserted = result.inserted
        if len(inserted) == len(combined) and all(map(is_, inserted, combined)):
            # Every event stored, and answered as given: no lookups by id.
            for job, first in zip(group, firsts, strict=True):
                job.result = IngestResult(list(first), len(job.events) - len(first))
            return
        stored = {e.event_id: e for e in inserted}
        for job, first in zip(group, firsts, strict=True):
            answer = [stored[e.event_id] for e in first if e.event_id in stored]
            job.result = IngestResult(inserted=answer, duplicates=len(job.events) - len(answer))

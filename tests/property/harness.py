"""Fault injection for the pipeline model (``test_pipeline_model.py``).

``FaultyStorage`` wraps the real ``SqliteStorage`` at the storage interface (ours) and
can stall writes (they wait at a gate, like a disk that stopped answering), fail them
(``abort``: a disk gone for good) or fail one *after* it committed (an I/O error whose
commit outcome the persister cannot know). ``GatedSleep`` is the syncer's injected
backoff sleep: a backoff lasts until the test lets it end — the syncer's clock advances
only when the model says so.
"""

from __future__ import annotations

from typing import Any

import anyio

from llmtally.storage import SqliteStorage
from llmtally.storage.base import PreparedBatch

__all__ = ["FaultyStorage", "GatedSleep"]


class FaultyStorage:
    """``SqliteStorage`` with scriptable write faults; everything else is delegated."""

    def __init__(self, inner: SqliteStorage) -> None:
        self.inner = inner
        self.aborted = False
        self.fail_after_commit = 0  # this many next writes commit, then raise
        self._gate: anyio.Event | None = None
        self._writing = 0
        self._idle = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def stalled(self) -> bool:
        return self._gate is not None

    async def write_prepared(self, batch: PreparedBatch) -> None:
        while self._gate is not None and not self.aborted:
            await self._gate.wait()  # inside the persister's shield: only we end it
        if self.aborted:
            raise OSError("injected: the disk is gone")
        self._writing += 1
        try:
            await self.inner.write_prepared(batch)
        finally:
            self._writing -= 1
            if not self._writing:
                self._idle.set()
                self._idle = anyio.Event()
        if self.fail_after_commit:
            self.fail_after_commit -= 1
            raise OSError("injected: I/O error after the commit")

    def stall(self) -> None:
        """Writes from now on wait (one already past the gate finishes: ``quiesce``)."""
        self._gate = anyio.Event()

    def unstall(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def abort(self) -> None:
        """Every write from now on fails, those waiting at the gate included."""
        self.aborted = True
        self.unstall()

    async def quiesce(self) -> None:
        """Wait until no write is in progress."""
        while self._writing:
            await self._idle.wait()


class GatedSleep:
    """The syncer's ``sleep``: records each delay, returns when ``release()`` is called."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.waiting = 0
        self._gate = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.waiting += 1
        try:
            await self._gate.wait()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        """End every backoff in progress (later ones wait again)."""
        gate, self._gate = self._gate, anyio.Event()
        gate.set()

"""Retention: ``run_retention`` expires on schedule and survives storage errors; the
collector app runs it in its lifespan and stops it at shutdown."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from llmtally.server import Auth, create_app
from llmtally.storage import SqliteStorage
from llmtally.storage.base import ExpireResult
from llmtally.storage.retention import run_retention

from ..storage.factory import T0, request


class _Recorder(SqliteStorage):
    """A real SQLite storage that records when ``expire`` runs (and can fail)."""

    def __init__(self, path: Path, fail: int = 0) -> None:
        super().__init__(path, raw_ttl_ms=1000)
        self.calls: list[int] = []
        self.fail = fail
        self.called = anyio.Event()

    async def expire(self, now_ms: int, *, chunk_size: int = 2_000) -> ExpireResult:
        self.calls.append(now_ms)
        self.called.set()
        if self.fail:
            self.fail -= 1
            raise OSError("disk I/O error")
        return await super().expire(now_ms, chunk_size=chunk_size)


async def test_expires_every_interval_and_logs_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = _Recorder(tmp_path / "r.db", fail=1)
    await storage.open()
    try:
        await storage.ingest([request(T0), request(T0 + 5_000)])
        slept: list[float] = []
        now = [T0 / 1000 + 3.0]

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds
            if len(slept) == 3:
                raise anyio.get_cancelled_exc_class()()

        with caplog.at_level(logging.INFO, "llmtally.storage.retention"):
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await run_retention(storage, interval_s=60, clock=lambda: now[0], sleep=sleep)
        assert slept == [60, 60, 60]
        assert storage.calls == [T0 + 3_000, T0 + 63_000, T0 + 123_000]
        assert "retention pass failed" in caplog.text  # the first pass: logged, not raised
        assert "deleted 2 events" in caplog.text
        assert await storage.count_events() == 0
    finally:
        await storage.close()


async def test_the_collector_lifespan_runs_retention(tmp_path: Path) -> None:
    storage = _Recorder(tmp_path / "c.db")
    app = create_app(storage, auth=Auth(insecure=True), own_storage=True, retention_interval_s=3600)
    async with app.router.lifespan_context(app):
        with anyio.fail_after(5):
            await storage.called.wait()
        assert storage.db is not None  # open while serving
    assert len(storage.calls) == 1
    with pytest.raises(RuntimeError, match="not open"):
        storage.db  # noqa: B018 - closed at shutdown


async def test_retention_can_be_turned_off(tmp_path: Path) -> None:
    storage = _Recorder(tmp_path / "c.db")
    app = create_app(
        storage,
        auth=Auth(insecure=True),
        own_storage=True,
        retention_interval_s=None,
        detect_interval_s=None,  # no other background task: nothing else to wait for
    )
    async with app.router.lifespan_context(app):
        # A retention task would call ``expire`` first thing, before it ever waits: once
        # every other task is blocked, it would have been called.
        await anyio.wait_all_tasks_blocked()
        assert storage.db is not None  # serving
    assert storage.calls == []

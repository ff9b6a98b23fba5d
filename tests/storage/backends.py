"""Open a storage of each backend for a test: SQLite on a real file, PostgreSQL in a fresh
schema on the real server (see ``pg.py``). Imported by the conftests that need it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from llmtally.storage.base import QueryStorage
from llmtally.storage.postgres import PostgresStorage
from llmtally.storage.sqlite import SqliteStorage

from . import pg

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("sqlite-process", id="sqlite-process"),  # writes in a child process
    pytest.param("postgres", id="postgres"),
]


@asynccontextmanager
async def open_storage(backend: str, tmp_path: Path, **kwargs: Any) -> AsyncIterator[QueryStorage]:
    """An open storage of ``backend`` (``"sqlite"``, ``"sqlite-process"``: its batches
    written by the writer process, or ``"postgres"``), closed on exit."""
    s: SqliteStorage | PostgresStorage
    if backend in ("sqlite", "sqlite-process"):
        writer = "process" if backend == "sqlite-process" else "thread"
        s = SqliteStorage(tmp_path / "storage.db", writer=writer, **kwargs)
        await s.open()
        try:
            yield s
        finally:
            await s.close()
        return
    async with pg.fresh_schema() as schema:
        s = PostgresStorage(pg.PG_URL, schema=schema, max_size=4, **kwargs)
        await s.open()
        try:
            yield s
        finally:
            await s.close()


@pytest_asyncio.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueryStorage]:
    """An open, empty storage of each backend."""
    async with open_storage(request.param, tmp_path) as s:
        yield s

"""Fixtures: one real collector process per module, and clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio

from .collector import INGEST_TOKEN, Collector, start_collector

# Small limits keep the size tests quick; a short busy timeout keeps the lock test quick.
MAX_BODY_BYTES = 1024 * 1024
BUSY_TIMEOUT_MS = 200


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A collector with ingest/read/admin tokens, shared by the tests of one module."""
    workdir: Path = tmp_path_factory.mktemp("collector")
    server = start_collector(
        workdir,
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--busy-timeout-ms",
        str(BUSY_TIMEOUT_MS),
    )
    try:
        yield server
    finally:
        code = server.terminate()
        assert code == 0, server.log_text()


@pytest_asyncio.fixture
async def anon_client(collector: Collector) -> AsyncIterator[httpx2.AsyncClient]:
    """A client without a token."""
    async with httpx2.AsyncClient(base_url=collector.url, timeout=10.0) as client:
        yield client


@pytest_asyncio.fixture
async def client(collector: Collector) -> AsyncIterator[httpx2.AsyncClient]:
    """A client holding an ingest token."""
    async with httpx2.AsyncClient(
        base_url=collector.url,
        timeout=10.0,
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    ) as client:
        yield client

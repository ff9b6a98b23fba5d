"""``llmtally serve --db postgresql://…``: two stateless collectors share one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from ..storage import pg
from .collector import EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, start_collector, wire_event


@pytest.fixture
def schema_url() -> Iterator[str]:
    """A ``postgresql://`` URL whose ``search_path`` is a fresh schema (dropped after).
    Sync: the collectors are processes, driven by a sync client."""
    name = asyncio.run(pg.create_schema())
    try:
        yield pg.schema_url(name)
    finally:
        asyncio.run(pg.drop_schema(name))


def test_two_collectors_share_one_postgres(tmp_path: Path, schema_url: str) -> None:
    a = start_collector(tmp_path / "a", db=schema_url)  # type: ignore[arg-type]
    b = start_collector(tmp_path / "b", db=schema_url)  # type: ignore[arg-type]
    try:
        now = int(time.time() * 1000)
        events = [wire_event(i, timestamp_ms=now - 60_000 + i) for i in range(200)]
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}

        def send(url: str, lo: int) -> int:
            accepted = 0
            with httpx2.Client(base_url=url, timeout=10.0, headers=auth) as c:
                for i in range(lo, lo + 150, 25):
                    r = c.post(EVENTS_PATH, json={"events": events[i : i + 25]})
                    assert r.status_code == 200, r.text
                    accepted += r.json()["accepted"]
            return accepted

        with ThreadPoolExecutor(2) as pool:  # 100 events go to both collectors at once
            accepted = sum(pool.map(send, [a.url, b.url], [0, 50]))
        assert accepted == 200
        with httpx2.Client(
            base_url=b.url, timeout=10.0, headers={"Authorization": f"Bearer {READ_TOKEN}"}
        ) as c:
            stats = c.get("/analytics/stats").json()
            assert (stats["backend_type"], stats["total_events"]) == ("postgresql", 200)
            agg = c.get("/analytics/aggregate", params={"group_by": "status", "window": "1h"})
            assert agg.status_code == 200, agg.text
            assert agg.json()["total_requests"] == 200
            assert agg.json()["failed_requests"] == sum(1 for i in range(200) if i % 7 == 6)
    finally:
        codes = (a.terminate(), b.terminate())
    assert codes == (0, 0), a.log_text() + b.log_text()
    assert "(db postgresql://" in a.log_text()

"""Processes killed with SIGKILL lose nothing and duplicate nothing.

A router killed after persisting: it runs in a subprocess (``router_process.py``) so that
it can really be killed — no ``__aexit__``, no last sync. A new store on the same file
then syncs every event to a real collector (``llmtally serve``), which must hold each
event id exactly once. A collector killed while batches are in flight and restarted on
the same database: the router keeps recording, retries, and the collector ends with
each event exactly once.
"""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import msgspec

from llmtally import EventStore, SyncConfig, SyncHooks
from tests.server.collector import INGEST_TOKEN, start_collector

ROUTER = Path(__file__).with_name("router_process.py")
EVENTS = 10_000
READY_TIMEOUT_S = 30.0


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The subprocess's next stdout line, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:  # polling a subprocess: bounded
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise AssertionError(f"router not ready (exit code {proc.poll()})")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            return proc.stdout.readline()


def _counts(db: Path, sql: str) -> tuple[int, ...]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return tuple(conn.execute(sql).fetchone())
    finally:
        conn.close()


def test_events_persisted_before_a_kill_are_synced_after_restart(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "collector")
    try:
        db = tmp_path / "router" / "analytics.db"
        proc = subprocess.Popen(
            [sys.executable, str(ROUTER), str(db), collector.url, INGEST_TOKEN, str(EVENTS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = _read_line(proc, READY_TIMEOUT_S)
        finally:
            proc.kill()  # SIGKILL: no shutdown, no last sync
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        assert line.split() == ["READY", str(EVENTS), "0"]
        assert _counts(db, "SELECT count(*) FROM events WHERE sync_state = 0") == (EVENTS,)
        assert _counts(collector.db, "SELECT count(*) FROM events") == (0,)  # never synced

        async def restart() -> None:
            config = SyncConfig(collector.url, INGEST_TOKEN, batch_threshold=10)
            async with EventStore(db, sync=config) as store:
                assert store.unsynced_count() == EVENTS
                await store.sync_now()  # after the round the restart itself began
                assert store.unsynced_count() == 0
                s = store.stats()
                assert s.sync["accepted"] == EVENTS
                assert s.sync["failed_attempts"] == 0
                assert s.total_requests == EVENTS

        anyio.run(restart)
        assert _counts(collector.db, "SELECT count(*), count(DISTINCT event_id) FROM events") == (
            EVENTS,
            EVENTS,
        )
        assert _counts(db, "SELECT count(*) FROM events WHERE sync_state = 0") == (0,)
    finally:
        assert collector.terminate() == 0, collector.log_text()


def test_a_collector_killed_mid_batch_and_restarted_gets_everything_once(
    tmp_path: Path,
) -> None:
    first = start_collector(tmp_path / "collector")
    db = tmp_path / "router" / "analytics.db"
    ids: list[str] = []

    async def route() -> None:
        config = SyncConfig(
            first.url,
            INGEST_TOKEN,
            batch_threshold=10,
            max_batch=200,
            min_backoff=0.05,
            max_backoff=0.2,
        )
        tap = _StoredTap(at_least=1_000)
        hooks = SyncHooks(transport=tap)
        async with EventStore(db, sync=config, overflow="block", sync_hooks=hooks) as store:
            for i in range(EVENTS):
                ev = await store.record_llm_completed("gpt-4o-mini", input_tokens=i)
                assert ev is not None
                ids.append(ev.event_id)
                if i == EVENTS // 2:
                    # Sync is running in the background, batch after batch: kill -9 the
                    # collector once it has stored some, so a batch is (almost surely)
                    # in flight — half written, or written and not yet answered.
                    with anyio.fail_after(60):
                        await tap.reached.wait()
                    await anyio.to_thread.run_sync(first.kill)
            await store.flush()
            # Restarted on the same port and database; the syncer's retries find it.
            second = await anyio.to_thread.run_sync(
                lambda: start_collector(tmp_path / "collector", db=first.db, port=first.port)
            )
            try:
                with anyio.fail_after(60):
                    while store.unsynced_count():
                        await store.sync_now()
                s = store.stats()
                assert s.sync["connection_errors"] + s.sync["timeouts"] >= 1
                assert store.dropped_count() == 0
            finally:
                assert second.terminate() == 0, second.log_text()

    anyio.run(route)
    total, distinct = _counts(first.db, "SELECT count(*), count(DISTINCT event_id) FROM events")
    assert (total, distinct) == (EVENTS, EVENTS)
    assert _counts(first.db, "PRAGMA integrity_check") == ("ok",)
    assert _counts(db, "PRAGMA integrity_check") == ("ok",)
    assert _counts(db, "SELECT count(*) FROM events WHERE sync_state = 0") == (0,)


class _StoredTap(httpx2.AsyncBaseTransport):
    """The network, plus ``reached``: set once the collector has answered 200 to batches
    holding ``at_least`` events in all (it answers after its commit: they are stored)."""

    def __init__(self, at_least: int) -> None:
        self._network = httpx2.AsyncHTTPTransport()
        self._left = at_least
        self.reached = anyio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._network.handle_async_request(request)
        if response.status_code == 200:
            self._left -= len(msgspec.json.decode(request.content)["events"])
            if self._left <= 0:
                self.reached.set()
        return response

    async def aclose(self) -> None:
        await self._network.aclose()

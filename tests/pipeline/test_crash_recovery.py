"""A router killed with SIGKILL after persisting loses nothing: the next start syncs it all.

The router runs in a subprocess (``router_process.py``) so that it can really be killed:
no ``__aexit__``, no last sync. A new store on the same file then syncs every event to
a real collector (``llmtally serve``), which must hold each event id exactly once.
"""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio

from llmtally import EventStore, SyncConfig
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

"""The syncer against the real collector (``llmtally serve`` in a subprocess)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmtally import EventStore, SyncConfig
from llmtally.pipeline.sync import SyncHooks
from tests.server.collector import INGEST_TOKEN, Collector, start_collector, stored_id_counts

from .fake_collector import RecordedSleep


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    server = start_collector(tmp_path_factory.mktemp("collector"))
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.log_text()


def _store(path: Path, url: str, token: str, sleep: RecordedSleep) -> EventStore:
    config = SyncConfig(url, token, sync_interval=3_600.0, batch_threshold=1_000_000)
    hooks = SyncHooks(sleep=sleep, random=lambda: 0.5)  # jitter factor 1
    return EventStore(path, batch_linger=0.0, sync=config, sync_hooks=hooks)


async def test_a_wrong_token_keeps_everything_pending_until_the_right_one_comes(
    db_path: Path, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-ingest-token-3c9d"
    sleep = RecordedSleep(gate=True)  # a config error backs off; it must not retry here
    ids: list[str] = []
    with caplog.at_level(logging.ERROR, logger="llmtally"):
        async with _store(db_path, collector.url, wrong, sleep) as store:
            for i in range(30):
                ev = await store.record_llm_completed("gpt-4o", input_tokens=i, output_tokens=1)
                assert ev is not None
                ids.append(ev.event_id)
            result = await store.sync_now()
            assert (result.sent, result.failed, result.dropped, result.accepted) == (30, 30, 0, 0)
            s = store.stats()
            assert s.sync_status == "config_error"
            assert s.sync["config_errors"] == 1
            assert s.sync["dropped"] == 0
            assert store.unsynced_count() == 30
            await sleep.wait_calls(1)
            assert sleep.calls == [30.0]  # straight to max_backoff; leaving ends the wait
    assert any("check server_url and ic_token" in r.getMessage() for r in caplog.records)
    assert all(wrong not in r.getMessage() for r in caplog.records)  # never the token
    assert stored_id_counts(collector.db, ids) == {}

    async with _store(db_path, collector.url, INGEST_TOKEN, RecordedSleep()) as store:
        assert store.unsynced_count() == 30
        result = await store.sync_now()
        assert (result.accepted, result.failed) == (30, 0)
        assert store.stats().sync_status == "ok"
        assert store.unsynced_count() == 0
    assert stored_id_counts(collector.db, ids) == dict.fromkeys(ids, 1)

"""The syncer's triggers, status and counters, through ``EventStore`` and an in-memory
HTTP transport (``httpx2.MockTransport``): quick, no sockets. Real-server faults are in
``test_sync_faults.py`` and ``test_sync_collector.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import msgspec
import pytest

from llmtally import ConfigurationError, EventStore, StoreClosedError, SyncConfig
from llmtally.events import AnalyticsEvent
from llmtally.pipeline.sync import SyncHooks, SyncResult
from llmtally.storage import MemoryStorage

from .fake_collector import RecordedSleep

TOKEN = "secret-token-77d2e1"
URL = "http://collector.test"


class Handler:
    """A scripted ``MockTransport`` handler: answers ``(status, headers, body)`` from the
    script, then 200 with the counts; records each request's event ids."""

    def __init__(self, script: Sequence[tuple[int, dict[str, str], bytes]] = ()) -> None:
        self.script = list(script)
        self.batches: list[list[str]] = []
        self.auth: list[str | None] = []
        self._changed = anyio.Event()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        events = msgspec.json.decode(request.content)["events"]
        self.batches.append([e["event_id"] for e in events])
        self.auth.append(request.headers.get("authorization"))
        self._changed.set()
        self._changed = anyio.Event()
        if self.script:
            status, headers, body = self.script.pop(0)
            return httpx2.Response(status, headers=headers, content=body)
        return httpx2.Response(200, json={"accepted": len(events), "duplicates": 0})

    async def wait_requests(self, n: int) -> None:
        with anyio.fail_after(10):
            while len(self.batches) < n:
                await self._changed.wait()


def make_store(
    handler: Callable[[httpx2.Request], httpx2.Response],
    path: Path | None = None,
    *,
    sleep: RecordedSleep | None = None,
    storage: MemoryStorage | None = None,
    **config: Any,
) -> EventStore:
    settings: dict[str, Any] = {"sync_interval": 3_600.0, "batch_threshold": 1_000_000}
    settings.update(config)
    hooks = SyncHooks(
        sleep=sleep or RecordedSleep(),
        random=lambda: 0.5,
        transport=httpx2.MockTransport(handler),
    )
    return EventStore(
        path,
        storage=storage,
        batch_linger=0.0,
        sync=SyncConfig(URL, TOKEN, **settings),
        sync_hooks=hooks,
    )


async def record(store: EventStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ev = await store.record_llm_failed("gpt-4o", error_code="timeout", input_tokens=i)
        assert ev is not None
        ids.append(ev.event_id)
    return ids


async def test_sync_now_posts_protocol_012_with_the_token(db_path: Path) -> None:
    handler = Handler()
    async with make_store(handler, db_path) as store:
        ids = await record(store, 3)
        await store.record_router_started(port=8080)  # lifecycle events stay local
        result = await store.sync_now()
        assert result == SyncResult(sent=3, accepted=3)
        assert handler.batches == [ids]
        assert handler.auth == [f"Bearer {TOKEN}"]
        s = store.stats()
        assert s.sync_status == "ok"
        assert s.unsynced_events == 0
        assert s.sync["requests"] == 1
        assert (await store.sync_now()) == SyncResult()  # nothing left: no request
        assert len(handler.batches) == 1


async def test_batch_threshold_starts_a_sync(db_path: Path) -> None:
    handler = Handler()
    async with make_store(handler, db_path, batch_threshold=5) as store:
        assert store.stats().sync_status == "idle"
        ids = await record(store, 5)
        await handler.wait_requests(1)
        assert sorted(i for b in handler.batches for i in b) == sorted(ids)


async def test_sync_interval_starts_a_sync(db_path: Path) -> None:
    handler = Handler()
    async with make_store(handler, db_path, sync_interval=0.02) as store:
        ids = await record(store, 2)
        await handler.wait_requests(1)
        assert [i for b in handler.batches for i in b] == ids


async def test_pending_rows_from_an_earlier_run_sync_at_start(db_path: Path) -> None:
    first = Handler()
    async with make_store(first, db_path, shutdown_timeout=0) as store:
        ids = await record(store, 6)  # below the threshold, no last round: left pending
    assert first.batches == []
    handler = Handler()
    async with make_store(handler, db_path, batch_threshold=5) as store:
        await handler.wait_requests(1)  # no new event needed: 6 >= 5 pending at start
        assert handler.batches == [ids]


async def test_a_backoff_is_not_bypassed_by_new_triggers(db_path: Path) -> None:
    handler = Handler([(503, {}, b"busy")])
    sleep = RecordedSleep(gate=True)
    store = make_store(handler, db_path, sleep=sleep, batch_threshold=5)
    async with store, anyio.create_task_group() as tg:
        ids = await record(store, 5)
        await sleep.wait_calls(1)  # the threshold round failed: backing off
        assert store.stats().sync_status == "retrying"
        results: list[SyncResult] = []

        async def call_sync_now() -> None:
            results.append(await store.sync_now())

        tg.start_soon(call_sync_now)
        ids += await record(store, 20)  # wake-ups past the threshold
        await store.flush()
        await anyio.wait_all_tasks_blocked()
        assert len(handler.batches) == 1 and results == []  # still waiting out the backoff
        sleep.open_gate()
    assert results == [SyncResult(sent=25, accepted=25)]
    assert [i for b in handler.batches[1:] for i in b] == ids


@pytest.mark.parametrize(
    ("status", "headers", "body", "sync_status", "counter"),
    [
        pytest.param(401, {}, b"", "config_error", "config_errors", id="401"),
        pytest.param(403, {}, b"", "config_error", "config_errors", id="403"),
        pytest.param(404, {}, b"", "config_error", "config_errors", id="404"),
        pytest.param(
            308,
            {"Location": "https://elsewhere.test/"},
            b"",
            "config_error",
            "config_errors",
            id="redirect-not-followed",
        ),
        pytest.param(
            200,
            {},
            b"<html>hello</html>",
            "config_error",
            "config_errors",
            id="2xx-not-a-collector",
        ),
        pytest.param(503, {}, b"", "retrying", "failed_attempts", id="503"),
        pytest.param(501, {}, b"", "ok", "dropped", id="501-drops"),
        pytest.param(422, {}, b"", "ok", "dropped", id="422-drops"),
    ],
)
async def test_status_and_counters_follow_the_rules(
    db_path: Path,
    status: int,
    headers: dict[str, str],
    body: bytes,
    sync_status: str,
    counter: str,
) -> None:
    handler = Handler([(status, headers, body)])
    async with make_store(handler, db_path, sleep=RecordedSleep(gate=True)) as store:
        await record(store, 4)
        result = await store.sync_now()
        s = store.stats()
        assert s.sync_status == sync_status
        assert s.sync[counter] >= 1
        dropped = counter == "dropped"
        assert result.dropped == (4 if dropped else 0)
        assert result.failed == (0 if dropped else 4)
        assert store.unsynced_count() == (0 if dropped else 4)


async def test_logs_name_the_problem_but_never_the_token(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f'{{"error": "bad token {TOKEN}"}}'.encode()
    handler = Handler([(403, {}, echo), (400, {}, echo)])
    with caplog.at_level(logging.WARNING, logger="llmtally"):
        async with make_store(handler, db_path, sleep=RecordedSleep()) as store:
            await record(store, 2)
            await store.sync_now()
            await handler.wait_requests(2)
            await store.sync_now()
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP 403" in m and "***" in m for m in messages)
    assert any("refused a batch of 2 events" in m for m in messages)
    assert all(TOKEN not in m for m in messages)
    assert TOKEN not in repr(store.sync_config)


async def test_a_failing_outbox_is_counted_and_retried() -> None:
    class FlakyOutbox(MemoryStorage):
        failures = 1

        async def pending(self, limit: int) -> list[AnalyticsEvent]:
            if self.failures:
                self.failures -= 1
                raise OSError("disk I/O error")
            return await super().pending(limit)

    handler = Handler()
    sleep = RecordedSleep()
    async with make_store(handler, storage=FlakyOutbox(), sleep=sleep) as store:
        ids = await record(store, 3)
        assert (await store.sync_now()).sent == 0
        assert store.stats().sync["storage_errors"] == 1
        await handler.wait_requests(1)  # retried after the backoff
        await store.sync_now()
        assert handler.batches == [ids]
        assert store.unsynced_count() == 0
        assert sleep.calls == [1.0]


async def test_sync_now_without_sync_or_before_open() -> None:
    store = EventStore()
    with pytest.raises(StoreClosedError):
        await store.sync_now()
    async with store:
        await record(store, 1)
        assert await store.sync_now() == SyncResult()
        s = store.stats()
        assert s.sync_status == "disabled"
        assert s.sync == {}
    assert await store.sync_now() == SyncResult()  # closed: nothing to do


def test_an_unusable_server_url_raises_at_construction() -> None:
    with pytest.raises(ConfigurationError):
        EventStore(sync=SyncConfig("http://", TOKEN))

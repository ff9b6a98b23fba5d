"""Regressions: one example per bug the property tests found (see ``test_recording.py``).

Each was a value the API accepted but SQLite or JSON could not hold: the persister then
retried the batch forever, so that one event silently stopped persistence of every
event after it (until shutdown counted them all as lost). Or an error that was not
``ValidationError`` escaped a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from llmtally import (
    AnalyticsEvent,
    Budget,
    EventStore,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    SyncConfig,
    ValidationError,
)
from llmtally._ids import new_event_id
from llmtally.storage import SqliteStorage
from tests.pipeline.fake_collector import FakeCollector, Reply

from .harness import FaultyStorage

MAX = 2**53 - 1


async def _still_persists(store: EventStore) -> None:
    """A valid event recorded after the refused one is written, without storage errors."""
    assert await store.record_llm_completed("gpt-4o-mini", input_tokens=1) is not None
    with anyio.fail_after(10):
        await store.flush()
    s = store.stats()
    assert s.persist_errors == 0
    assert s.total_requests == 1
    assert store.dropped_count() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"model": "gpt\ud800"}, id="surrogate-model"),
        pytest.param({"agent_id": "a\udfff"}, id="surrogate-agent"),
        pytest.param({"provider_id": "\ud800"}, id="surrogate-key"),
        pytest.param({"provider": "\ud800"}, id="surrogate-provider"),
        pytest.param({"timestamp_ms": 2**70}, id="huge-timestamp"),
        pytest.param({"input_tokens": MAX, "output_tokens": MAX}, id="cost-beyond-int64"),
    ],
)
async def test_values_sqlite_cannot_hold_are_refused_at_the_call(
    db_path: Path, kwargs: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"model": "gpt-4o", "input_tokens": 1, **kwargs}
    async with EventStore(db_path, drain_timeout=1.0) as store:
        with pytest.raises(ValidationError):
            await store.record_llm_completed(**args)
        await _still_persists(store)


async def test_a_lone_surrogate_in_an_error_message_is_repaired_not_fatal(db_path: Path) -> None:
    async with EventStore(db_path, drain_timeout=1.0) as store:
        ev = await store.record_llm_failed(
            "gpt-4o", error_code="upstream", error_message="bad \ud800 byte"
        )
        assert ev is not None
        assert isinstance(ev.payload, LlmRequestFailed)
        assert ev.payload.error_message == "bad \ufffd byte"
        await store.flush()
        assert store.stats().persist_errors == 0
        assert await store.snapshot_events() == [ev]


def _event(payload: Any = None, **envelope: Any) -> AnalyticsEvent:
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "timestamp_ms": 1_700_000_000_000,
        "payload": payload or LlmRequestCompleted(model="gpt-4o", provider="openai"),
        **envelope,
    }
    return AnalyticsEvent(**fields)


def _request(**fields: Any) -> LlmRequestCompleted:
    return LlmRequestCompleted(**{"model": "gpt-4o", "provider": "openai", **fields})


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(_event("not a payload"), id="payload-not-a-payload"),
        pytest.param(_event(_request(endpoint=object())), id="endpoint-object"),
        pytest.param(_event(_request(itl_mean_ms="slow")), id="itl-str"),
        pytest.param(_event(_request(usage_missing="yes")), id="usage_missing-str"),
        pytest.param(_event(_request(pricing_status="free")), id="pricing_status"),
        pytest.param(_event(_request(output_tokens_per_s=1e10)), id="rate-beyond-wire"),
        pytest.param(_event(_request(model="\ud800")), id="surrogate-model"),
        pytest.param(
            _event(
                LlmRequestFailed(model="m", provider="p", error_code="e", error_message=b"x")  # type: ignore[arg-type]
            ),
            id="message-bytes",
        ),
        pytest.param(
            _event(LlmRequestFailed(model="m", provider="p", error_code=7)),  # type: ignore[arg-type]
            id="error_code-int",
        ),
        pytest.param(_event(RouterStarted(port="80")), id="port-str"),  # type: ignore[arg-type]
        pytest.param(_event(timestamp_ms=2**64), id="timestamp-huge"),
        pytest.param(_event(synced=1), id="synced-int"),
        pytest.param(_event(event_id="not-a-uuid"), id="event_id-not-uuid"),
        pytest.param(_event(event_id=new_event_id().upper()), id="event_id-uppercase"),
    ],
)
async def test_prebuilt_events_are_checked_field_by_field(
    db_path: Path, event: AnalyticsEvent
) -> None:
    async with EventStore(db_path, drain_timeout=1.0) as store:
        with pytest.raises(ValidationError):
            store.record_nowait(event)
        with pytest.raises(ValidationError):
            await store.record(event)
        await _still_persists(store)


async def test_a_valid_prebuilt_event_is_still_accepted(db_path: Path) -> None:
    event = _event(_request(duration_ms=5, itl_mean_ms=1.5, endpoint="/v1/chat"))
    async with EventStore(db_path) as store:
        assert store.record_nowait(event) is True
        assert await store.snapshot_events() == [event]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"id": 123}, id="id-int"),
        pytest.param({"limit_micros": "100"}, id="limit-str"),
        pytest.param({"limit_micros": 1.5}, id="limit-float"),
        pytest.param({"limit_micros": 2**64}, id="limit-huge"),
        pytest.param({"thresholds": ("50",)}, id="threshold-str"),
        pytest.param({"timezone": 5}, id="timezone-int"),
        pytest.param({"scope": "agent_id", "scope_value": 7}, id="scope_value-int"),
    ],
)
def test_budgets_of_the_wrong_types_raise_validation_error(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Budget(**{"id": "b", "limit_micros": 1_000_000, **fields})


def test_decoding_a_budget_still_reports_msgspec_errors() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"id": "b", "limit_micros": 0}', type=Budget)


async def test_a_stream_with_absurd_token_counts_is_refused_at_the_call_and_still_recorded(
    db_path: Path,
) -> None:
    async with EventStore(db_path, drain_timeout=1.0) as store:
        async with store.track_stream("gpt-4o") as s:
            s.token(3)
            with pytest.raises(ValidationError):
                s.token(15_011_998_757_902)
            with pytest.raises(ValidationError):
                s.usage(input_tokens=MAX, output_tokens=MAX)
        assert s.event is not None
        assert s.event.payload.output_tokens == 3
        await store.flush()
        assert store.stats().persist_errors == 0


async def test_events_stranded_by_the_shutdown_deadline_are_counted_as_dropped(
    db_path: Path,
) -> None:
    # Found by the pipeline model: with the disk stuck through shutdown, the events still
    # in the ingest buffer or the aggregator when the deadline hit vanished uncounted
    # (only the batch the persister was retrying counted as ``persist_failed``).
    storage = FaultyStorage(SqliteStorage(db_path))
    store = EventStore(
        storage=storage,  # type: ignore[arg-type]
        capacity=8,
        batch_size=4,
        batch_linger=0.0,
        drain_timeout=0.2,
    )
    accepted = 0
    async with store:
        storage.stall()
        for i in range(40):
            accepted += await store.record_llm_completed("gpt-4o", input_tokens=i) is not None
            for _ in range(5):  # let the aggregator fill the persister's queue
                await anyio.lowlevel.checkpoint()
        storage.abort()  # the disk never comes back
    s = store.stats()
    assert store.unpersisted_count() == 0
    assert s.dropped_by_cause["persist_failed"] == accepted
    assert s.dropped_by_cause["buffer_full"] == 40 - accepted
    assert accepted > 8  # more than the ingest buffer holds: the queues behind it were full


async def test_a_shutdown_round_cut_short_still_counts_what_it_synced(db_path: Path) -> None:
    # Found by the pipeline model (long profile): the syncer added a round's counts to
    # ``stats().sync`` only when the round ended, so a shutdown round cut by its timeout
    # lost the counts of the batches it had already marked synced.
    config = SyncConfig(
        "http://127.0.0.1:1",  # replaced below
        "token-1",
        sync_interval=3_600.0,
        batch_threshold=1_000_000,
        max_batch=5,
        timeout=30.0,
        shutdown_timeout=0.3,
    )
    async with FakeCollector([Reply.ok(), Reply.hang()]) as fake:
        config = msgspec.structs.replace(config, server_url=fake.url)
        async with EventStore(db_path, sync=config, batch_linger=0.0) as store:
            for i in range(6):
                await store.record_llm_completed("gpt-4o-mini", input_tokens=i)
        # the last round: 5 events accepted, then the next request hangs past the timeout
        sync = store.stats().sync
        assert len(fake.stored) == 5
        assert (sync["sent"], sync["accepted"], sync["failed"]) == (6, 5, 1)
        assert store.unsynced_count() == 1

"""EventStore: the recording API, flush, stats, overflow, restart, shutdown, subscribers."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import anyio
import pytest

from llmtally import (
    AnalyticsEvent,
    EventStore,
    LlmRequestCompleted,
    RouterStopped,
    StoreClosedError,
    ValidationError,
)
from llmtally._ids import new_event_id


def _prebuilt(model: str = "gpt-4o-mini", **kw: object) -> AnalyticsEvent:
    payload = LlmRequestCompleted(model=model, provider="openai", **kw)  # type: ignore[arg-type]
    return AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1_000, payload=payload)


async def test_record_returns_the_accepted_event_with_cost(db_path: Path) -> None:
    async with EventStore(db_path, clock=lambda: 1_700_000_000_000) as store:
        ev = await store.record_llm_completed(
            "gpt-4o-mini",
            input_tokens=11,
            output_tokens=1,
            agent_id="agent-7",
            provider_id="key-1",
            duration_ms=812.0,
            ttft_ms=95.0,
        )
        assert ev is not None
        assert ev.timestamp_ms == 1_700_000_000_000
        assert ev.agent_id == "agent-7"
        assert isinstance(ev.payload, LlmRequestCompleted)
        assert ev.payload.provider == "openai"
        assert ev.payload.cost_nanos == 11 * 150 + 1 * 600  # $0.15 / $0.60 per MTok
        assert ev.payload.pricing_status == "priced"


async def test_stats_after_flush_equal_the_sums(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        expected_cost = 0
        for i in range(500):
            ev = await store.record_llm_completed(
                "claude-3-5-sonnet" if i % 2 else "gpt-4o-mini",
                input_tokens=100 + i,
                output_tokens=i,
                cached_input_tokens=i % 7,
                agent_id=f"agent-{i % 3}",
                duration_ms=10.0 + i,
            )
            assert ev is not None
            assert isinstance(ev.payload, LlmRequestCompleted)
            expected_cost += ev.payload.cost_nanos
        await store.record_llm_failed("gpt-4o", error_code="timeout", status_code=504)
        await store.record_llm_completed("no-such-model-anywhere", input_tokens=5, output_tokens=6)
        await store.flush()
        s = store.stats()
        assert s.total_requests == 502
        assert s.failed_requests == 1
        assert s.total_input_tokens == sum(100 + i for i in range(500)) + 5
        assert s.total_output_tokens == sum(range(500)) + 6
        assert s.total_cached_input_tokens == sum(i % 7 for i in range(500))
        assert s.total_cost_nanos == expected_cost
        assert s.total_cost_micros == (expected_cost + 500) // 1000
        assert s.unpriced_requests == 1
        assert s.unpriced_input_tokens == 5
        assert s.by_model["gpt-4o"].failed_requests == 1
        assert s.by_model["gpt-4o-mini"].requests == 250
        assert s.by_provider["anthropic"].requests == 250
        assert s.by_agent["agent-0"].requests == 167
        assert s.by_model["claude-3-5-sonnet"].duration_ms.count == 250
        assert len(store) == 502
        assert store.unsynced_count() == 502


async def test_unpriced_model_costs_zero_and_says_so(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        ev = await store.record_llm_completed("my-private-model", input_tokens=10, output_tokens=5)
        assert ev is not None and isinstance(ev.payload, LlmRequestCompleted)
        assert ev.payload.cost_nanos == 0
        assert ev.payload.pricing_status == "unpriced"
        assert ev.payload.provider == "unknown"


async def test_explicit_provider_skips_inference(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        ev = await store.record_llm_completed("gpt-4o", input_tokens=1, provider="azure")
        assert ev is not None and isinstance(ev.payload, LlmRequestCompleted)
        assert ev.payload.provider == "azure"


async def test_drop_newest_counts_every_drop_and_never_waits(db_path: Path) -> None:
    async with EventStore(db_path, capacity=10) as store:
        results = [store.record_nowait(_prebuilt()) for _ in range(25)]
        # The buffer holds 10; one more may go straight to the waiting aggregator.
        accepted = results.count(True)
        assert accepted in (10, 11)
        assert results[accepted:] == [False] * (25 - accepted)
        assert store.dropped_count() == 25 - accepted
        assert store.stats().dropped_by_cause == {"buffer_full": 25 - accepted}
        await store.flush()
        assert store.stats().total_requests == accepted
        assert len(store) == accepted


async def test_block_mode_applies_back_pressure_and_drops_nothing(db_path: Path) -> None:
    async with EventStore(db_path, capacity=4, overflow="block") as store:
        async with anyio.create_task_group() as tg:
            for p in range(5):

                async def produce(p: int = p) -> None:
                    for i in range(200):
                        assert (
                            await store.record_llm_completed(f"m-{p}", input_tokens=i) is not None
                        )

                tg.start_soon(produce)
        await store.flush()
        assert store.dropped_count() == 0
        assert store.stats().total_requests == 1_000


async def test_accepted_plus_dropped_is_attempted_under_concurrency(db_path: Path) -> None:
    attempted = 0
    accepted = 0
    async with EventStore(db_path, capacity=64) as store:
        async with anyio.create_task_group() as tg:

            async def produce(n: int) -> None:
                nonlocal attempted, accepted
                for i in range(n):
                    attempted += 1
                    if i % 3 == 0:
                        accepted += store.record_nowait(_prebuilt(input_tokens=1))
                    elif (
                        await store.record_llm_completed("gpt-4o-mini", input_tokens=1) is not None
                    ):
                        accepted += 1
                    if i % 50 == 0:
                        await anyio.lowlevel.checkpoint()

            for _ in range(8):
                tg.start_soon(produce, 700)
        await store.flush()
        s = store.stats()
        assert accepted + store.dropped_count() == attempted == 5_600
        assert s.total_requests == accepted
        assert s.total_input_tokens == accepted


async def test_reopening_restores_totals_and_per_model_stats(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        for i in range(300):
            await store.record_llm_completed(
                "gpt-4o-mini",
                input_tokens=i,
                output_tokens=1,
                agent_id="a",
                duration_ms=float(i + 1),
            )
        await store.record_llm_failed("claude-3-5-sonnet", error_code="overloaded")
        await store.flush()
        before = store.stats()
    async with EventStore(db_path) as store:
        after = store.stats()
        assert after.total_requests == before.total_requests == 301
        assert after.total_cost_nanos == before.total_cost_nanos
        assert after.by_model.keys() == before.by_model.keys()
        assert after.by_agent["a"].requests == 300
        assert after.by_provider == before.by_provider
        assert (
            after.by_model["gpt-4o-mini"].duration_ms == before.by_model["gpt-4o-mini"].duration_ms
        )
        assert len(store) == 301


async def test_restart_without_a_checkpoint_replays_the_events(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        for i in range(50):
            await store.record_llm_completed("gpt-4o", input_tokens=i)
        await store.flush()
        expected = store.stats()
    # Simulate a crash right after the events were written but before any checkpoint.
    db = sqlite3.connect(db_path)
    db.execute("DELETE FROM stats_checkpoint")
    db.commit()
    db.close()
    async with EventStore(db_path) as store:
        assert store.stats().total_input_tokens == expected.total_input_tokens
        assert store.stats().total_requests == 50


async def test_leaving_the_block_persists_everything_accepted(db_path: Path) -> None:
    async with EventStore(db_path, batch_linger=10.0) as store:
        for i in range(1_234):
            await store.record_llm_completed("gpt-4o-mini", input_tokens=i)
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1_234
    db.close()


async def test_an_exception_in_the_body_still_persists(db_path: Path) -> None:
    with pytest.raises(KeyError):
        async with EventStore(db_path, batch_linger=10.0) as store:
            for _ in range(100):
                await store.record_llm_completed("gpt-4o-mini", input_tokens=1)
            raise KeyError("router bug")
    async with EventStore(db_path) as store:
        assert len(store) == 100


async def test_cancellation_of_the_body_still_persists(db_path: Path) -> None:
    started = anyio.Event()

    async def router() -> None:
        async with EventStore(db_path, batch_linger=10.0) as store:
            for _ in range(100):
                await store.record_llm_completed("gpt-4o-mini", input_tokens=1)
            started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(router)
        await started.wait()
        tg.cancel_scope.cancel()
    async with EventStore(db_path) as store:
        assert len(store) == 100
        assert store.stats().total_requests == 100


@pytest.mark.parametrize("held", [5, 100])
async def test_cancelling_the_body_while_the_actors_hold_events_loses_none(
    db_path: Path, held: int
) -> None:
    """The cancellation of the body must not reach the actors before the store's exit
    shields them: the events they hold (in the aggregator's linger, the persister's
    batch) are written, not counted lost."""
    with anyio.CancelScope() as scope:
        async with EventStore(db_path, batch_linger=10.0) as store:
            for i in range(held):
                await store.record_llm_completed("gpt-4o-mini", input_tokens=i)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # the actors take the events in hand
            scope.cancel()
            await anyio.sleep_forever()
    assert store.dropped_count() == 0
    async with EventStore(db_path) as reopened:
        assert len(reopened) == held
        assert reopened.stats().total_requests == held


async def test_calls_after_close_are_dropped_and_counted(db_path: Path) -> None:
    store = EventStore(db_path)
    async with store:
        pass
    assert await store.record_llm_completed("gpt-4o", input_tokens=1) is None
    assert store.record_nowait(_prebuilt()) is False
    assert store.dropped_count() == 2
    assert store.stats().dropped_by_cause == {"closed": 2}
    await store.flush()  # a no-op, not an error


async def test_use_before_open_and_reuse_raise(db_path: Path) -> None:
    store = EventStore(db_path)
    with pytest.raises(StoreClosedError):
        await store.record_llm_completed("gpt-4o", input_tokens=1)
    with pytest.raises(StoreClosedError):
        store.record_nowait(_prebuilt())
    async with store:
        pass
    with pytest.raises(StoreClosedError):
        async with store:
            pass


async def test_bad_path_raises_on_enter(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match=r"unable to open|not a directory|File exists|Not a dir"):
        async with EventStore(tmp_path / "file" / "sub" / "a.db"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"input_tokens": -1}, "input_tokens", id="negative-tokens"),
        pytest.param({"input_tokens": 1.5}, "input_tokens", id="float-tokens"),
        pytest.param({"output_tokens": True}, "output_tokens", id="bool-tokens"),
        pytest.param({"input_tokens": 2**60}, "input_tokens", id="huge-tokens"),
        pytest.param({"duration_ms": float("nan")}, "duration_ms", id="nan-duration"),
        pytest.param({"ttft_ms": -3.0}, "ttft_ms", id="negative-ttft"),
        pytest.param({"duration_ms": float("inf")}, "duration_ms", id="inf-duration"),
        pytest.param({"agent_id": "a" * 257}, "agent_id", id="long-agent"),
        pytest.param({"provider_id": 7}, "provider_id", id="int-provider-id"),
        pytest.param(
            {"input_tokens": 5, "cached_input_tokens": 6}, "exceed", id="cached-over-input"
        ),
        pytest.param({"timestamp_ms": -5}, "timestamp_ms", id="negative-timestamp"),
    ],
)
async def test_bad_input_raises_validation_error(
    db_path: Path, kwargs: dict[str, object], message: str
) -> None:
    async with EventStore(db_path) as store:
        with pytest.raises(ValidationError, match=message):
            await store.record_llm_completed("gpt-4o", **kwargs)  # type: ignore[arg-type]
        assert await store.record_llm_completed("gpt-4o", input_tokens=1) is not None
        await store.flush()
        assert store.stats().total_requests == 1
        assert store.dropped_count() == 0


async def test_bad_model_and_failure_fields_raise(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        with pytest.raises(ValidationError, match="model"):
            await store.record_llm_completed("", input_tokens=1)
        with pytest.raises(ValidationError, match="model"):
            await store.record_llm_completed("m" * 300)
        with pytest.raises(ValidationError, match="status_code"):
            await store.record_llm_failed("gpt-4o", error_code="x", status_code=1000)
        with pytest.raises(ValidationError, match="error_code"):
            await store.record_llm_failed("gpt-4o", error_code="")
        with pytest.raises(ValidationError, match="AnalyticsEvent"):
            await store.record("not an event")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="input_tokens"):
            await store.record(_prebuilt(input_tokens=-4))


async def test_long_error_messages_are_truncated_not_refused(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        ev = await store.record_llm_failed(
            "gpt-4o", error_code="server_error", error_message="x" * 10_000
        )
        assert ev is not None
        assert len(ev.payload.error_message) == 2_000  # type: ignore[union-attr]


async def test_each_request_is_logged(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmtally")
    async with EventStore(db_path) as store:
        await store.record_llm_completed("gpt-4o-mini", input_tokens=11, output_tokens=1)
        await store.record_llm_failed("gpt-4o", error_code="rate_limited", status_code=429)
        await store.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "LLM request completed model=gpt-4o-mini input_tokens=11 output_tokens=1 cost_usd=0.000002"
        in messages
    )
    assert "LLM request failed model=gpt-4o error_code=rate_limited status_code=429" in messages


async def test_lifecycle_and_budget_events(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        await store.record_router_started(port=8080)
        await store.record_llm_completed("gpt-4o-mini", input_tokens=1000, output_tokens=1000)
        await store.record_budget_threshold(
            80, current_spend_micros=8_000_000, budget_micros=10_000_000, agent_id="agent-7"
        )
        stopped = await store.record_router_stopped()
        assert stopped is not None and isinstance(stopped.payload, RouterStopped)
        assert stopped.payload.total_requests == 1
        assert stopped.payload.total_cost_micros == 750  # 1000 × 0.15 + 1000 × 0.60 µ$
        events = await store.snapshot_events()
        assert [e.event_type for e in events] == [
            "router_started",
            "llm_request_completed",
            "budget_threshold_reached",
            "router_stopped",
        ]
        assert store.unsynced_count() == 1  # only request events wait for a collector


async def test_outbox_unsynced_events_and_mark_synced(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        for i in range(5):
            await store.record_llm_completed("gpt-4o", input_tokens=i)
        await store.record_router_started(port=1)
        pending = await store.unsynced_events()
        assert [e.payload.input_tokens for e in pending] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
        assert await store.mark_synced([e.event_id for e in pending[:3]]) == 3
        assert store.unsynced_count() == 2
        assert await store.mark_synced([pending[0].event_id]) == 0  # idempotent
        rest = await store.unsynced_events()
        assert [e.event_id for e in rest] == [e.event_id for e in pending[3:]]
    async with EventStore(db_path) as store:
        assert store.unsynced_count() == 2
        synced = [e for e in await store.snapshot_events() if e.synced]
        assert len(synced) == 3


async def test_drain_all_removes_events_but_keeps_stats(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        for _ in range(10):
            await store.record_llm_completed("gpt-4o", input_tokens=1)
        drained = await store.drain_all()
        assert len(drained) == 10
        assert len(store) == 0
        assert store.is_empty()
        assert store.stats().total_requests == 10
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        assert len(store) == 1
    async with EventStore(db_path) as store:
        assert store.stats().total_requests == 11


async def test_memory_store_keeps_a_bounded_history() -> None:
    async with EventStore(None, history=100) as store:
        for i in range(250):
            await store.record_llm_completed("gpt-4o", input_tokens=i)
        await store.flush()
        assert len(store) == 100
        events = await store.snapshot_events()
        assert [e.payload.input_tokens for e in events] == list(range(150, 250))  # type: ignore[union-attr]
        assert store.stats().total_requests == 250


async def test_subscribers_see_accepted_events_live(db_path: Path) -> None:
    async with EventStore(db_path) as store, store.subscribe() as events:
        sent = [await store.record_llm_completed("gpt-4o", input_tokens=i) for i in range(3)]
        got = [await events.events.receive() for _ in range(3)]
        assert got == sent


async def test_a_slow_subscriber_loses_events_and_never_blocks(db_path: Path) -> None:
    async with EventStore(db_path, subscriber_capacity=5) as store:
        async with store.subscribe() as slow:
            for i in range(100):
                await store.record_llm_completed("gpt-4o", input_tokens=i)
            await store.flush()
            assert store.stats().total_requests == 100
            assert (slow.delivered, slow.dropped) == (5, 95)
            first = [await slow.events.receive() for _ in range(5)]
            assert [e.payload.input_tokens for e in first] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]


async def test_a_closed_subscription_ends_after_its_buffered_events(db_path: Path) -> None:
    async with EventStore(db_path) as store, store.subscribe() as sub:
        await store.record_llm_completed("gpt-4o", input_tokens=1)
        await store.flush()
        sub.close()
        await store.record_llm_completed("gpt-4o", input_tokens=2)  # not seen
        await store.flush()
        got = [ev.payload.input_tokens async for ev in sub]  # type: ignore[union-attr]
        assert got == [1]
        assert (sub.delivered, sub.dropped) == (1, 0)


async def test_subscription_ends_when_the_store_closes(db_path: Path) -> None:
    received: list[AnalyticsEvent] = []
    async with anyio.create_task_group() as tg:
        store = EventStore(db_path)
        async with store:
            ready = anyio.Event()

            async def consume() -> None:
                async with store.subscribe() as events:
                    ready.set()
                    async for ev in events:
                        received.append(ev)

            tg.start_soon(consume)
            await ready.wait()
            await store.record_llm_completed("gpt-4o", input_tokens=1)
    assert len(received) == 1

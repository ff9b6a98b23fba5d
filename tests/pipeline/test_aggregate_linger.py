"""The aggregator's linger: trickling events share a batch; flush, a filling buffer and
closing the store cut it short; it never causes a drop."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llmtally import AnalyticsEvent, EventStore, LlmRequestCompleted
from llmtally._ids import new_event_id
from llmtally.analysis.stats import Aggregate, StatsDelta
from llmtally.pipeline.aggregate import LINGER_BELOW

LONG = 30.0  # a linger no test may wait out (the tests' own bound is a few seconds)


def _prebuilt(input_tokens: int) -> AnalyticsEvent:
    payload = LlmRequestCompleted(model="m", provider="openai", input_tokens=input_tokens)
    return AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1_000, payload=payload)


def _count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Requests per delta the aggregator applies (one per batch)."""
    sizes: list[int] = []
    original = Aggregate.apply

    def apply(self: Aggregate, delta: StatsDelta) -> None:
        sizes.append(sum(t.requests for t in delta.series.values()))
        original(self, delta)

    monkeypatch.setattr(Aggregate, "apply", apply)
    return sizes


async def test_trickling_events_wait_for_company_and_flush_cuts_the_linger(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EventStore(db_path, aggregate_linger=LONG) as store:
        sizes = _count_batches(monkeypatch)
        for i in range(5):
            await store.record_llm_completed("gpt-4o-mini", input_tokens=i)
            for _ in range(5):  # the aggregator wakes and starts lingering
                await anyio.lowlevel.checkpoint()
        assert store.stats().total_requests == 0  # held: lingering for more
        with anyio.fail_after(5):
            await store.flush()
        assert store.stats().total_requests == 5
        assert sizes == [5]  # one batch, not five
        assert len(store) == 5


async def test_a_burst_is_counted_at_once(db_path: Path) -> None:
    async with EventStore(db_path, aggregate_linger=LONG) as store:
        async with store.subscribe() as sub:
            for i in range(LINGER_BELOW):  # synchronous: they arrive together
                assert store.record_nowait(_prebuilt(i))
            with anyio.fail_after(5):
                received = [await sub.__anext__() for _ in range(LINGER_BELOW)]
        assert [e.payload.input_tokens for e in received] == list(range(LINGER_BELOW))  # type: ignore[union-attr]


async def test_a_filling_buffer_cuts_the_linger_and_nothing_is_dropped() -> None:
    capacity = 64  # the linger ends once capacity // 8 = 8 more events are waiting
    # In memory: a disk write blocking the persister would fill the buffer by itself.
    async with EventStore(None, capacity=capacity, aggregate_linger=LONG) as store:
        async with store.subscribe(capacity=10_000) as sub:
            with anyio.fail_after(5):
                for i in range(1_000):
                    assert await store.record_llm_completed("m", input_tokens=i) is not None
                    await anyio.lowlevel.checkpoint()
                # Only a short tail may still be lingering: everything before it was
                # counted without waiting out the linger.
                received = 0
                while received < 1_000 - capacity // 8:
                    await sub.__anext__()
                    received += 1
        assert store.dropped_count() == 0
        await store.flush()
        assert store.stats().total_requests == 1_000


async def test_closing_the_store_ends_the_linger(db_path: Path) -> None:
    with anyio.fail_after(5):
        async with EventStore(db_path, aggregate_linger=LONG) as store:
            await store.record_llm_completed("gpt-4o-mini", input_tokens=1)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            assert store.stats().total_requests == 0  # lingering
    async with EventStore(db_path) as store:
        assert len(store) == 1
        assert store.stats().total_requests == 1


async def test_zero_linger_and_small_capacities_count_at_once(db_path: Path) -> None:
    for kw in ({"aggregate_linger": 0.0}, {"capacity": 63, "aggregate_linger": LONG}):
        async with EventStore(db_path, **kw) as store:  # type: ignore[arg-type]
            async with store.subscribe() as sub:
                await store.record_llm_completed("gpt-4o-mini", input_tokens=1)
                with anyio.fail_after(5):
                    await sub.__anext__()


async def test_a_quiet_store_keeps_no_timer(db_path: Path) -> None:
    async with EventStore(db_path, aggregate_linger=LONG) as store:
        for i in range(3 * LINGER_BELOW):  # a burst: counted at once, then a linger
            assert store.record_nowait(_prebuilt(i))
        await anyio.wait_all_tasks_blocked()
        assert store._wake.scope is not None  # waiting for more, with a timer
        await store.flush()
        await anyio.wait_all_tasks_blocked()
        assert store._wake.scope is None  # after the flush: idle, no timer
        assert store.stats().total_requests == 3 * LINGER_BELOW

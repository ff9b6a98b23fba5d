"""Budgets in the store: thresholds, hard limits, reservations, restart, status.

Costs are exact: gpt-4o-mini input costs 150 nano-dollars per token, so 1,000 input
tokens cost 150 micro-dollars.
"""

from __future__ import annotations

import random
from operator import attrgetter
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally import (
    Budget,
    BudgetExceeded,
    BudgetThresholdReached,
    EventStore,
    StoreClosedError,
    ValidationError,
)
from llmtally.analysis.budgets import BudgetBook

DAY = 86_400_000
T0 = 1_760_054_400_000  # 2025-10-10 00:00 UTC, a Friday
NOON = T0 + DAY // 2
CALL = 150  # micro-dollars: 1,000 input tokens of gpt-4o-mini


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


async def _call(store: EventStore, agent_id: str | None = "a1", tokens: int = 1_000) -> None:
    ev = await store.record_llm_completed("gpt-4o-mini", tokens, agent_id=agent_id)
    assert ev is not None


async def _thresholds(store: EventStore) -> list[tuple[str | None, int, int]]:
    return [
        (e.payload.budget_id, e.payload.threshold_percent, e.payload.current_spend_micros)
        for e in await store.snapshot_events()
        if isinstance(e.payload, BudgetThresholdReached)
    ]


async def test_soft_thresholds_are_recorded_once_per_period(db_path: Path) -> None:
    clock = Clock(NOON)
    daily = Budget(id="g", limit_micros=1_000, period="daily")
    async with EventStore(db_path, clock=clock, budgets=[daily]) as store:
        for _ in range(3):
            await _call(store)  # 450: nothing yet
        await store.flush()
        assert await _thresholds(store) == []
        await _call(store)  # 600: 50%
        await store.flush()
        for _ in range(6):
            await _call(store)  # up to 1500: 80% and 100%, once each
            await store.flush()
        assert await _thresholds(store) == [("g", 50, 600), ("g", 80, 900), ("g", 100, 1050)]
        assert store.unsynced_count() == 10  # threshold events stay local
        assert len(store) == 13
        clock.t += DAY  # the next day: a new period
        for _ in range(4):
            await _call(store)
        await store.flush()
        assert (await _thresholds(store))[3:] == [("g", 50, 600)]
        [status] = store.budget_status()
        assert (status.spent_micros, status.thresholds_reached) == (600, (50,))
        assert status.percent_used == pytest.approx(60.0)


async def test_check_budget_refuses_once_a_hard_budget_is_used_up(db_path: Path) -> None:
    hard = Budget(id="a1", scope="agent_id", scope_value="a1", limit_micros=300, kind="hard")
    async with EventStore(db_path, budgets=[hard]) as store:
        await store.check_budget(agent_id="a1")
        await _call(store)
        await _call(store)
        await store.flush()
        with pytest.raises(BudgetExceeded, match="'a1'"):
            await store.check_budget(agent_id="a1")
        await store.check_budget(agent_id="a2")  # another agent: not this budget
        await store.check_budget()  # no dimension given: only global budgets apply
        with pytest.raises(BudgetExceeded):
            async with store.reserve(agent_id="a1", estimate_micros=0):
                pass


async def test_100_concurrent_reservations_cannot_overshoot(db_path: Path) -> None:
    limit = 10 * CALL
    hard = Budget(id="h", limit_micros=limit, kind="hard", period="daily")
    async with EventStore(db_path, budgets=[hard]) as store:
        attempted = 0
        all_attempted = anyio.Event()
        admitted: list[int] = []
        refused: list[int] = []

        async def request(i: int) -> None:
            nonlocal attempted
            try:
                async with store.reserve(agent_id=f"a{i}", estimate_micros=CALL) as r:
                    attempted += 1
                    if attempted == 100:
                        all_attempted.set()
                    await all_attempted.wait()  # every hold is taken before any settles
                    await r.record_llm_completed("gpt-4o-mini", 1_000)
                    admitted.append(i)
            except BudgetExceeded:
                refused.append(i)
                attempted += 1
                if attempted == 100:
                    all_attempted.set()

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(request, i)
        await store.flush()
        assert (len(admitted), len(refused)) == (10, 90)
        [status] = store.budget_status()
        assert (status.spent_micros, status.reserved_micros) == (limit, 0)
        assert store.stats().total_cost_micros == limit
        assert status.exceeded is True


async def test_reservations_with_smaller_actual_costs_never_overshoot() -> None:
    rng = random.Random(7)
    limit = 25 * CALL
    hard = Budget(id="h", limit_micros=limit, kind="hard")
    async with EventStore(budgets=[hard]) as store:
        spent = 0

        async def request() -> None:
            nonlocal spent
            tokens = rng.randint(1, 3) * 500  # 75..225 micro-dollars; estimate 225
            try:
                async with store.reserve(estimate_micros=225) as r:
                    for _ in range(rng.randint(0, 3)):
                        await anyio.lowlevel.checkpoint()
                    await r.record_llm_completed("gpt-4o-mini", tokens)
                    spent += tokens * 150 // 1000
            except BudgetExceeded:
                pass
            [status] = store.budget_status()
            assert status.spent_micros + status.reserved_micros <= limit

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(request)
        await store.flush()
        [status] = store.budget_status()
        assert status.spent_micros == spent <= limit
        assert status.reserved_micros == 0


async def test_a_reservation_settles_exactly_once() -> None:
    hard = Budget(id="h", limit_micros=10_000, kind="hard")
    async with EventStore(budgets=[hard]) as store:
        async with store.reserve(agent_id="a1", estimate_micros=2_000) as r:
            assert store.budget_status()[0].reserved_micros == 2_000
            ev = await r.record_llm_completed("gpt-4o-mini", 1_000)
            assert ev is not None and ev.agent_id == "a1"  # the reservation's dimensions
            await r.record_llm_completed("gpt-4o-mini", 1_000)  # a second record: plain
        await store.flush()
        [s] = store.budget_status()
        assert (s.spent_micros, s.reserved_micros) == (2 * CALL, 0)
        # Left without recording: the hold is released, nothing spent.
        async with store.reserve(estimate_micros=5_000):
            assert store.budget_status()[0].reserved_micros == 5_000
        assert store.budget_status()[0].reserved_micros == 0
        # Recorded through the store instead: counted once, by the aggregator.
        async with store.reserve(estimate_micros=5_000):
            await _call(store)
        await store.flush()
        assert store.budget_status()[0].spent_micros == 3 * CALL
        # A failed call settles with what it consumed.
        async with store.reserve(estimate_micros=5_000) as r:
            await r.record_llm_failed("gpt-4o-mini", error_code="timeout", input_tokens=1_000)
        await store.flush()
        assert store.budget_status()[0].spent_micros == 4 * CALL
        assert store.stats().total_cost_micros == 4 * CALL


async def test_a_record_that_is_not_accepted_releases_its_hold() -> None:
    hard = Budget(id="h", limit_micros=10_000, kind="hard")
    async with EventStore(budgets=[hard]) as store:
        pass
    async with store.reserve(estimate_micros=1_000) as r:  # a closed store: dropped
        assert store.budget_status()[0].reserved_micros == 1_000
        assert await r.record_llm_completed("gpt-4o-mini", 1_000) is None
        assert store.budget_status()[0].reserved_micros == 0
    assert store.stats().dropped_by_cause == {"closed": 1}


async def test_reservation_misuse_raises() -> None:
    async with EventStore() as store:
        with pytest.raises(ValidationError):
            store.reserve(estimate_micros=-1)
        r = store.reserve(estimate_micros=1)
        with pytest.raises(StoreClosedError):
            await r.record_llm_completed("gpt-4o-mini", 1)
        async with r:
            pass
        with pytest.raises(StoreClosedError):
            async with r:
                pass


async def test_spend_of_the_current_period_survives_a_restart(db_path: Path) -> None:
    clock = Clock(NOON - DAY)
    budgets = [
        Budget(id="day", limit_micros=1_000, period="daily"),
        Budget(id="a1-day", scope="agent_id", scope_value="a1", limit_micros=1_000, period="daily"),
        Budget(id="ever", limit_micros=10_000, period="total"),
    ]
    async with EventStore(db_path, clock=clock, budgets=budgets) as store:
        await _call(store)  # yesterday: not in today's period
        clock.t = NOON
        for agent in ("a1", "a1", "a2", "a1"):
            await _call(store, agent)  # 600 today, 450 of them a1's: day reaches 50%
    assert [t[:2] for t in await _read_thresholds(db_path)] == [("day", 50)]
    clock.t = NOON + 3_600_000
    async with EventStore(db_path, clock=clock, budgets=budgets) as store:
        status = {s.budget_id: s for s in store.budget_status()}
        assert status["day"].spent_micros == 4 * CALL
        assert status["a1-day"].spent_micros == 3 * CALL
        assert status["ever"].spent_micros == 5 * CALL
        assert status["day"].thresholds_reached == (50,)
        await _call(store, "a2")  # 750: no threshold is reported a second time
        await store.flush()
        assert [t[:2] for t in await _thresholds(store)] == [("day", 50)]
        await _call(store, "a2")  # 900: 80%
        await store.flush()
        assert [t[:2] for t in await _thresholds(store)] == [("day", 50), ("day", 80)]


async def _read_thresholds(db_path: Path) -> list[tuple[str | None, int, int]]:
    async with EventStore(db_path) as store:
        return await _thresholds(store)


async def test_a_budget_added_later_sees_the_spend_so_far(db_path: Path) -> None:
    clock = Clock(NOON)
    async with EventStore(db_path, clock=clock) as store:
        for agent in ("a1", "a2", "a1"):
            await _call(store, agent)
        await store.add_budget(
            Budget(id="a1", scope="agent_id", scope_value="a1", limit_micros=1_000, kind="hard")
        )
        await store.add_budget(
            Budget(
                id="m",
                scope="model",
                scope_value="gpt-4o-mini",
                limit_micros=1_000,
                period="weekly",
            )
        )
        status = {s.budget_id: s for s in store.budget_status()}
        assert status["a1"].spent_micros == 2 * CALL
        assert status["m"].spent_micros == 3 * CALL
        with pytest.raises(ValidationError, match="exists"):
            await store.add_budget(Budget(id="m", limit_micros=1))
        assert store.remove_budget("m") is True
        assert store.remove_budget("m") is False
        assert [s.budget_id for s in store.budget_status()] == ["a1"]


async def test_status_forecasts_the_end_of_the_period() -> None:
    clock = Clock(NOON)
    async with EventStore(
        clock=clock, budgets=[Budget(id="d", limit_micros=10_000, period="daily")]
    ) as store:
        for _ in range(4):
            await _call(store)
        await store.flush()
        [s] = store.budget_status()
        assert s.forecast_micros == 8 * CALL  # half the day gone: twice the spend so far
        assert (s.period_start_ms, s.period_end_ms) == (T0, T0 + DAY)
        assert s.remaining_micros == 10_000 - 4 * CALL


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from([None, "a1", "a2"]),
            st.sampled_from([None, "k1"]),
            st.sampled_from([None, "gpt-4o", "gpt-4o-mini"]),
        ),
        max_size=30,
    )
)
def test_spend_many_equals_spending_one_by_one(
    costs: list[tuple[int, str | None, str | None, str | None]],
) -> None:
    budgets = [
        Budget(id="g", limit_micros=50, thresholds=(10, 50, 100, 400)),
        Budget(id="a1", scope="agent_id", scope_value="a1", limit_micros=20, kind="hard"),
        Budget(id="k1", scope="provider_id", scope_value="k1", limit_micros=30),
        Budget(id="m", scope="model", scope_value="gpt-4o", limit_micros=40, period="daily"),
    ]
    one, many = BudgetBook(budgets, now_ms=NOON), BudgetBook(budgets, now_ms=NOON)
    crossed_one = []
    for cost, agent_id, provider_id, model in costs:
        crossed_one += one.spend_nanos(
            NOON, cost, agent_id=agent_id, provider_id=provider_id, model=model
        )
    crossed_many = many.spend_many(NOON, costs)
    spent = {s.budget_id: s.spent_nanos for s in one.status(NOON)}
    assert {s.budget_id: s.spent_nanos for s in many.status(NOON)} == spent
    key = attrgetter("budget_id", "threshold_percent")
    assert sorted(map(key, crossed_many)) == sorted(map(key, crossed_one))

"""The aggregator's bulk forms equal their reference forms exactly:
``BudgetBook.spend_series`` equals ``spend_many`` of the same costs (spend and the
crossings, in order), and ``StreamingStats.observe_series`` equals one ``observe_many``
per model with that model's series (counts, cancellations, sketches — sums included —
and which models overflow into ``(other)``), its one-value sketches (most series of a
small batch) included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally._exceptions import ValidationError
from llmtally.analysis.budgets import Budget, BudgetBook
from llmtally.analysis.stats import StatsDelta
from llmtally.analysis.streaming import StreamingStats
from llmtally.analysis.trackers import CANCELLED

T0 = 1_760_000_040_000
MODELS = ["m0", "m1", "m2", "m3"]
AGENTS = [None, "a1", "a2"]
KEYS = [None, "k1", "k2"]
# Values a sketch treats apart: zero and -0.0 (the zero bucket), below and above its range.
_EDGES = st.sampled_from([0.0, -0.0, 1e-9, 2e11])
_MS = st.floats(0.5, 5_000.0) | _EDGES


@st.composite
def _request(draw: st.DrawFn) -> AnalyticsEvent:
    fields = {
        "model": draw(st.sampled_from(MODELS)),
        "provider": "p",
        "provider_id": draw(st.sampled_from(KEYS)),
        "output_tokens": draw(st.integers(0, 50)),
        "cost_nanos": draw(st.integers(0, 400_000)),
        "duration_ms": draw(st.none() | _MS),
        "ttft_ms": draw(_MS),
    }
    outcome = draw(st.sampled_from([None, "rate_limited", CANCELLED]))
    payload: LlmRequestCompleted | LlmRequestFailed
    if outcome is None:
        payload = LlmRequestCompleted(**fields)  # type: ignore[arg-type]
    else:
        payload = LlmRequestFailed(error_code=outcome, **fields)  # type: ignore[arg-type]
    return AnalyticsEvent(
        event_id=f"e{draw(st.integers(0, 2**40))}",
        timestamp_ms=T0,
        payload=payload,
        agent_id=draw(st.sampled_from(AGENTS)),
    )


_BUDGETS = [
    Budget(id="all", limit_micros=1_000),
    Budget(id="a1", scope="agent_id", scope_value="a1", limit_micros=500),
    Budget(id="a1-hard", scope="agent_id", scope_value="a1", limit_micros=800, kind="hard"),
    Budget(id="k2", scope="provider_id", scope_value="k2", limit_micros=300),
    Budget(id="m1", scope="model", scope_value="m1", limit_micros=400),
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_request(), min_size=1, max_size=30), min_size=1, max_size=6),
    st.sets(st.sampled_from([b.id for b in _BUDGETS]), min_size=1),
)
def test_spend_series_equals_spend_many(
    batches: list[list[AnalyticsEvent]], budget_ids: set[str]
) -> None:
    budgets = [b for b in _BUDGETS if b.id in budget_ids]
    bulk, reference = BudgetBook(budgets, now_ms=T0), BudgetBook(budgets, now_ms=T0)
    for i, batch in enumerate(batches):
        now = T0 + i
        delta = StatsDelta().add_all(batch)
        costs = [
            (t.cost_nanos, agent or None, key or None, model)
            for (model, _, agent, key), t in delta.series.items()
            if t.cost_nanos
        ]
        assert bulk.spend_series(now, delta.series) == reference.spend_many(now, costs)
    assert bulk.status(T0 + 99) == reference.status(T0 + 99)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_request(), min_size=1, max_size=40), min_size=1, max_size=5),
    st.integers(1, 5),
)
def test_observe_series_equals_observe_many_per_model(
    batches: list[list[AnalyticsEvent]], max_models: int
) -> None:
    bulk, reference = StreamingStats(max_models=max_models), StreamingStats(max_models=max_models)
    for batch in batches:
        delta = StatsDelta().add_all(batch)
        cancelled: dict[str, int] = {}
        for e in batch:
            p = e.payload
            if isinstance(p, LlmRequestFailed) and p.error_code == CANCELLED:
                cancelled[p.model] = cancelled.get(p.model, 0) + 1
        bulk.observe_series(delta.series, cancelled)
        per_model: dict[str, list[tuple[int, int, int, list[object], list[object]]]] = {}
        for (model, *_), t in delta.series.items():
            per_model.setdefault(model, []).append(
                (t.requests, t.failed_requests, t.output_tokens, [t.ttft], [t.duration])
            )
        for model, rows in per_model.items():
            failed = sum(r[1] for r in rows)
            n_cancelled = cancelled.get(model, 0)
            reference.observe_many(
                model,
                completed=sum(r[0] for r in rows) - failed,
                failed=failed - n_cancelled,
                cancelled=n_cancelled,
                output_tokens=sum(r[2] for r in rows),
                ttft_sketches=[s for r in rows for s in r[3]],  # type: ignore[misc]
                duration_sketches=[s for r in rows for s in r[4]],  # type: ignore[misc]
            )
    assert bulk.snapshot() == reference.snapshot()
    assert bulk.sketches() == reference.sketches()  # sums too: added in the same order


def test_spend_series_refuses_a_negative_cost_and_charges_nothing() -> None:
    book = BudgetBook(_BUDGETS, now_ms=T0)
    ok = AnalyticsEvent(
        event_id="e1",
        timestamp_ms=T0,
        payload=LlmRequestCompleted(model="m1", provider="p", cost_nanos=300_000),
        agent_id="a1",
    )
    delta = StatsDelta().add_all([ok])
    bad = StatsDelta().add_all([ok])
    [tally] = bad.series.values()
    tally.cost_nanos = -1
    for series in ({**bad.series}, {**delta.series, ("m2", "p", "", ""): tally}):
        before = book.status(T0)
        with pytest.raises(ValidationError):
            book.spend_series(T0, series)
        assert book.status(T0) == before
    book.spend_series(T0, delta.series)
    spent = {s.budget_id: s.spent_nanos for s in book.status(T0)}
    assert spent == {"all": 300_000, "a1": 300_000, "a1-hard": 300_000, "k2": 0, "m1": 300_000}


@pytest.mark.parametrize("max_models", [1, 3, 10])
def test_observe_series_equals_observe_many_across_folds(max_models: int) -> None:
    # Enough values that the pending ones (one-value sketches among them) fold many times.
    import random

    rng = random.Random(max_models)
    bulk, reference = StreamingStats(max_models=max_models), StreamingStats(max_models=max_models)
    for b in range(300):
        batch = [
            AnalyticsEvent(
                event_id=f"e{b}-{i}",
                timestamp_ms=T0,
                payload=LlmRequestCompleted(
                    model=rng.choice(MODELS),
                    provider="p",
                    duration_ms=rng.choice([rng.uniform(0.5, 5_000.0), 0.0, 2e11]),
                    ttft_ms=rng.lognormvariate(3.0, 1.0),
                ),
                agent_id=rng.choice(AGENTS),
            )
            for i in range(rng.randint(1, 24))
        ]
        delta = StatsDelta().add_all(batch)
        bulk.observe_series(delta.series, {})
        per_model: dict[str, list[tuple[int, object, object]]] = {}
        for (model, *_), t in delta.series.items():
            per_model.setdefault(model, []).append((t.requests, t.ttft, t.duration))
        for model, rows in per_model.items():
            reference.observe_many(
                model,
                completed=sum(r[0] for r in rows),  # type: ignore[misc]
                ttft_sketches=[r[1] for r in rows],  # type: ignore[misc]
                duration_sketches=[r[2] for r in rows],  # type: ignore[misc]
            )
    assert bulk.snapshot() == reference.snapshot()
    assert bulk.sketches() == reference.sketches()
    assert bulk.snapshot().ttft_ms.count > 1_000

"""Rollup maths (pure): dense bins agree with ``LogSketch``; rows round-trip; a batch's
facet rows sum to its events, and are those of a straightforward event-by-event
reference, whether built from events or from rows; the SQLite upgrade rolls up events
stored before rollups."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally.analysis.sketch import LogSketch, bucket_of
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.storage.rollups import (
    DIMENSIONS,
    HOUR_MS,
    MINUTE_MS,
    Bins,
    Metric,
    Rollup,
    RollupKey,
    rollup_events,
    rollup_from_row,
    rollup_rows,
    rollup_to_row,
    status_of,
)
from llmtally.storage.rows import COLUMNS, ENVELOPE_COLUMNS, SYNCED, event_to_row
from llmtally.storage.sqlite import MIGRATIONS, SqliteStorage

from .factory import T0, lifecycle, random_requests, request

values = st.lists(
    st.one_of(
        st.floats(min_value=1e-4, max_value=1e12, allow_nan=False),
        st.just(0.0),
        st.floats(min_value=0.5, max_value=5_000.0),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(values, st.integers(min_value=0, max_value=300))
def test_bins_agree_with_logsketch(xs: list[float], split: int) -> None:
    sketch = LogSketch()
    for x in xs:
        sketch.add(x)
    a, b = Metric(), Metric()
    a.add_many(xs[:split])
    for x in xs[split:]:
        b.add(x)
    a.merge(b)
    assert a.bins.sparse() == sketch.bins
    assert a.count == sketch.count
    if xs:
        assert (a.min, a.max) == (min(xs), max(xs))
        assert math.isclose(a.sum, math.fsum(xs), rel_tol=1e-9, abs_tol=1e-9)
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    assert a.bins.quantiles(qs) == sketch.quantiles(*qs)
    spanning = Bins.spanning()
    spanning.merge(a.bins)
    assert spanning.quantiles(qs) == sketch.quantiles(*qs)


def test_add_many_buckets_like_bucket_of() -> None:
    xs = [0.0011, 0.5, 1.0, 3.3, 99.9, 1234.5, 98_765.4, 1e10]
    m = Metric()
    m.add_many(xs)
    assert m.bins.sparse() == {bucket_of(x): 1 for x in xs}


def test_rows_round_trip() -> None:
    events = random_requests(40, seed=51, start_ms=T0, span_ms=MINUTE_MS)
    for r in rollup_events(events).values():
        back = rollup_from_row(rollup_to_row(r, percentiles=True))
        # The stored percentiles are those of the bins; dropped, the rest is equal.
        assert back.duration.q == r.duration.bins.quantiles((0.5, 0.95, 0.99)) or not r.requests
        back.duration.q = back.ttft.q = r.duration.q = r.ttft.q = None
        assert back == r
        assert rollup_from_row(rollup_to_row(r)).duration.q is None


def test_a_batch_adds_one_row_per_facet_and_tier_and_they_sum_to_it() -> None:
    events = random_requests(300, seed=52, start_ms=T0 - 5 * MINUTE_MS, span_ms=20 * MINUTE_MS)
    rows = rollup_events(events)
    assert {k[1] for k in rows} == set(DIMENSIONS)
    for period in (MINUTE_MS, HOUR_MS):
        for dim in DIMENSIONS:
            facet = [r for k, r in rows.items() if k[0] == period and k[1] == dim]
            assert sum(r.requests for r in facet) == 300
            assert sum(r.cost_nanos for r in facet) == sum(e.payload.cost_nanos for e in events)  # type: ignore[union-attr]
            assert sum(r.duration.count for r in facet) == sum(
                e.payload.duration_ms is not None  # type: ignore[union-attr]
                for e in events
            )
    hours = {k[2] for k in rows if k[0] == HOUR_MS}
    assert hours == {T0 - HOUR_MS, T0}


async def test_upgrading_a_version_1_database_rolls_up_its_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    old = [request(T0 + i * 1000, model=f"m{i % 3}") for i in range(7000)]
    v1 = COLUMNS[: -len(ENVELOPE_COLUMNS)]  # version 1 had no envelope
    marks = ", ".join("?" * len(v1))
    db.executemany(
        f"INSERT INTO events ({', '.join(v1)}) VALUES ({marks})",
        [event_to_row(e)[: len(v1)] for e in old],
    )
    db.commit()
    db.close()
    s = SqliteStorage(path)
    await s.open()
    try:
        assert await s.schema_version() == len(MIGRATIONS)
        rows = await s.scan_rollups(HOUR_MS, "model", 0, T0 + 10 * HOUR_MS)
        decoded = [(t, v, rollup_from_row(stored)) for t, v, stored in rows]
        assert sorted((v, r.requests) for t, v, r in decoded if t == T0) == [
            ("m0", 1200),
            ("m1", 1200),
            ("m2", 1200),
        ]
        assert sum(r.requests for _, _, r in decoded) == 7000
    finally:
        await s.close()


def _reference(events: list[AnalyticsEvent]) -> dict[RollupKey, Rollup]:
    """The rollups of ``events`` the obvious way: each request event added to each of its
    14 rows, one at a time."""
    out: dict[RollupKey, Rollup] = {}
    for e in events:
        p = e.payload
        if not isinstance(p, LlmRequestCompleted | LlmRequestFailed):
            continue
        failed = isinstance(p, LlmRequestFailed)
        facets = {
            "": "",
            "model": p.model,
            "provider": p.provider,
            "agent": e.agent_id or "",
            "provider_id": p.provider_id or "",
            "endpoint": p.endpoint or "",
            "status": status_of(failed),
        }
        for period in (MINUTE_MS, HOUR_MS):
            start = e.timestamp_ms - e.timestamp_ms % period
            for dim, value in facets.items():
                r = out.setdefault((period, dim, start, value), Rollup())
                r.add(
                    failed,
                    p.input_tokens,
                    p.output_tokens,
                    p.cached_input_tokens,
                    p.cache_write_input_tokens,
                    p.cost_nanos,
                    p.pricing_status == "unpriced",
                    p.duration_ms,
                    p.ttft_ms,
                )
                r.models[p.model] = r.models.get(p.model, 0) + 1
                r.providers[p.provider] = r.providers.get(p.provider, 0) + 1
                if p.endpoint:
                    r.endpoints[p.endpoint] = r.endpoints.get(p.endpoint, 0) + 1
    return out


def _assert_same(got: Rollup, want: Rollup) -> None:
    """Equal, but for the float sums' last bits (added in another order)."""
    for mine, theirs in ((got.duration, want.duration), (got.ttft, want.ttft)):
        assert math.isclose(mine.sum, theirs.sum, rel_tol=1e-12, abs_tol=1e-12)
        assert mine.bins.sparse() == theirs.bins.sparse()
        assert (mine.count, mine.min, mine.max) == (theirs.count, theirs.min, theirs.max)
        assert mine.q is None
    assert got.counters() == want.counters()
    assert (got.models, got.providers, got.endpoints) == (
        want.models,
        want.providers,
        want.endpoints,
    )


latency = st.one_of(
    st.none(),
    st.just(0.0),
    st.floats(min_value=-5.0, max_value=0.0),
    st.floats(min_value=1e-6, max_value=1e12),
    st.floats(min_value=1.0, max_value=3_000.0),
)


# One event: ``None`` for a lifecycle event, else the arguments of ``factory.request``.
event_args = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "timestamp_ms": st.integers(min_value=T0, max_value=T0 + 3 * HOUR_MS),
            # p3: a model's provider is not always the same, so not always a coarsening.
            "model": st.sampled_from(["m1", "m2", "m3"]),
            "provider": st.sampled_from(["p1", "p1", "p2", "p3"]),
            "failed": st.booleans(),
            "agent_id": st.sampled_from([None, "", "a1", "a2"]),
            "provider_id": st.sampled_from([None, "k1", "k2"]),
            "endpoint": st.sampled_from([None, "/v1/chat", "/v1/embed"]),
            "duration_ms": latency,
            "ttft_ms": latency,
            "input_tokens": st.integers(min_value=0, max_value=10**6),
            "output_tokens": st.integers(min_value=0, max_value=10**6),
            "cost_nanos": st.integers(min_value=0, max_value=10**12),
            "unpriced": st.booleans(),
        }
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(event_args, max_size=60))
def test_rollups_are_those_of_the_event_by_event_reference(
    args: list[dict[str, Any] | None],
) -> None:
    events = [lifecycle(T0) if a is None else request(**a) for a in args]
    want = _reference(events)
    got = rollup_events(events)
    assert got.keys() == want.keys()
    for key, r in got.items():
        _assert_same(r, want[key])
    # From the rows (the writer process's path): the very same rollups.
    from_rows = rollup_rows([event_to_row(e, SYNCED) for e in events])
    assert list(from_rows) == list(got)
    assert all(from_rows[k] == r for k, r in got.items())

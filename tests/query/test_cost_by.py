"""``cost_by``: the exact cost per facet value over a range, from rollups (SQLite,
PostgreSQL) or raw events (memory), equal to the sum over the events themselves."""

from __future__ import annotations

from collections import Counter

import pytest

from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.query import QueryError
from llmtally.query.aggregate import cost_by
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage
from llmtally.storage.rollups import HOUR_MS, MINUTE_MS

from ..storage.factory import T0, lifecycle, random_requests

START = T0 + 37_123  # ragged: inside a minute
END = T0 + 5 * HOUR_MS + 12 * MINUTE_MS + 7_000
EVENTS = random_requests(500, seed=5, start_ms=T0 - HOUR_MS, span_ms=7 * HOUR_MS)


def _expected(events: list[AnalyticsEvent], start: int, end: int, dim: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for e in events:
        p = e.payload
        if isinstance(p, LlmRequestCompleted | LlmRequestFailed) and start <= e.timestamp_ms < end:
            value = {
                "": "",
                "agent": e.agent_id or "",
                "model": p.model,
                "provider_id": p.provider_id or "",
            }[dim]
            out[value] += p.cost_nanos
    return dict(out)


@pytest.mark.parametrize("dim", ["", "agent", "model", "provider_id"])
async def test_cost_by_is_the_exact_sum_of_the_events(storage: QueryStorage, dim: str) -> None:
    await storage.ingest(EVENTS[:250])
    await storage.write_batch([*EVENTS[250:], lifecycle(T0 + 5)])
    got = await cost_by(storage, START, END, dim)
    assert got == _expected(EVENTS, START, END, dim)
    assert sum(got.values()) > 0


async def test_cost_by_reads_raw_events_without_rollups() -> None:
    storage = MemoryStorage()
    await storage.open()
    try:
        await storage.write_batch(EVENTS)
        assert not storage.has_rollups
        for dim in ("", "agent"):
            assert await cost_by(storage, START, END, dim) == _expected(EVENTS, START, END, dim)
        assert await cost_by(storage, START, START, "") == {}
    finally:
        await storage.close()


async def test_cost_by_refuses_bad_arguments() -> None:
    storage = MemoryStorage()
    with pytest.raises(QueryError) as bad_dim:
        await cost_by(storage, START, END, "colour")
    assert bad_dim.value.parameter == "dim"
    with pytest.raises(QueryError) as bad_range:
        await cost_by(storage, END, START, "")
    assert bad_range.value.parameter == "end"

"""``correlate`` and the envelope filters of ``events``: the chain of one correlation in
time order with its parent links, bounded pages, and ``QueryError`` for bad arguments."""

from __future__ import annotations

import msgspec
import pytest

from llmtally.events import AnalyticsEvent
from llmtally.query import MAX_LIMIT, QueryError, correlate, events
from llmtally.query.events import parse_tag
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage

from ..storage.factory import T0, lifecycle, request


def _in(
    correlation_id: str | None, ts: int, parent: str | None = None, **kw: object
) -> AnalyticsEvent:
    return msgspec.structs.replace(
        request(ts, **kw),  # type: ignore[arg-type]
        correlation_id=correlation_id,
        parent_event_id=parent,
    )


async def test_the_chain_comes_in_time_order_with_parent_links(storage: QueryStorage) -> None:
    root = _in("req-1", T0 + 50)
    child = _in("req-1", T0 + 10, root.event_id, failed=True)  # recorded elsewhere, earlier clock
    grandchild = _in("req-1", T0 + 90, child.event_id)
    other = _in("req-2", T0 + 20)
    loose = _in(None, T0 + 30)
    await storage.write_batch([root, other, loose])
    await storage.ingest([child, grandchild])  # another service's events, via the collector

    chain = await correlate(storage, "req-1")
    assert chain.correlation_id == "req-1"
    assert chain.count == 3 and chain.next_cursor is None
    assert [r.event_id for r in chain.events] == [
        child.event_id,
        root.event_id,
        grandchild.event_id,
    ]
    assert [r.parent_event_id for r in chain.events] == [root.event_id, None, child.event_id]
    assert [r.severity for r in chain.events] == ["error", "info", "info"]
    assert (await correlate(storage, "req-404")).events == []


async def test_the_chain_is_read_in_bounded_pages(storage: QueryStorage) -> None:
    stored = [_in("long", T0 + i) for i in range(25)] + [lifecycle(T0 + 5)]
    await storage.write_batch(stored)
    seen: list[str] = []
    cursor = None
    while True:
        chain = await correlate(storage, "long", limit=10, cursor=cursor)
        assert chain.count <= 10
        seen += [r.event_id for r in chain.events]
        cursor = chain.next_cursor
        if cursor is None:
            break
    assert seen == [e.event_id for e in stored[:25]]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        pytest.param({"correlation_id": ""}, "correlation_id", id="missing"),
        pytest.param({"correlation_id": "a b"}, "correlation_id", id="malformed"),
        pytest.param({"correlation_id": "x" * 129}, "correlation_id", id="too-long"),
        pytest.param({"correlation_id": "ok", "limit": 0}, "limit", id="limit-0"),
        pytest.param({"correlation_id": "ok", "limit": MAX_LIMIT + 1}, "limit", id="limit-max"),
        pytest.param({"correlation_id": "ok", "cursor": "junk"}, "cursor", id="cursor"),
    ],
)
async def test_bad_arguments_name_the_parameter(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(QueryError) as err:
        await correlate(MemoryStorage(), **kwargs)  # type: ignore[arg-type]
    assert err.value.parameter == parameter


async def test_events_filter_on_tags_and_correlation(storage: QueryStorage) -> None:
    a = msgspec.structs.replace(_in("req-1", T0 + 1), tags={"team": "search", "tier": "gold"})
    b = msgspec.structs.replace(_in("req-2", T0 + 2), tags={"team": "search"}, environment="dev")
    await storage.write_batch([a, b, _in(None, T0 + 3)])

    async def ids(**kw: object) -> list[str]:
        page = await events(storage, T0, T0 + 10, **kw)  # type: ignore[arg-type]
        return [r.event_id for r in page.events]

    assert await ids(tags=[parse_tag("team:search")]) == [a.event_id, b.event_id]
    assert await ids(tags=[parse_tag("team:search"), parse_tag("tier:gold")]) == [a.event_id]
    assert await ids(correlation_id="req-2") == [b.event_id]
    assert await ids(correlation_id="req-2", tags=[("tier", "gold")]) == []
    record = (await events(storage, T0, T0 + 10, correlation_id="req-2")).events[0]
    assert (record.tags, record.environment, record.schema_version) == (
        {"team": "search"},
        "dev",
        "1.0.0",
    )


def test_parse_tag_splits_at_the_first_colon() -> None:
    assert parse_tag("url:https://x") == ("url", "https://x")
    assert parse_tag("k:") == ("k", "")
    with pytest.raises(QueryError, match="key:value"):
        parse_tag("novalue")


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param([("bad key", "v")], id="key"),
        pytest.param([("k", "v" * 257)], id="value"),
        pytest.param([("k", "v")] * 17, id="too-many"),
    ],
)
async def test_bad_tag_filters_are_a_query_error(tags: list[tuple[str, str]]) -> None:
    with pytest.raises(QueryError) as err:
        await events(MemoryStorage(), 0, 1, tags=tags)
    assert err.value.parameter == "tag"


async def test_memory_storage_filters_alike() -> None:
    m = MemoryStorage()
    await test_the_chain_comes_in_time_order_with_parent_links(m)
    m = MemoryStorage()
    await test_events_filter_on_tags_and_correlation(m)

"""``events``: filters, limits, opaque cursors that page through everything exactly once."""

from __future__ import annotations

import base64

import msgspec
import pytest

from llmtally.query import MAX_LIMIT, EventRecord, QueryError, events
from llmtally.query.events import decode_cursor, encode_cursor, record_of
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage

from ..storage.factory import T0, lifecycle, random_requests, request


async def test_pages_walk_every_event_once(storage: QueryStorage) -> None:
    stored = random_requests(45, seed=31, start_ms=T0, span_ms=60_000)
    await storage.ingest(stored)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await events(storage, T0, T0 + 60_000, limit=10, cursor=cursor)
        pages += 1
        assert page.count == len(page.events) <= 10
        seen.extend(r.event_id for r in page.events)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 5
    assert seen == [e.event_id for e in sorted(stored, key=lambda e: (e.timestamp_ms, e.event_id))]


async def test_filters_and_record_shape(storage: QueryStorage) -> None:
    await storage.write_batch(
        [
            request(T0 + 1, model="gpt-4o", endpoint="/v1/responses", agent_id=None),
            request(T0 + 2, failed=True, provider_id="key-9"),
            lifecycle(T0 + 3),
        ]
    )
    page = await events(storage, T0, T0 + 10, success=False)
    [failed] = page.events
    assert (failed.success, failed.status_code, failed.error_code) == (False, 429, "rate_limited")
    assert failed.provider_id == "key-9"
    [ok] = (await events(storage, T0, T0 + 10, model="gpt-4o")).events
    assert (ok.success, ok.endpoint, ok.agent_id, ok.timestamp) == (
        True,
        "/v1/responses",
        None,
        T0 // 1000,
    )
    [local] = (await events(storage, T0, T0 + 10, event_type="router_started")).events
    assert local.success is None
    assert local.payload == {"port": 8080}
    assert (await events(storage, T0, T0 + 10, agent_id="nobody")).events == []
    assert page.start == T0 // 1000


def test_record_of_round_trips_as_json() -> None:
    record = record_of(request(T0, itl_mean_ms=3.5, usage_missing=True))
    again = msgspec.json.decode(msgspec.json.encode(record), type=EventRecord)
    assert again == record
    assert record.cost_micros == 1


def test_cursor_round_trip() -> None:
    cursor = encode_cursor((T0, "0190a2b4-0000-7000-8000-000000000000"))
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == (T0, "0190a2b4-0000-7000-8000-000000000000")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("not base64 !!", id="garbage"),
        pytest.param(base64.urlsafe_b64encode(b"\x93\x02\x01\xa1x").decode(), id="wrong-version"),
        pytest.param(base64.urlsafe_b64encode(b'{"a": 1}').decode(), id="json"),
        pytest.param("A" * 500, id="too-long"),
    ],
)
async def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(QueryError) as info:
        await events(MemoryStorage(), 0, 10, cursor=cursor)
    assert info.value.parameter == "cursor"


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": MAX_LIMIT + 1}, "limit", id="limit-over-max"),
        pytest.param({"event_type": "nope"}, "event_type", id="event_type"),
        pytest.param({"start_ms": 5, "end_ms": 4}, "end", id="end-before-start"),
    ],
)
async def test_bad_arguments_name_the_parameter(kwargs: dict[str, object], parameter: str) -> None:
    args: dict[str, object] = {"start_ms": 0, "end_ms": 10, **kwargs}
    with pytest.raises(QueryError) as info:
        await events(MemoryStorage(), **args)  # type: ignore[arg-type]
    assert info.value.parameter == parameter

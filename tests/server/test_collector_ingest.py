"""POST /api/v1/analytics/events against a real collector process."""

from __future__ import annotations

import sqlite3
import time

import anyio
import httpx2
import msgspec
import pytest

from llmtally.events import decode_wire_event
from llmtally.server.ingest import RequestError, parse_batch

from .collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    Collector,
    body,
    stored_id_counts,
    wire_batch,
    wire_event,
)
from .conftest import BUSY_TIMEOUT_MS, MAX_BODY_BYTES

JSON = {"Content-Type": "application/json"}


async def post(client: httpx2.AsyncClient, content: bytes) -> httpx2.Response:
    return await client.post(EVENTS_PATH, content=content, headers=JSON)


# --- parse_batch, without a server -------------------------------------------------------


def test_parse_batch_ignores_unknown_fields() -> None:
    parsed = parse_batch(body([wire_event(0, prompt="tell me a secret")]), 10)
    assert len(parsed.events) == 1
    assert parsed.rejected == []
    assert not hasattr(parsed.events[0], "prompt")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(b"{", 400, id="truncated"),
        pytest.param(b"[]", 400, id="not-an-object"),
        pytest.param(b'{"events": 3}', 400, id="events-not-a-list"),
        pytest.param(b'{"evts": []}', 400, id="no-events"),
        pytest.param(b'{"events": [1, 2, 3]}', 413, id="over-max-batch"),
    ],
)
def test_parse_batch_refuses(data: bytes, status: int) -> None:
    with pytest.raises(RequestError) as info:
        parse_batch(data, 2)
    assert info.value.status_code == status


# --- the endpoint ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_valid_batch_is_accepted_then_deduplicated(
    client: httpx2.AsyncClient, collector: Collector
) -> None:
    events = wire_batch(50)
    ids = [e["event_id"] for e in events]

    r = await post(client, body(events))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 50, "duplicates": 0, "rejected": []}

    r = await post(client, body(events))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 0, "duplicates": 50, "rejected": []}

    assert stored_id_counts(collector.db, ids) == dict.fromkeys(ids, 1)


@pytest.mark.asyncio
async def test_duplicates_within_one_batch_are_stored_once(
    client: httpx2.AsyncClient, collector: Collector
) -> None:
    event = wire_event(1)
    r = await post(client, body([event, event, event]))
    assert r.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert stored_id_counts(collector.db, [event["event_id"]]) == {event["event_id"]: 1}


@pytest.mark.asyncio
async def test_mixed_batch_stores_the_valid_and_lists_the_invalid(
    client: httpx2.AsyncClient, collector: Collector
) -> None:
    good = wire_batch(3)
    negative = wire_event(10, input_tokens=-1)
    bad_type = wire_event(11, event_type="router_started")
    no_model = wire_event(12)
    del no_model["model"]
    bad_id = wire_event(13, event_id="not-a-uuid")
    r = await post(
        client, body([good[0], negative, good[1], bad_type, no_model, bad_id, 42, good[2]])
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["accepted"] == 3
    assert result["duplicates"] == 0
    rejected = result["rejected"]
    assert [x["event_id"] for x in rejected] == [
        negative["event_id"],
        bad_type["event_id"],
        no_model["event_id"],
        "not-a-uuid",
        None,
    ]
    assert "input_tokens" in rejected[0]["error"]
    assert "event_type" in rejected[1]["error"]
    assert "model" in rejected[2]["error"]
    assert "event_id" in rejected[3]["error"]
    assert all(x["error"] for x in rejected)
    stored = stored_id_counts(collector.db, [e["event_id"] for e in good] + [negative["event_id"]])
    assert stored == {e["event_id"]: 1 for e in good}


@pytest.mark.asyncio
async def test_empty_batch_is_ok(client: httpx2.AsyncClient) -> None:
    r = await post(client, body([]))
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicates": 0, "rejected": []}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"events": [', id="truncated"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'[{"event_id": "x"}]', id="array"),
        pytest.param(b'{"events": {"a": 1}}', id="events-object"),
    ],
)
async def test_malformed_body_is_400_json(client: httpx2.AsyncClient, content: bytes) -> None:
    r = await post(client, content)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]


@pytest.mark.asyncio
async def test_too_many_events_is_413(client: httpx2.AsyncClient) -> None:
    r = await post(client, body([wire_event(i) for i in range(1001)]))
    assert r.status_code == 413
    assert "1000" in r.json()["error"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param(None, id="missing"),
    ],
)
async def test_wrong_content_type_is_415(
    client: httpx2.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = await client.post(EVENTS_PATH, content=body([]), headers=headers)
    assert r.status_code == 415
    assert r.json()["error"]


@pytest.mark.asyncio
async def test_json_content_type_with_charset_is_fine(client: httpx2.AsyncClient) -> None:
    r = await client.post(
        EVENTS_PATH,
        content=body([]),
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code == 200


@pytest.mark.asyncio
async def test_unknown_route_and_method_answer_json(anon_client: httpx2.AsyncClient) -> None:
    r = await anon_client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}
    r = await anon_client.get(EVENTS_PATH)
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/json"


# --- body limits, over a raw socket (a client library would refuse to misbehave) --------


def _request_head(extra: str) -> bytes:
    return (
        f"POST {EVENTS_PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {INGEST_TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"{extra}\r\n"
    ).encode()


async def _read_response_head(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive()
        data += chunk
    return data


@pytest.mark.asyncio
async def test_declared_oversize_body_is_413_before_reading(collector: Collector) -> None:
    started = time.monotonic()
    with anyio.fail_after(5):  # the body never comes: the server must not wait for it
        async with await anyio.connect_tcp("127.0.0.1", collector.port) as stream:
            await stream.send(_request_head("Content-Length: 10000000000\r\n"))
            head = await _read_response_head(stream)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_streamed_oversize_body_is_413_without_reading_the_rest(
    collector: Collector,
) -> None:
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", collector.port) as stream:
            await stream.send(_request_head("Transfer-Encoding: chunked\r\n"))
            # One chunk past the limit, and never the terminating chunk: the server must
            # answer as soon as the limit is crossed instead of waiting for the end.
            for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
                await stream.send(frame)
            head = await _read_response_head(stream)
    assert head.startswith(b"HTTP/1.1 413 "), head


@pytest.mark.asyncio
async def test_body_at_the_limit_is_read(client: httpx2.AsyncClient) -> None:
    content = body([])
    content = content[:-1] + b" " * (MAX_BODY_BYTES - len(content)) + b"}"
    assert len(content) == MAX_BODY_BYTES
    r = await post(client, content)
    assert r.status_code == 200, r.text


# --- a locked database -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_locked_database_is_503_with_retry_after(
    client: httpx2.AsyncClient, collector: Collector
) -> None:
    events = wire_batch(5, start=100)
    conn = sqlite3.connect(collector.db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            r = await post(client, body(events))
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]
    assert time.monotonic() - started < BUSY_TIMEOUT_MS / 1000 + 2

    # Nothing was stored; the retry (what a syncer does after 503) goes through.
    r = await post(client, body(events))
    assert r.json() == {"accepted": 5, "duplicates": 0, "rejected": []}


_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param(_ID, id="valid"),
        pytest.param(_ID.upper(), id="upper-case"),
        pytest.param(_ID + "\n", id="trailing-newline"),
        pytest.param(_ID + "\n" + _ID, id="two-ids-one-string"),
        pytest.param(_ID[:-1], id="35-chars"),
        pytest.param(_ID + "0", id="37-chars"),
        pytest.param(_ID.replace("-", "_"), id="underscores"),
        pytest.param(_ID[:-1] + "g", id="not-hex"),
        pytest.param(_ID[:-1] + "\u0663", id="non-ascii-digit"),
        pytest.param("", id="empty"),
    ],
)
def test_parse_batch_fast_path_accepts_exactly_what_event_by_event_does(
    event_id: str,
) -> None:
    # A valid neighbour on each side: the whole batch is checked at once on the fast path.
    events = [wire_event(0), wire_event(1, event_id=event_id), wire_event(2)]
    parsed = parse_batch(body(events), 10)
    one_by_one = [decode_wire_event(msgspec.json.encode(e)) for e in events[::2]]
    error: str | None = None
    try:
        one_by_one.insert(1, decode_wire_event(msgspec.json.encode(events[1])))
    except msgspec.ValidationError as exc:
        error = str(exc)
    if error is None:
        assert parsed.rejected == []
    else:
        echoed = event_id if len(event_id) <= 64 else None  # longer ones are not echoed
        assert [(r.event_id, r.error) for r in parsed.rejected] == [(echoed, error)]
    assert [msgspec.structs.asdict(w) for w in parsed.events] == [
        msgspec.structs.asdict(w) for w in one_by_one
    ]

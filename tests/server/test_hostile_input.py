"""Hostile HTTP input against a real ``llmtally serve`` on loopback.

Each case is sent over a raw socket (a client library would refuse to misbehave) and
must get a 4xx — or, for one bad event inside a well-formed batch, a 200 that lists it
in ``rejected`` and stores nothing — and after each one the server must go on serving:
a normal batch is stored and ``/health`` answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import httpx2
import pytest
import pytest_asyncio

from .collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    READ_TOKEN,
    Collector,
    body,
    start_collector,
    stored_id_counts,
    wire_batch,
    wire_event,
)

MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 1000
BODY_TIMEOUT_S = 1.0
ANSWER_TIMEOUT_S = 15.0  # the server answers well before; this only bounds a hang
DEPTH = 100_000


@pytest.fixture(scope="module")
def hostile_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    workdir: Path = tmp_path_factory.mktemp("hostile")
    server = start_collector(
        workdir,
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--max-batch",
        str(MAX_BATCH),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
    )
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.log_text()


@pytest_asyncio.fixture
async def ingest(hostile_collector: Collector) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(
        base_url=hostile_collector.url,
        timeout=10.0,
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    ) as client:
        yield client


@dataclass
class Answer:
    status: int
    head: str
    body: bytes


def _post_head(extra: str = "", content_type: str | None = "application/json") -> bytes:
    ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (
        f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {INGEST_TOKEN}\r\nConnection: close\r\n{ctype}{extra}\r\n"
    ).encode()


def _post(content: bytes, content_type: str | None = "application/json") -> bytes:
    return _post_head(f"Content-Length: {len(content)}\r\n", content_type) + content


async def _read_answer(stream: anyio.abc.SocketStream) -> Answer:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            break
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return Answer(int(head.split()[1]), head.decode("latin-1"), rest)


async def _exchange(port: int, *parts: bytes, pause: float = 0.0) -> Answer:
    """Send ``parts`` (``pause`` seconds apart: a slow client) while reading the answer.

    The server may answer and close before everything is sent: sending stops then. (Read
    concurrently: once the server has closed, more data sent makes its kernel reset the
    connection, and a reset discards an answer not read yet.)"""
    answered = anyio.Event()

    async def send_all(stream: anyio.abc.SocketStream) -> None:
        try:
            for i, part in enumerate(parts):
                if pause and i:
                    with anyio.move_on_after(pause):  # the client under test is slow
                        await answered.wait()
                if answered.is_set():
                    return
                await stream.send(part)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            pass  # the server gave up on us: its answer is what matters

    with anyio.fail_after(ANSWER_TIMEOUT_S):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all, stream)
                answer = await _read_answer(stream)
                answered.set()
            return answer


async def _still_serving(client: httpx2.AsyncClient, collector: Collector) -> None:
    events = wire_batch(3)
    r = await client.post(EVENTS_PATH, content=body(events), headers=_JSON)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert stored_id_counts(collector.db, [e["event_id"] for e in events]) == {
        e["event_id"]: 1 for e in events
    }
    assert (await client.get("/health")).status_code == 200


_JSON = {"Content-Type": "application/json"}


def _event_with(old: bytes, new: bytes) -> bytes:
    one = json.dumps(wire_event(1)).encode()
    assert old in one
    return b'{"events": [' + one.replace(old, new) + b"]}"


def _chunks(total: int, size: int = 64 * 1024) -> list[bytes]:
    chunk = b" " * size
    frame = f"{size:x}\r\n".encode() + chunk + b"\r\n"
    return [frame] * (total // size + 1)


HOSTILE = [
    pytest.param(
        [_post_head(f"Content-Length: {10 * MAX_BODY_BYTES}\r\n")], 413, id="declared-oversize"
    ),
    pytest.param(
        [_post_head("Transfer-Encoding: chunked\r\n"), *_chunks(MAX_BODY_BYTES)],
        413,
        id="chunked-oversize-no-length",
    ),
    pytest.param([_post(b'{"events":' + b"[" * DEPTH + b"]" * DEPTH + b"}")], 400, id="deep-nest"),
    pytest.param(
        [_post(b'{"x":' + b"[" * DEPTH + b"]" * DEPTH + b',"events":[]}')],
        400,
        id="deep-nest-in-unknown-field",
    ),
    pytest.param(
        [_post(b'{"events":[{"a":' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"}]}")],
        400,
        id="deep-nest-in-event",
    ),
    pytest.param(
        [_post(_event_with(b'"gpt-4o-mini"', b'"gpt\xff\xfe"'))], 400, id="invalid-utf8-in-event"
    ),
    pytest.param([_post(b'{"ev\xc3\x28nts": []}')], 400, id="invalid-utf8-key"),
    pytest.param([_post(b'{"events": ' + b"9" * 10_000 + b"}")], 400, id="huge-int-as-batch"),
    pytest.param([_post(b'{"events": []}', "text/plain")], 415, id="text-plain"),
    pytest.param(
        [_post(b'{"events": []}', "multipart/form-data; boundary=x")], 415, id="multipart"
    ),
    pytest.param([_post(b'{"events": []}', None)], 415, id="no-content-type"),
    pytest.param([_post(b"\x00" * 1000)], 400, id="binary-garbage"),
    pytest.param(
        [_post_head("Content-Length: 12\r\nContent-Length: 99999999\r\n") + b'{"events":[]'],
        400,
        id="conflicting-content-lengths",
    ),
]


@pytest.mark.parametrize(("parts", "status"), HOSTILE)
async def test_hostile_bodies_get_a_4xx_and_the_server_keeps_serving(
    hostile_collector: Collector, ingest: httpx2.AsyncClient, parts: list[bytes], status: int
) -> None:
    answer = await _exchange(hostile_collector.port, *parts)
    assert answer.status == status, answer
    if "content-type: application/json" in answer.head.lower():  # else uvicorn's own 400
        assert json.loads(answer.body)["error"]
    await _still_serving(ingest, hostile_collector)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b'"input_tokens": 101', b'"input_tokens": ' + b"9" * 5000, id="huge-int"),
        pytest.param(b'"input_tokens": 101', b'"input_tokens": 1e999999', id="huge-float"),
        pytest.param(b'"input_tokens": 101', b'"input_tokens": -1', id="negative"),
        pytest.param(
            b'"model": "gpt-4o-mini"', b'"model": "' + b"m" * 5000 + b'"', id="long-model"
        ),
        pytest.param(b'"timestamp_ms": 1700000000001', b'"timestamp_ms": null', id="null"),
    ],
)
async def test_one_bad_event_is_rejected_and_nothing_stored(
    hostile_collector: Collector, ingest: httpx2.AsyncClient, old: bytes, new: bytes
) -> None:
    """A bad event in a well-formed batch is listed in ``rejected`` (the syncer counts it
    and never resends it) rather than failing its whole batch."""
    content = _event_with(old, new)
    answer = await _exchange(hostile_collector.port, _post(content))
    assert answer.status == 200, answer
    result = json.loads(answer.body)
    assert (result["accepted"], result["duplicates"], len(result["rejected"])) == (0, 0, 1)
    event_id = json.loads(content.split(b"[", 1)[1].split(b'"event_id": ')[1][:38])
    assert stored_id_counts(hostile_collector.db, [event_id]) == {}
    await _still_serving(ingest, hostile_collector)


async def test_a_batch_of_10000_events_is_413_and_nothing_stored(
    hostile_collector: Collector, ingest: httpx2.AsyncClient
) -> None:
    # Events with nothing but an id: the batch fits the body limit, so the count decides.
    ids = [wire_event(i)["event_id"] for i in range(10 * MAX_BATCH)]
    content = json.dumps({"events": [{"event_id": i} for i in ids]}).encode()
    assert len(content) <= MAX_BODY_BYTES
    r = await ingest.post(EVENTS_PATH, content=content, headers=_JSON)
    assert r.status_code == 413, r.text
    assert "split it" in r.json()["error"]
    assert stored_id_counts(hostile_collector.db, ids[:500]) == {}
    await _still_serving(ingest, hostile_collector)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_trickling_in_too_slowly_is_408(
    hostile_collector: Collector, ingest: httpx2.AsyncClient, chunked: bool
) -> None:
    """Slowloris: the client sends a byte at a time, each well within any idle timeout,
    for ever. The server gives up once ``--body-timeout`` has passed since the body
    began, answers 408 and closes the connection."""
    content = body(wire_batch(1))
    if chunked:
        head = _post_head("Transfer-Encoding: chunked\r\n")
        drips = [b"1\r\n" + content[i : i + 1] + b"\r\n" for i in range(len(content))]
    else:
        head = _post_head(f"Content-Length: {len(content)}\r\n")
        drips = [content[i : i + 1] for i in range(len(content))]
    # 0.1 s apart, the body would take far longer than BODY_TIMEOUT_S to arrive.
    assert len(drips) * 0.1 > 10 * BODY_TIMEOUT_S
    answer = await _exchange(hostile_collector.port, head, *drips, pause=0.1)
    assert answer.status == 408, answer
    assert "connection: close" in answer.head.lower()
    await _still_serving(ingest, hostile_collector)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/analytics/export?format=csv&filename=../../etc/passwd", id="filename-param"),
        pytest.param("/analytics/export?filename=%2e%2e%2f%2e%2e%2fetc%2fpasswd", id="encoded"),
        pytest.param("/analytics/export?format=../../etc/passwd", id="format-traversal"),
        pytest.param("/analytics/export/../../../etc/passwd", id="path-dots"),
        pytest.param("/analytics/export/..%2f..%2fetc%2fpasswd", id="path-encoded"),
    ],
)
async def test_path_traversal_in_export_is_refused(
    hostile_collector: Collector, ingest: httpx2.AsyncClient, target: str
) -> None:
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {READ_TOKEN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = await _exchange(hostile_collector.port, request)
    assert 400 <= answer.status < 500, answer
    assert "passwd" not in answer.head
    assert "content-disposition" not in answer.head.lower()
    await _still_serving(ingest, hostile_collector)


async def test_the_export_download_name_is_fixed(hostile_collector: Collector) -> None:
    async with httpx2.AsyncClient(
        base_url=hostile_collector.url, headers={"Authorization": f"Bearer {READ_TOKEN}"}
    ) as reader:
        r = await reader.get("/analytics/export", params={"format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="llmtally-export.csv"'

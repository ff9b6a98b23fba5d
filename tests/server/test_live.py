"""``LiveHub`` (the broadcaster) and ``GET /analytics/live`` on a real uvicorn server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import msgspec
import pytest

from llmtally._ids import new_event_id
from llmtally.analysis.anomaly import Finding
from llmtally.events import (
    AnalyticsEvent,
    decode_wire_event,
    from_wire,
    to_wire,
)
from llmtally.query.anomalies import record_of_anomaly
from llmtally.server.app import create_app
from llmtally.server.auth import Auth, Scope
from llmtally.server.detector import anomaly_event
from llmtally.server.live import (
    KEEPALIVE_FRAME,
    HubClosedError,
    LiveFilter,
    LiveHub,
    TooManySubscribersError,
    encode_frame,
)
from llmtally.storage.sqlite import SqliteStorage

from ..integrations.serving import serve
from .collector import wire_event
from .watched_hub import WatchedHub

READ, INGEST = "live-read", "live-ingest"


def event(i: int = 0, **overrides: Any) -> AnalyticsEvent:
    return from_wire(decode_wire_event(msgspec.json.encode(wire_event(i, **overrides))))


# --- the hub ----------------------------------------------------------------------------


def test_frame_is_the_contract() -> None:
    e = event(6)  # a failed one
    frame = encode_frame(e)
    wire = msgspec.json.encode(to_wire(e))
    assert frame == b"id: " + e.event_id.encode() + b"\nevent: event\ndata: " + wire + b"\n\n"
    assert frame.count(b"\n") == 4  # one data line, whatever the message holds


async def test_subscribers_get_matching_events_in_order() -> None:
    hub = LiveHub()
    events = [event(i) for i in range(4)]  # odd: gpt-4o-mini, even: claude
    async with hub.subscribe() as everything, hub.subscribe(LiveFilter(model="gpt-4o-mini")) as gpt:
        hub.publish(events)
        got_all = [everything.frames.receive_nowait() for _ in events]
        got_gpt = [gpt.frames.receive_nowait() for _ in range(2)]
        with pytest.raises(anyio.WouldBlock):
            gpt.frames.receive_nowait()
    assert got_all == [encode_frame(e) for e in events]
    assert got_gpt == [encode_frame(events[1]), encode_frame(events[3])]
    assert hub.subscriber_count == 0
    assert hub.published == 4


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        pytest.param(LiveFilter(provider="anthropic"), [0, 2, 4, 6], id="provider"),
        pytest.param(LiveFilter(agent_id="agent-1"), [1, 6], id="agent"),
        pytest.param(LiveFilter(event_type="llm_request_failed"), [6], id="event-type"),
        pytest.param(LiveFilter(model="claude-3-5-sonnet", agent_id="agent-2"), [2], id="both"),
    ],
)
async def test_filters(flt: LiveFilter, expected: list[int]) -> None:
    hub = LiveHub()
    events = [event(i) for i in range(7)]
    async with hub.subscribe(flt) as sub:
        hub.publish(events)
        got = []
        while True:
            try:
                got.append(sub.frames.receive_nowait())
            except anyio.WouldBlock:
                break
    assert got == [encode_frame(events[i]) for i in expected]


async def test_a_slow_subscriber_loses_events_and_never_blocks_publish() -> None:
    hub = LiveHub(buffer_size=3)
    events = [event(i) for i in range(10)]
    async with hub.subscribe() as slow, hub.subscribe(LiveFilter(model="nobody")) as idle:
        hub.publish(events)  # synchronous: returns although nobody reads
        kept = [slow.frames.receive_nowait() for _ in range(3)]
        with pytest.raises(anyio.WouldBlock):
            slow.frames.receive_nowait()
        assert slow.dropped == 7
        assert idle.dropped == 0
        later = event(11)
        hub.publish([later])  # room again
        assert slow.frames.receive_nowait() == encode_frame(later)
    assert kept == [encode_frame(e) for e in events[:3]]
    assert hub.dropped == 7


async def test_last_event_id_replays_what_came_after() -> None:
    hub = LiveHub(replay_size=5)
    events = [event(i) for i in range(8)]
    hub.publish(events)
    async with hub.subscribe(last_event_id=events[4].event_id) as sub:
        assert sub.backlog == [encode_frame(e) for e in events[5:]]
    async with hub.subscribe(
        LiveFilter(model="gpt-4o-mini"), last_event_id=events[4].event_id
    ) as sub:
        assert sub.backlog == [encode_frame(events[5]), encode_frame(events[7])]
    async with hub.subscribe(last_event_id=events[1].event_id) as sub:  # forgotten
        assert sub.backlog == []
    async with hub.subscribe(last_event_id="not-an-id") as sub:
        assert sub.backlog == []


async def test_limits_and_close() -> None:
    hub = LiveHub(max_subscribers=1)
    async with hub.subscribe() as sub:
        with pytest.raises(TooManySubscribersError):
            async with hub.subscribe():
                pass  # pragma: no cover
        last = event(1)
        hub.publish([last])
        hub.close()
        assert await sub.frames.receive() == encode_frame(last)  # buffered frames first
        with pytest.raises(anyio.EndOfStream):
            await sub.frames.receive()
    with pytest.raises(HubClosedError):
        async with hub.subscribe():
            pass  # pragma: no cover


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LiveHub(buffer_size=0)
    with pytest.raises(ValueError, match="positive"):
        LiveHub(keepalive_s=0)


def anomaly(
    dim: str = "model", value: str = "gpt-4o-mini", minute_ms: int = 60_000
) -> AnalyticsEvent:
    return anomaly_event(dim, value, minute_ms, Finding("request_rate", "spike", 90, 30.5, 8.25))


def test_anomaly_frame_is_the_contract() -> None:
    a = anomaly()
    record = record_of_anomaly(a)
    assert record is not None
    frame = encode_frame(a)
    head, data = frame.removesuffix(b"\n\n").rsplit(b"\ndata: ", 1)
    assert head == b"id: " + a.event_id.encode() + b"\nevent: anomaly"
    assert msgspec.json.decode(data) == {
        "event_type": "anomaly_detected",
        **msgspec.to_builtins(record),
    }
    assert data.startswith(b'{"event_type":"anomaly_detected",')


async def test_anomalies_are_published_filtered_and_replayed() -> None:
    hub = LiveHub()
    request, by_model, by_provider = event(1), anomaly(), anomaly("provider", "openai")
    filters = {
        "all": LiveFilter(),
        "anomalies": LiveFilter(event_type="anomaly_detected"),
        "model": LiveFilter(model="gpt-4o-mini"),
        "provider": LiveFilter(provider="openai"),
        "agent": LiveFilter(agent_id="agent-1"),
        "requests": LiveFilter(event_type="llm_request_completed"),
    }
    got: dict[str, list[bytes]] = {}
    async with AsyncExitStack() as stack:
        subs = {k: await stack.enter_async_context(hub.subscribe(f)) for k, f in filters.items()}
        hub.publish([request, by_model, by_provider])
        for name, sub in subs.items():
            got[name] = []
            while True:
                try:
                    got[name].append(sub.frames.receive_nowait())
                except anyio.WouldBlock:
                    break
    frame = {e.event_id: encode_frame(e) for e in (request, by_model, by_provider)}
    assert got == {
        "all": [frame[e.event_id] for e in (request, by_model, by_provider)],
        "anomalies": [frame[by_model.event_id], frame[by_provider.event_id]],
        "model": [frame[request.event_id], frame[by_model.event_id]],
        "provider": [frame[request.event_id], frame[by_provider.event_id]],
        "agent": [frame[request.event_id]],  # an anomaly has no agent
        "requests": [frame[request.event_id]],
    }
    assert hub.published == 3
    async with hub.subscribe(filters["anomalies"], last_event_id=request.event_id) as sub:
        assert sub.backlog == [frame[by_model.event_id], frame[by_provider.event_id]]


def test_lifecycle_events_are_skipped_not_raised() -> None:
    from llmtally.events import RouterStarted

    hub = LiveHub()
    hub.publish([AnalyticsEvent(event_id=new_event_id(), timestamp_ms=1, payload=RouterStarted())])
    assert hub.published == 0


# --- over HTTP --------------------------------------------------------------------------


@asynccontextmanager
async def live_server(tmp_path: Path, hub: LiveHub) -> AsyncIterator[str]:
    auth = Auth({READ: Scope.READ, INGEST: Scope.INGEST})
    app = create_app(SqliteStorage(tmp_path / "live.db"), auth=auth, own_storage=True, live=hub)
    async with serve(app, lifespan="on") as url:
        try:
            yield url
        finally:
            hub.close()  # what ``llmtally serve`` does when shutdown begins


class SseReader:
    """Reads a response's server-sent-event stream frame by frame (raw bytes)."""

    def __init__(self, response: httpx2.Response) -> None:
        self._chunks = response.aiter_bytes()
        self._buffer = b""

    async def frame(self) -> bytes:
        with anyio.fail_after(10):
            while b"\n\n" not in self._buffer:
                self._buffer += await anext(self._chunks)
        frame, _, self._buffer = self._buffer.partition(b"\n\n")
        return frame + b"\n\n"

    async def rest(self) -> bytes:
        """Everything until the server ends the stream."""
        with anyio.fail_after(10):
            async for chunk in self._chunks:
                self._buffer += chunk
        rest, self._buffer = self._buffer, b""
        return rest


def now_event(i: int, **overrides: Any) -> dict[str, Any]:
    return wire_event(i, timestamp_ms=int(time.time() * 1000), **overrides)


async def test_live_stream_sends_new_events_once_and_keepalives(tmp_path: Path) -> None:
    hub = WatchedHub(keepalive_s=0.2)
    async with (
        live_server(tmp_path, hub) as url,
        httpx2.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/analytics/live", headers={"Authorization": f"Bearer {READ}"}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        sse = SseReader(r)
        assert await sse.frame() == KEEPALIVE_FRAME  # sent at once: the subscription is live
        batch = [now_event(1), now_event(6)]
        ingest = {"Authorization": f"Bearer {INGEST}"}
        assert (
            await client.post("/api/v1/analytics/events", json={"events": batch}, headers=ingest)
        ).json()["accepted"] == 2
        # The same batch again (a retried sync): duplicates, never re-sent.
        again = await client.post(
            "/api/v1/analytics/events", json={"events": [*batch, now_event(3)]}, headers=ingest
        )
        assert again.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
        frames = [await sse.frame() for _ in range(3)]
        ids = [f.split(b"\n")[0].removeprefix(b"id: ").decode() for f in frames]
        assert ids == [batch[0]["event_id"], batch[1]["event_id"], ids[2]]
        assert ids[2] != batch[0]["event_id"]
        first = frames[0].split(b"\n")
        assert first[1] == b"event: event"
        data = msgspec.json.decode(first[2].removeprefix(b"data: "))
        assert data == {k: v for k, v in batch[0].items() if v is not None}
        assert await sse.frame() == KEEPALIVE_FRAME  # silence: keepalive after 0.2 s
        assert hub.subscriber_count == 1
    with anyio.fail_after(10):
        await hub.released()  # the client left: the subscription is released
    assert hub.subscriber_count == 0


async def test_filters_last_event_id_and_refusals(tmp_path: Path) -> None:
    hub = LiveHub(max_subscribers=1)
    read = {"Authorization": f"Bearer {READ}"}
    async with (
        live_server(tmp_path, hub) as url,
        httpx2.AsyncClient(base_url=url, timeout=10) as client,
    ):
        for headers in ({}, {"Authorization": f"Bearer {INGEST}"}):
            r = await client.get("/analytics/live", headers=headers)
            assert r.status_code == 401
        r = await client.get(
            "/analytics/live", params={"event_type": "router_started"}, headers=read
        )
        assert r.status_code == 400
        assert r.json()["parameter"] == "event_type"
        assert "anomaly_detected" in r.json()["error"]

        r = await client.get("/analytics/live", params={"agent": "a"}, headers=read)
        assert r.status_code == 400
        assert r.json() == {"error": "agent: unknown parameter", "parameter": "agent"}
        earlier = [now_event(i) for i in range(4)]
        ingest = {"Authorization": f"Bearer {INGEST}"}
        await client.post("/api/v1/analytics/events", json={"events": earlier}, headers=ingest)
        params = {"provider": "openai", "event_type": "llm_request_completed"}
        headers = {**read, "Last-Event-ID": earlier[0]["event_id"]}
        async with client.stream("GET", "/analytics/live", params=params, headers=headers) as r:
            sse = SseReader(r)
            assert await sse.frame() == KEEPALIVE_FRAME
            replayed = [await sse.frame() for _ in range(2)]  # events 1 and 3 are openai
            assert [f.split(b"\n")[0] for f in replayed] == [
                b"id: " + earlier[i]["event_id"].encode() for i in (1, 3)
            ]
            busy = await client.get("/analytics/live", headers=read)
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "5"
            await client.post(
                "/api/v1/analytics/events",
                json={"events": [now_event(2), now_event(5), now_event(13, model="m2")]},
                headers=ingest,
            )
            nxt = await sse.frame()  # event 2 is anthropic: skipped
            assert nxt.startswith(b"id: ")
            assert b'"provider":"openai"' in nxt
            assert b'"model":"m2"' not in nxt
            hub.close()  # shutdown begins: the stream ends
            rest = await sse.rest()
            assert b'"model":"m2"' not in rest
        closed = await client.get("/analytics/live", headers=read)
        assert closed.status_code == 503


async def test_metrics_count_subscribers_and_drops(tmp_path: Path) -> None:
    hub = LiveHub(buffer_size=1)
    async with (
        live_server(tmp_path, hub) as url,
        httpx2.AsyncClient(base_url=url, timeout=10) as client,
    ):
        async with hub.subscribe(), hub.subscribe(LiveFilter(model="gpt-4o-mini")):
            hub.publish([event(i) for i in range(4)])  # 3 + 1 do not fit (nobody reads)
            text = (await client.get("/metrics", headers={"Authorization": f"Bearer {READ}"})).text
    assert "llmtally_live_subscribers 2.0" in text
    assert "llmtally_live_events_total 4.0" in text
    assert "llmtally_live_dropped_events_total 4.0" in text

"""Anomalies end to end on a real collector app (uvicorn, SQLite): the detector stores
them, the live hub publishes them (``GET /analytics/live`` streams them as ``event:
anomaly`` frames) and the dashboard lists and marks them."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path

import anyio
import httpx2
import msgspec

from llmtally.events import AnalyticsEvent
from llmtally.query.anomalies import LiveAnomaly
from llmtally.server.app import create_app
from llmtally.server.auth import Auth, Scope
from llmtally.server.detector import DEFAULT_SETTLE_S
from llmtally.server.live import LiveFilter, LiveHub
from llmtally.storage.rollups import MINUTE_MS
from llmtally.storage.sqlite import SqliteStorage

from ..integrations.serving import serve
from ..storage.factory import request
from .test_live import SseReader

READ = "anomaly-read"
SPIKE = 80


def traffic(t0: int) -> list[AnalyticsEvent]:
    """90 minutes from ``t0`` of 25-35 requests/minute of one model, and 180 in minute
    ``SPIKE``: a request-rate and cost-rate spike of the model and of its provider."""
    events = []
    for m in range(90):
        n = 180 if m == SPIKE else 25 + (m * 7) % 11
        events += [request(t0 + m * MINUTE_MS + i * 300) for i in range(n)]
    return events


class _Anomalies(HTMLParser):
    """``(tag, chart id or None, data-anomaly)`` of every element that has one."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str | None, str | None]] = []
        self._chart: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self._chart = a.get("id")
        if "data-anomaly" in a:
            self.found.append((tag, self._chart if tag == "g" else None, a["data-anomaly"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None


def parse_frame(frame: bytes) -> tuple[str, str, bytes]:
    """``(id, event, data)`` of one SSE frame."""
    id_line, event_line, data_line = frame.rstrip(b"\n").split(b"\n")
    return (
        id_line.removeprefix(b"id: ").decode(),
        event_line.removeprefix(b"event: ").decode(),
        data_line.removeprefix(b"data: "),
    )


async def test_detected_anomalies_are_published_live_and_shown_on_the_dashboard(
    tmp_path: Path,
) -> None:
    # Traffic whose last minute closes (settles) just before now: the detector's first
    # pass, at startup, judges the spike ten minutes ago.
    now_ms = int(time.time() * 1000)
    closed = (now_ms - int(DEFAULT_SETTLE_S * 1000)) // MINUTE_MS * MINUTE_MS
    t0 = closed - 90 * MINUTE_MS
    seed = SqliteStorage(tmp_path / "c.db")
    await seed.open()
    await seed.ingest(traffic(t0))
    await seed.close()

    hub = LiveHub()
    app = create_app(
        SqliteStorage(tmp_path / "c.db"),
        auth=Auth({READ: Scope.READ}),
        own_storage=True,
        live=hub,
        detect_interval_s=3600,
    )
    headers = {"Authorization": f"Bearer {READ}"}
    # Subscribed before the app starts: the first pass cannot be missed.
    async with hub.subscribe(LiveFilter(event_type="anomaly_detected")) as sub:
        async with (
            serve(app, lifespan="on") as url,
            httpx2.AsyncClient(base_url=url, timeout=10, headers=headers) as client,
        ):
            with anyio.fail_after(30):
                frames = [parse_frame(await sub.frames.receive()) for _ in range(4)]
            assert {event for _, event, _ in frames} == {"anomaly"}
            published = [msgspec.json.decode(data, type=LiveAnomaly) for _, _, data in frames]
            assert all(data.startswith(b'{"event_type":"anomaly_detected",') for *_, data in frames)
            assert [a.event_id for a in published] == [i for i, _, _ in frames]
            assert {(a.dim, a.metric, a.kind, a.minute_ms) for a in published} == {
                (dim, metric, "spike", t0 + SPIKE * MINUTE_MS)
                for dim in ("model", "provider")
                for metric in ("request_rate", "cost_rate")
            }

            # They are what /analytics/anomalies lists (stored), newest first.
            listed = (await client.get("/analytics/anomalies")).json()["anomalies"]
            assert sorted(a["event_id"] for a in listed) == sorted(a.event_id for a in published)
            assert msgspec.json.decode(frames[0][2]) == {
                "event_type": "anomaly_detected",
                **next(a for a in listed if a["event_id"] == published[0].event_id),
            }

            # Over HTTP: a reconnecting client gets the rest replayed, filtered.
            params = {"event_type": "anomaly_detected", "model": "gpt-4o-mini"}
            replay = {**headers, "Last-Event-ID": published[0].event_id}
            async with client.stream("GET", "/analytics/live", params=params, headers=replay) as r:
                assert r.status_code == 200
                sse = SseReader(r)
                await sse.frame()  # the opening keepalive
                event_id, event, data = parse_frame(await sse.frame())
            model_cost = next(a for a in published if (a.dim, a.metric) == ("model", "cost_rate"))
            assert (event_id, event) == (model_cost.event_id, "anomaly")
            assert msgspec.json.decode(data, type=LiveAnomaly) == model_cost

            # The dashboard lists them (newest first, as the API does) and marks them.
            page = await client.get("/")
            assert page.status_code == 200
            p = _Anomalies()
            p.feed(page.text)
            rows = [anomaly for tag, _, anomaly in p.found if tag == "tr"]
            assert rows == [a["event_id"] for a in listed]
            marked = {anomaly: chart for tag, chart, anomaly in p.found if tag == "g"}
            assert marked == {
                a.event_id: "chart-traffic" if a.metric == "request_rate" else "chart-cost"
                for a in published
            }
            assert "No anomalies detected" not in page.text
    assert hub.published == 4

"""``/analytics/timeseries`` and ``/analytics/anomalies`` on a real ``llmtally serve``
(SQLite): read token, values, 400s naming the parameter, and the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import msgspec
import pytest

from llmtally.analysis.anomaly import Finding
from llmtally.query import TimeSeriesResult
from llmtally.query.anomalies import AnomalyPage
from llmtally.server.detector import anomaly_event
from llmtally.storage.sqlite import SqliteStorage

from .collector import EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, Collector, wire_event

MINUTE = 60_000
BASE_MS = (int(time.time() * 1000) // MINUTE - 10) * MINUTE  # ten minutes ago, aligned


def _client(collector: Collector, token: str | None) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.Client(base_url=collector.url, timeout=10.0, headers=headers)


@pytest.fixture(scope="module")
def posted(collector: Collector) -> list[dict[str, Any]]:
    """Requests in minutes 0, 1 and 3 after ``BASE_MS`` (i requests in minute i)."""
    events = [
        wire_event(n, timestamp_ms=BASE_MS + m * MINUTE + n * 1000)
        for m in (1, 3)
        for n in range(m * 4)
    ]
    with _client(collector, INGEST_TOKEN) as c:
        r = c.post(EVENTS_PATH, json={"events": events})
        assert r.status_code == 200, r.text
    return events


@pytest.fixture(scope="module")
def reader(collector: Collector, posted: list[dict[str, Any]]) -> Iterator[httpx2.Client]:
    with _client(collector, READ_TOKEN) as c:
        yield c


@pytest.mark.parametrize("path", ["/analytics/timeseries", "/analytics/anomalies"])
def test_a_read_token_is_needed(collector: Collector, path: str) -> None:
    with _client(collector, INGEST_TOKEN) as c:
        assert c.get(path).status_code == 401


def test_requests_per_minute_by_model(reader: httpx2.Client, posted: list[dict[str, Any]]) -> None:
    start_s = BASE_MS // 1000
    r = reader.get(
        "/analytics/timeseries",
        params={
            "metric": "requests",
            "group_by": "model",
            "start": start_s,
            "end": start_s + 300,
            "fill": "zero",
        },
    )
    assert r.status_code == 200, r.text
    result = msgspec.json.decode(r.content, type=TimeSeriesResult)
    assert (result.aggregation, result.unit, result.window) == ("count", "requests", "1m")
    want: dict[str, list[int]] = {}
    for e in posted:
        counts = want.setdefault(e["model"], [0] * 5)
        counts[(e["timestamp_ms"] - BASE_MS) // MINUTE] += 1
    got = {s.group: [v for _, v in s.points] for s in result.series}
    assert got == want
    assert [t for t, _ in result.series[0].points] == [start_s + 60 * i for i in range(5)]


def test_filtered_cost_in_micros(reader: httpx2.Client, posted: list[dict[str, Any]]) -> None:
    start_s = BASE_MS // 1000
    r = reader.get(
        "/analytics/timeseries",
        params={
            "metric": "cost_micros",
            "window": "1h",
            "provider": "openai",
            "status": "success",
            "start": start_s,
            "end": start_s + 300,
        },
    )
    assert r.status_code == 200, r.text
    (series,) = r.json()["series"]
    hourly: dict[int, int] = {}  # the events may straddle an hour boundary
    for e in posted:
        if e["provider"] == "openai" and e["event_type"] == "llm_request_completed":
            hour = e["timestamp_ms"] // 3_600_000
            hourly[hour] = hourly.get(hour, 0) + e["cost_nanos"]
    values = [v for _, v in series["points"] if v is not None]
    assert values == [(nanos + 500) // 1000 for _, nanos in sorted(hourly.items())]
    assert r.json()["source"] == "raw"  # two facets: rollups keep one


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        pytest.param({"metric": "error_rate", "aggregation": "sum"}, "aggregation", id="nonsense"),
        pytest.param({"metric": "vibes"}, "metric", id="metric"),
        pytest.param({"fill": "spline"}, "fill", id="fill"),
        pytest.param({"window": "3m"}, "window", id="window"),
        pytest.param({"start": "yesterday"}, "start", id="start"),
        pytest.param({"status": "null"}, "status", id="status"),
        pytest.param({"modle": "gpt-4o"}, "modle", id="unknown"),
        pytest.param({"model": ["a", "b"]}, "model", id="given-twice"),
        # ~1.7 billion minutes: refused before a bucket is made (it once made them all).
        pytest.param(
            {"start": "0", "end": "99999999999", "window": "1m"}, "window", id="huge-range"
        ),
    ],
)
def test_bad_parameters_are_400s(
    reader: httpx2.Client, params: dict[str, str | list[str]], parameter: str
) -> None:
    r = reader.get("/analytics/timeseries", params=params)
    assert r.status_code == 400
    assert r.json()["parameter"] == parameter


async def test_stored_anomalies_are_listed_newest_first(
    collector: Collector, reader: httpx2.Client
) -> None:
    # The detector stores into the collector's database (here from this process: WAL).
    storage = SqliteStorage(collector.db)
    await storage.open()
    try:
        events = [
            anomaly_event(
                "model",
                "gpt-4o-mini",
                BASE_MS + m * MINUTE,
                Finding("request_rate", "spike", 90, 30, 7.5),
            )
            for m in (2, 4)
        ]
        await storage.ingest(events)
    finally:
        await storage.close()
    r = reader.get("/analytics/anomalies", params={"limit": 1})
    assert r.status_code == 200, r.text
    page = msgspec.json.decode(r.content, type=AnomalyPage)
    assert page.count == 1
    (newest,) = page.anomalies
    assert (newest.minute_ms, newest.metric, newest.kind) == (
        BASE_MS + 4 * MINUTE,
        "request_rate",
        "spike",
    )
    assert (newest.observed, newest.baseline, newest.score) == (90, 30, 7.5)
    assert reader.get("/analytics/anomalies", params={"limit": 0}).json()["parameter"] == "limit"


def test_openapi_describes_both(collector: Collector) -> None:
    with _client(collector, None) as c:
        doc = c.get("/openapi.json").json()
    ts = doc["paths"]["/analytics/timeseries"]["get"]
    assert {p["name"] for p in ts["parameters"]} >= {"metric", "aggregation", "fill", "window"}
    assert "TimeSeriesResult" in doc["components"]["schemas"]
    assert "AnomalyPage" in doc["components"]["schemas"]
    assert "/analytics/anomalies" in doc["paths"]

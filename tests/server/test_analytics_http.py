"""The query endpoints on a real ``llmtally serve`` (SQLite): tokens, shapes, 400s that
name the parameter, streamed exports, clear, and the OpenAPI document."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import msgspec
import pytest

from llmtally.query import AggregateResult, EventPage

from .collector import ADMIN_TOKEN, EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, Collector, wire_event

NOW_MS = int(time.time() * 1000)
N = 30
READ_PATHS = ["/analytics/stats", "/analytics/events", "/analytics/aggregate", "/analytics/export"]


def _client(collector: Collector, token: str | None) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.Client(base_url=collector.url, timeout=10.0, headers=headers)


@pytest.fixture(scope="module")
def posted(collector: Collector) -> list[dict[str, Any]]:
    """``N`` events of the last minutes, stored through the ingest endpoint."""
    events = [
        wire_event(i, timestamp_ms=NOW_MS - 300_000 + i * 1000, endpoint="/v1/chat/completions")
        for i in range(N)
    ]
    events[3]["agent_id"] = "=cmd|' /C calc'!A0"  # a CSV injection attempt
    with _client(collector, INGEST_TOKEN) as c:
        r = c.post(EVENTS_PATH, json={"events": events})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == N
    return events


@pytest.fixture(scope="module")
def reader(collector: Collector, posted: list[dict[str, Any]]) -> Iterator[httpx2.Client]:
    with _client(collector, READ_TOKEN) as c:
        yield c


@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("token", [None, INGEST_TOKEN, "wrong"], ids=["none", "ingest", "wrong"])
def test_read_endpoints_need_a_read_token(
    collector: Collector, path: str, token: str | None
) -> None:
    with _client(collector, token) as c:
        r = c.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_clear_needs_an_admin_token(collector: Collector) -> None:
    for token in (None, READ_TOKEN, INGEST_TOKEN):
        with _client(collector, token) as c:
            assert c.post("/analytics/clear").status_code == 401


def test_stats(reader: httpx2.Client) -> None:
    body = reader.get("/analytics/stats").json()
    assert body == {
        "total_events": N,
        "backend_type": "sqlite",
        "ttl_seconds": 30 * 86_400,
        "max_events": None,
        "rollup_ttl_seconds": 400 * 86_400,
    }


def test_events_pages_with_a_cursor(reader: httpx2.Client, posted: list[dict[str, Any]]) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        r = reader.get("/analytics/events", params=params)
        assert r.status_code == 200, r.text
        page = msgspec.json.decode(r.content, type=EventPage)
        seen.extend(e.event_id for e in page.events)
        if page.next_cursor is None:
            break
        params["cursor"] = page.next_cursor
    assert seen == [e["event_id"] for e in posted]
    failed = reader.get("/analytics/events", params={"success": "false", "model": "gpt-4o-mini"})
    events = failed.json()["events"]
    assert events
    assert all(not e["success"] and e["model"] == "gpt-4o-mini" for e in events)
    assert events[0]["status_code"] == 429


def test_aggregate_by_model_per_minute(reader: httpx2.Client, posted: list[dict[str, Any]]) -> None:
    r = reader.get("/analytics/aggregate", params={"group_by": "model", "window": "1m"})
    assert r.status_code == 200, r.text
    result = msgspec.json.decode(r.content, type=AggregateResult)
    assert (result.group_by, result.window, result.source) == ("model", "1m", "rollups")
    assert result.total_requests == N
    assert result.failed_requests == sum(1 for i in range(N) if i % 7 == 6)
    assert result.total_input_tokens == sum(e["input_tokens"] for e in posted)
    assert result.models_used == {"claude-3-5-sonnet": 15, "gpt-4o-mini": 15}
    assert result.backends_used == {"anthropic": 15, "openai": 15}
    assert result.endpoints_hit == {"/v1/chat/completions": N}
    assert sum(b.total_requests for b in result.buckets) == N
    assert {b.group for b in result.buckets} == {"claude-3-5-sonnet", "gpt-4o-mini"}
    assert result.duration_ms.p50 is not None
    assert result.avg_duration_ms == pytest.approx(sum(e["duration_ms"] for e in posted) / N)


def test_export_csv_is_a_safe_attachment(
    reader: httpx2.Client, posted: list[dict[str, Any]]
) -> None:
    with reader.stream("GET", "/analytics/export", params={"format": "csv"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == 'attachment; filename="llmtally-export.csv"'
        text = r.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["id"] for row in rows] == [e["event_id"] for e in posted]
    assert rows[3]["agent_id"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["backend"] == "anthropic"


@pytest.mark.parametrize(
    ("fmt", "media"), [("json", "application/json"), ("jsonl", "application/x-ndjson")]
)
def test_export_json_formats(reader: httpx2.Client, fmt: str, media: str) -> None:
    r = reader.get("/analytics/export", params={"format": fmt})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert r.headers["content-disposition"] == f'attachment; filename="llmtally-export.{fmt}"'
    if fmt == "json":
        records = json.loads(r.content)
    else:
        records = [json.loads(line) for line in r.text.splitlines()]
    assert len(records) == N


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        pytest.param(
            "/analytics/events", {"start": "10", "end": "5"}, "end", id="end-before-start"
        ),
        pytest.param("/analytics/events", {"start": "yesterday"}, "start", id="start-not-numeric"),
        pytest.param("/analytics/events", {"end": "1.5"}, "end", id="end-not-integer"),
        pytest.param("/analytics/events", {"start": "-1"}, "start", id="start-negative"),
        pytest.param("/analytics/events", {"limit": "1001"}, "limit", id="limit-over-max"),
        pytest.param("/analytics/events", {"limit": "ten"}, "limit", id="limit-not-numeric"),
        pytest.param("/analytics/events", {"cursor": "bm90IG91cnM"}, "cursor", id="bad-cursor"),
        pytest.param("/analytics/events", {"success": "maybe"}, "success", id="success"),
        pytest.param("/analytics/events", {"event_type": "x"}, "event_type", id="event_type"),
        pytest.param("/analytics/aggregate", {"group_by": "color"}, "group_by", id="group_by"),
        pytest.param("/analytics/aggregate", {"window": "2h"}, "window", id="window"),
        pytest.param(
            "/analytics/aggregate", {"window": "1m", "start": "0"}, "window", id="too-many-buckets"
        ),
        pytest.param("/analytics/export", {"format": "xml"}, "format", id="format"),
        pytest.param("/analytics/export", {"start": "9", "end": "1"}, "end", id="export-range"),
        pytest.param("/analytics/events", {"modle": "gpt-4o"}, "modle", id="unknown-typo"),
        pytest.param("/analytics/stats", {"x": "1"}, "x", id="unknown-on-stats"),
        pytest.param("/analytics/events", {"success": "1"}, "success", id="success-not-bool"),
        pytest.param("/analytics/events", {"limit": ["5", "500"]}, "limit", id="given-twice"),
        pytest.param("/analytics/events", {"start": ""}, "start", id="empty-integer"),
        pytest.param("/analytics/events", {"end": "1_000"}, "end", id="end-underscore"),
        pytest.param("/analytics/events", {"correlation_id": ""}, "correlation_id", id="empty-ref"),
        pytest.param("/analytics/events", {"tag": "k:a\tb"}, "tag", id="tag-control-char"),
        pytest.param("/analytics/export", {"format": ""}, "format", id="empty-format"),
        pytest.param("/analytics/export", {"provider_id": "k"}, "provider_id", id="export-unknown"),
    ],
)
def test_bad_parameters_are_400_naming_it(
    reader: httpx2.Client, path: str, params: dict[str, str | list[str]], parameter: str
) -> None:
    r = reader.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


def test_openapi_describes_every_route(collector: Collector, posted: object) -> None:
    with _client(collector, None) as c:  # no token needed
        r = c.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    for path in [*READ_PATHS, "/analytics/clear", EVENTS_PATH, "/health", "/openapi.json"]:
        assert path in doc["paths"], path
    aggregate = doc["paths"]["/analytics/aggregate"]["get"]
    assert {p["name"] for p in aggregate["parameters"]} == {"start", "end", "group_by", "window"}
    schemas = doc["components"]["schemas"]
    assert {"AggregateResult", "EventPage", "EventRecord", "WireBatch", "ParamErrorBody"} <= set(
        schemas
    )
    assert "p99" in schemas["LatencyStats"]["properties"]
    refs = json.dumps(doc).count('"$ref"')
    assert refs > 10


def test_clear_with_an_admin_token_is_last(collector: Collector, posted: object) -> None:
    with _client(collector, ADMIN_TOKEN) as admin:
        r = admin.post("/analytics/clear")
        assert r.status_code == 200
        assert r.json() == {"success": True, "message": "Analytics data cleared"}
        assert admin.get("/analytics/stats").json()["total_events"] == 0
        assert admin.get("/analytics/aggregate").json()["total_requests"] == 0

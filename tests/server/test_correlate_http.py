"""The envelope at a real ``llmtally serve``: ingest keeps it and refuses it out of bounds,
``/analytics/events`` filters on tags and correlation, ``/analytics/correlate`` returns the
chain; and a store's syncer carries it there end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from llmtally import EventStore, SyncConfig
from llmtally._ids import new_event_id

from .collector import EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, Collector, wire_event

NOW_MS = int(time.time() * 1000)
RANGE = {"start": str(NOW_MS // 1000 - 600), "end": str(NOW_MS // 1000 + 600)}


def _client(collector: Collector, token: str | None) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.Client(base_url=collector.url, timeout=10.0, headers=headers)


@pytest.fixture(scope="module")
def reader(collector: Collector) -> Iterator[httpx2.Client]:
    with _client(collector, READ_TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def chain(collector: Collector) -> list[dict[str, Any]]:
    """A request traced through three services (posted out of order), plus noise."""
    root = wire_event(0, timestamp_ms=NOW_MS - 3000, correlation_id="trace-a")
    events = [
        wire_event(
            6,  # failed
            timestamp_ms=NOW_MS - 1000,
            correlation_id="trace-a",
            parent_event_id=root["event_id"],
            environment="prod",
            tags={"team": "search", "tier": "gold"},
        ),
        root,
        wire_event(
            1,
            timestamp_ms=NOW_MS - 2000,
            correlation_id="trace-a",
            parent_event_id=root["event_id"],
            severity="debug",
            tags={"team": "search", "tier": "free"},
        ),
        wire_event(2, timestamp_ms=NOW_MS - 2500, correlation_id="trace-b"),
    ]
    with _client(collector, INGEST_TOKEN) as c:
        r = c.post(EVENTS_PATH, json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    return events


def test_ingest_refuses_an_envelope_out_of_bounds_event_by_event(collector: Collector) -> None:
    good = wire_event(3, timestamp_ms=NOW_MS, tags={"k": "v"})
    bad = [
        wire_event(4, tags={f"k{i}": "v" for i in range(17)}),
        wire_event(4, tags={"bad key": "v"}),
        wire_event(4, tags={"k": "v" * 257}),
        wire_event(4, correlation_id="has space"),
        wire_event(4, schema_version="2.0.0"),
        wire_event(4, severity="fatal"),
    ]
    with _client(collector, INGEST_TOKEN) as c:
        r = c.post(EVENTS_PATH, json={"events": [good, *bad]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 1
    assert [x["event_id"] for x in answer["rejected"]] == [e["event_id"] for e in bad]
    for rejection, field in zip(
        answer["rejected"],
        ["tags", "tags", "tags", "correlation_id", "schema_version", "severity"],
        strict=True,
    ):
        assert field in rejection["error"]


def test_correlate_returns_the_chain_in_time_order(
    reader: httpx2.Client, chain: list[dict[str, Any]]
) -> None:
    r = reader.get("/analytics/correlate", params={"correlation_id": "trace-a"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["correlation_id"] == "trace-a"
    assert body["count"] == 3 and body["next_cursor"] is None
    got = body["events"]
    root_id = chain[1]["event_id"]
    assert [e["event_id"] for e in got] == [
        chain[1]["event_id"],
        chain[2]["event_id"],
        chain[0]["event_id"],
    ]
    assert [e["parent_event_id"] for e in got] == [None, root_id, root_id]
    assert [e["severity"] for e in got] == ["info", "debug", "error"]
    assert got[2]["environment"] == "prod"
    assert got[2]["tags"] == {"team": "search", "tier": "gold"}
    assert all(e["schema_version"] == "1.0.0" for e in got)

    page = reader.get(
        "/analytics/correlate", params={"correlation_id": "trace-a", "limit": 2}
    ).json()
    assert page["count"] == 2 and page["next_cursor"]
    rest = reader.get(
        "/analytics/correlate",
        params={"correlation_id": "trace-a", "limit": 2, "cursor": page["next_cursor"]},
    ).json()
    assert [e["event_id"] for e in page["events"] + rest["events"]] == [e["event_id"] for e in got]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        pytest.param({}, "correlation_id", id="missing"),
        pytest.param({"correlation_id": "a b"}, "correlation_id", id="malformed"),
        pytest.param({"correlation_id": "x", "limit": "5000"}, "limit", id="limit"),
    ],
)
def test_correlate_names_a_bad_parameter(
    reader: httpx2.Client, params: dict[str, str], parameter: str
) -> None:
    r = reader.get("/analytics/correlate", params=params)
    assert r.status_code == 400
    assert r.json()["parameter"] == parameter


def test_correlate_needs_a_read_token(collector: Collector) -> None:
    for token in (None, INGEST_TOKEN):
        with _client(collector, token) as c:
            assert c.get("/analytics/correlate", params={"correlation_id": "x"}).status_code == 401


def test_events_filter_on_tags_and_correlation(
    reader: httpx2.Client, chain: list[dict[str, Any]]
) -> None:
    def ids(*extra: tuple[str, str]) -> list[str]:
        r = reader.get("/analytics/events", params=[*RANGE.items(), *extra])
        assert r.status_code == 200, r.text
        return [e["event_id"] for e in r.json()["events"]]

    assert ids(("tag", "team:search")) == [chain[2]["event_id"], chain[0]["event_id"]]
    assert ids(("tag", "team:search"), ("tag", "tier:gold")) == [chain[0]["event_id"]]
    assert ids(("correlation_id", "trace-b")) == [chain[3]["event_id"]]
    for bad in ("novalue", "bad key:v"):
        r = reader.get("/analytics/events", params={"tag": bad})
        assert r.status_code == 400
        assert r.json()["parameter"] == "tag"


def test_openapi_describes_correlate_and_the_filters(reader: httpx2.Client) -> None:
    doc = reader.get("/openapi.json").json()
    op = doc["paths"]["/analytics/correlate"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CorrelationChain"
    )
    names = {p["name"] for p in doc["paths"]["/analytics/events"]["get"]["parameters"]}
    assert {"tag", "correlation_id"} <= names
    wire = doc["components"]["schemas"]["WireEvent"]["properties"]
    assert {"schema_version", "correlation_id", "parent_event_id", "severity", "tags"} <= set(wire)


async def test_a_store_syncs_the_envelope_to_the_collector(
    collector: Collector, tmp_path: Path
) -> None:
    trace = new_event_id()  # unique per run (the collector is shared by this module)
    config = SyncConfig(collector.url, INGEST_TOKEN, sync_interval=3_600.0, batch_threshold=10**6)
    async with EventStore(tmp_path / "r.db", sync=config, environment="eu-prod") as store:
        first = await store.record_llm_completed("gpt-4o", input_tokens=5, correlation_id=trace)
        assert first is not None
        await store.record_llm_failed(
            "gpt-4o",
            error_code="timeout",
            correlation_id=trace,
            parent_event_id=first.event_id,
            tags={"route": "/v1/chat"},
        )
        result = await store.sync_now()
        assert (result.accepted, result.failed) == (2, 0)
    async with httpx2.AsyncClient(
        base_url=collector.url, headers={"Authorization": f"Bearer {READ_TOKEN}"}
    ) as c:
        got = (await c.get("/analytics/correlate", params={"correlation_id": trace})).json()
    envelope = [
        (e["parent_event_id"], e["severity"], e["environment"], e["tags"]) for e in got["events"]
    ]
    assert envelope == [
        (None, "info", "eu-prod", {}),
        (first.event_id, "error", "eu-prod", {"route": "/v1/chat"}),
    ]

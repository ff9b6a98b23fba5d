"""``/analytics/errors|slo|budgets|streaming`` and ``/metrics``: on the collector (a real
``llmtally serve`` process fed through its ingest endpoint) and mounted in a router over
an ``EventStore`` (real uvicorn in the test's event loop)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from llmtally import Budget, EventStore
from llmtally.server.auth import Auth, Scope
from llmtally.server.observability import observability_app

from .collector import EVENTS_PATH, READ_TOKEN, Collector, body, wire_event

PATHS = (
    "/analytics/errors",
    "/analytics/slo",
    "/analytics/budgets",
    "/analytics/streaming",
    "/metrics",
)


def _requests_total(text: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "llmtally_requests"
        for s in f.samples
        if s.name == "llmtally_requests_total"
    )


@pytest.fixture
async def reader(collector: Collector) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(
        base_url=collector.url, timeout=10.0, headers={"Authorization": f"Bearer {READ_TOKEN}"}
    ) as c:
        yield c


async def test_the_collector_counts_what_it_ingests(
    client: httpx2.AsyncClient, reader: httpx2.AsyncClient, anon_client: httpx2.AsyncClient
) -> None:
    now = time.time_ns() // 1_000_000
    events = [wire_event(i, timestamp_ms=now - 1_000 + i) for i in range(40)]
    failed = sum(1 for e in events if e.get("error_code"))
    headers = {"Content-Type": "application/json"}
    r = await client.post(EVENTS_PATH, content=body(events), headers=headers)
    assert r.json()["accepted"] == 40
    r = await client.post(EVENTS_PATH, content=body(events[:10]), headers=headers)
    assert r.json()["duplicates"] == 10  # stored once: counted once

    errors = (await reader.get("/analytics/errors", params={"limit": 5})).json()
    assert errors["total_errors"] == failed
    assert errors["patterns"][0]["error_type"] == "rate_limited"
    assert errors["patterns"][0]["count"] == failed

    slo = (await reader.get("/analytics/slo", params={"target": "0.99", "window": 600})).json()
    assert (slo["requests"], slo["errors"], slo["window_ms"]) == (40, failed, 600_000)
    assert slo["target"] == 0.99 and slo["violated"] is True

    streaming = (await reader.get("/analytics/streaming")).json()
    assert (streaming["completed"], streaming["failed"]) == (40 - failed, failed)
    assert streaming["active_streams"] == 0
    assert set(streaming["by_model"]) == {"gpt-4o-mini", "claude-3-5-sonnet"}

    assert (await reader.get("/analytics/budgets")).json() == {"budgets": []}

    r = await reader.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert _requests_total(r.text) == 40

    for path in PATHS:
        r = await anon_client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.get(path)  # an ingest token cannot read
        assert r.status_code == 401, path


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        pytest.param("/analytics/errors", {"limit": "0"}, "limit", id="limit-zero"),
        pytest.param("/analytics/errors", {"limit": "x"}, "limit", id="limit-not-int"),
        pytest.param("/analytics/slo", {"target": "1"}, "target", id="target-one"),
        pytest.param("/analytics/slo", {"target": "nan"}, "target", id="target-nan"),
        pytest.param("/analytics/slo", {"target": "abc"}, "target", id="target-text"),
        pytest.param("/analytics/slo", {"window": "0"}, "window", id="window-zero"),
        pytest.param("/analytics/slo", {"target": "1e-3"}, "target", id="target-exponent"),
        pytest.param("/analytics/errors", {"n": "5"}, "n", id="unknown"),
        pytest.param("/analytics/slo", {"window": str(31 * 86_400)}, "window", id="window-long"),
    ],
)
async def test_bad_parameters_are_400(
    reader: httpx2.AsyncClient, path: str, params: dict[str, str], parameter: str
) -> None:
    r = await reader.get(path, params=params)
    assert r.status_code == 400
    assert r.json()["parameter"] == parameter


# --- mounted in a router over an EventStore ----------------------------------------------


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until the server accepts
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    with sock:  # uvicorn does not close a socket it was handed
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


async def test_mounted_over_an_event_store() -> None:
    budgets = [Budget(id="daily", limit_micros=1_000_000, period="daily")]
    async with EventStore(budgets=budgets) as store:
        router = Starlette()
        router.mount("/llmtally", observability_app(store, auth=Auth({"rt": Scope.READ})))
        for i in range(9):
            await store.record_llm_completed("gpt-4o-mini", 1_000, 10, agent_id=f"a{i % 2}")
        await store.record_llm_failed(
            "gpt-4o-mini", error_code="overloaded", error_message="overloaded (req_1b2c3d4)"
        )
        await store.flush()
        async with (
            _serve(router) as url,
            httpx2.AsyncClient(
                base_url=f"{url}/llmtally", headers={"Authorization": "Bearer rt"}
            ) as http,
        ):
            [b] = (await http.get("/analytics/budgets")).json()["budgets"]
            # 9 x (1,000 input at $0.15/M + 10 output at $0.60/M) = 9 x 156 micro-dollars
            assert (b["budget_id"], b["spent_micros"]) == ("daily", 9 * 156)
            errors = (await http.get("/analytics/errors")).json()
            assert errors["patterns"][0]["message"] == "overloaded (<id>)"
            slo = (await http.get("/analytics/slo")).json()
            assert (slo["requests"], slo["errors"]) == (10, 1)
            async with store.track_stream("gpt-4o"):
                streaming = (await http.get("/analytics/streaming")).json()
                assert streaming["by_model"]["gpt-4o"]["active_streams"] == 1
            await store.flush()  # the stream's record, too
            metrics = await http.get("/metrics")
            assert _requests_total(metrics.text) == 11
            r = await http.get("/analytics/errors", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401

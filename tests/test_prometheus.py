"""``llmtally.prometheus``: the scrape, parsed back by prometheus_client, equals the store."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

import llmtally.prometheus
from llmtally import AnalyticsEvent, Budget, EventStore, LlmRequestCompleted
from llmtally._ids import new_event_id
from llmtally.prometheus import LlmTallyCollector, make_registry, render

T0 = 1_760_054_400_000 + 43_200_000  # noon UTC


class Mono:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` from a text-format scrape."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _get(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name][tuple(sorted(labels.items()))])


async def _populate(store: EventStore, mono: Mono) -> None:
    for i in range(30):
        await store.record_llm_completed(
            "gpt-4o-mini" if i % 3 else "claude-3-5-haiku",
            100 + i,
            10 + i,
            cached_input_tokens=i % 5,
            cache_write_input_tokens=i % 2,
            agent_id=f"agent-{i % 4}",
            duration_ms=200.0 + 10 * i,
            ttft_ms=20.0 + i,
        )
    await store.record_llm_completed("gpt-4o", 10, 1, provider="azure", duration_ms=50.0)
    await store.record_llm_completed("private-model", 7, 3)  # unpriced
    for code in ("rate_limited", "rate_limited", "timeout"):
        await store.record_llm_failed("gpt-4o-mini", error_code=code, status_code=429)
    async with store.track_stream("gpt-4o-mini") as s:
        mono.t += 50_000_000
        s.token()
        mono.t += 20_000_000
        s.token(2)
    await store.flush()


async def test_the_scrape_equals_stats_and_trackers(db_path: Path) -> None:
    mono = Mono()
    budgets = [
        Budget(id="all", limit_micros=1_000_000, period="daily"),
        Budget(id="a1", scope="agent_id", scope_value="agent-1", limit_micros=5, kind="hard"),
    ]
    async with EventStore(db_path, clock=lambda: T0, monotonic=mono, budgets=budgets) as store:
        await _populate(store, mono)
        stats = store.stats()
        m = _samples(generate_latest(make_registry(store, slo_target=0.95)).decode())

        # Counters per (model, provider) add up to the totals and match each view.
        assert sum(m["llmtally_requests_total"].values()) == stats.total_requests
        assert sum(m["llmtally_request_failures_total"].values()) == stats.failed_requests
        mini = stats.by_model["gpt-4o-mini"]
        assert _get(m, "llmtally_requests_total", model="gpt-4o-mini", provider="openai") == (
            mini.requests
        )
        assert _get(m, "llmtally_requests_total", model="gpt-4o", provider="azure") == 1
        for kind, total in (
            ("input", stats.total_input_tokens),
            ("output", stats.total_output_tokens),
            ("cached_input", stats.total_cached_input_tokens),
            ("cache_write", stats.total_cache_write_input_tokens),
        ):
            got = sum(v for k, v in m["llmtally_tokens_total"].items() if ("type", kind) in k)
            assert got == total, kind
        # Cost: exact nanos, one float conversion at the edge.
        assert _get(m, "llmtally_cost_usd_total", model="gpt-4o-mini", provider="openai") == (
            mini.cost_nanos / 1e9
        )
        assert sum(m["llmtally_cost_usd_total"].values()) == pytest.approx(
            stats.total_cost_nanos / 1e9, rel=1e-12
        )
        assert (
            _get(m, "llmtally_unpriced_requests_total", model="private-model", provider="unknown")
            == 1
        )

        # Summaries in seconds, from the same sketches as stats().
        for q, attr in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
            got = _get(
                m,
                "llmtally_request_duration_seconds",
                model="gpt-4o-mini",
                provider="openai",
                quantile=q,
            )
            assert got == pytest.approx(getattr(mini.duration_ms, attr) / 1000)
            got = _get(
                m,
                "llmtally_time_to_first_token_seconds",
                model="gpt-4o-mini",
                provider="openai",
                quantile=q,
            )
            assert got == pytest.approx(getattr(mini.ttft_ms, attr) / 1000)
        assert (
            _get(
                m, "llmtally_request_duration_seconds_count", model="gpt-4o-mini", provider="openai"
            )
            == mini.duration_ms.count
        )
        assert "llmtally_time_to_first_token_seconds_count" in m
        assert ("model", "gpt-4o") not in {
            kv for k in m["llmtally_time_to_first_token_seconds_count"] for kv in k
        }  # no TTFT observed: no summary

        # Streams.
        streaming = store.streaming_stats().by_model["gpt-4o-mini"]
        assert _get(m, "llmtally_streams_total", model="gpt-4o-mini", outcome="completed") == (
            streaming.completed
        )
        assert _get(m, "llmtally_active_streams", model="gpt-4o-mini") == 0
        assert _get(
            m, "llmtally_stream_inter_token_latency_seconds", model="gpt-4o-mini", quantile="0.5"
        ) == pytest.approx(0.010, rel=0.011)
        assert _get(
            m, "llmtally_stream_output_tokens_per_second", model="gpt-4o-mini", quantile="0.5"
        ) == pytest.approx(100.0, rel=0.011)

        # SLO.
        slo = store.slo_status(target=0.95)
        assert _get(m, "llmtally_slo_target") == 0.95
        assert _get(m, "llmtally_slo_error_rate") == pytest.approx(slo.error_rate)
        assert _get(m, "llmtally_slo_violated") == 1.0
        assert _get(m, "llmtally_slo_burn_rate", window="5m") == pytest.approx(slo.burn_rate_5m)
        assert _get(m, "llmtally_slo_alert", alert="fast_burn") == float(slo.fast_burn)
        assert _get(m, "llmtally_slo_error_budget_remaining") == pytest.approx(
            slo.error_budget_remaining
        )

        # Budgets.
        status = {s.budget_id: s for s in store.budget_status()}
        labels = {"budget_id": "all", "scope": "global", "scope_value": "", "kind": "soft"}
        assert _get(m, "llmtally_budget_spent_usd", **labels, period="daily") == (
            status["all"].spent_nanos / 1e9
        )
        assert _get(m, "llmtally_budget_limit_usd", **labels, period="daily") == 1.0
        assert _get(m, "llmtally_budget_used_ratio", **labels, period="daily") == pytest.approx(
            status["all"].percent_used / 100
        )
        a1 = {"budget_id": "a1", "scope": "agent_id", "scope_value": "agent-1", "kind": "hard"}
        assert _get(m, "llmtally_budget_remaining_usd", **a1, period="monthly") < 0

        # Health.
        assert _get(m, "llmtally_unsynced_events") == stats.unsynced_events
        assert _get(m, "llmtally_sync_status", status="disabled") == 1
        assert _get(m, "llmtally_error_patterns") == 2
        assert all("agent_id" not in dict(k) for k in m["llmtally_requests_total"])  # opt-in


async def test_live_values_at_scrape_time_and_drops() -> None:
    mono = Mono()
    async with EventStore(capacity=2, monotonic=mono) as store:
        registry = make_registry(store)
        event = AnalyticsEvent(
            event_id=new_event_id(),
            timestamp_ms=1,
            payload=LlmRequestCompleted(model="m", provider="p"),
        )
        results = [store.record_nowait(event) for _ in range(5)]
        dropped = results.count(False)
        async with store.track_stream("gpt-4o"):
            m = _samples(generate_latest(registry).decode())
            assert _get(m, "llmtally_active_streams", model="gpt-4o") == 1
        m = _samples(generate_latest(registry).decode())
        assert _get(m, "llmtally_active_streams", model="gpt-4o") == 0
        assert dropped > 0
        assert (
            _get(m, "llmtally_dropped_events_total", cause="buffer_full")
            == (store.stats().dropped_by_cause["buffer_full"])
        )


async def test_agent_label_is_opt_in_and_bounded() -> None:
    async with EventStore() as store:
        for i in range(50):
            for _ in range(i % 7 + 1):
                await store.record_llm_completed("gpt-4o-mini", 1, agent_id=f"agent-{i}")
        await store.record_llm_completed("gpt-4o-mini", 1)
        await store.flush()
        m = _samples(generate_latest(make_registry(store, agent_label=True, max_agents=5)).decode())
        agents = {dict(k)["agent_id"] for k in m["llmtally_requests_total"]}
        assert len(agents) == 7  # 5 kept, "(other)", "" (no agent)
        assert {"(other)", ""} <= agents
        assert sum(m["llmtally_requests_total"].values()) == store.stats().total_requests


async def test_openmetrics_on_request_and_duplicate_registration_is_refused() -> None:
    async with EventStore() as store:
        await store.record_llm_completed("gpt-4o-mini", 3, 1, duration_ms=12.0)
        await store.flush()
        registry = make_registry(store)
        body, content_type = render(registry, "application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        names = {f.name for f in openmetrics_families(body.decode())}
        assert {"llmtally_requests", "llmtally_request_duration_seconds"} <= names
        body, content_type = render(registry)
        assert content_type.startswith("text/plain")
        with pytest.raises(ValueError, match="Duplicated"):
            registry.register(LlmTallyCollector(store))
        with pytest.raises(ValueError, match="max_agents"):
            LlmTallyCollector(store, max_agents=0)
        CollectorRegistry().register(LlmTallyCollector(store))  # another registry: fine


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


async def test_the_documented_one_liner_serves_metrics_over_http() -> None:
    async with EventStore() as store:
        app = Starlette()
        app.mount("/metrics", llmtally.prometheus.make_asgi_app(store))
        await store.record_llm_completed("gpt-4o-mini", 5, 2, duration_ms=300.0)
        await store.flush()
        async with _serve(app) as url, httpx2.AsyncClient(base_url=url) as client:
            r = await client.get("/metrics/")
            assert r.status_code == 200
            m = _samples(r.text)
            assert _get(m, "llmtally_requests_total", model="gpt-4o-mini", provider="openai") == 1
            assert _get(
                m, "llmtally_request_duration_seconds_sum", model="gpt-4o-mini", provider="openai"
            ) == pytest.approx(0.3)

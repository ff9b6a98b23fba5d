"""``OtelExporter`` through a real ``EventStore`` (SQLite) into the OpenTelemetry SDK."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from llmtally import (
    AnalyticsEvent,
    EventStore,
    LlmRequestCompleted,
    LlmRequestFailed,
    StoreClosedError,
)
from llmtally._ids import new_event_id
from llmtally.exporters.genai import DURATION_BUCKETS, TOKEN_USAGE_BUCKETS
from llmtally.exporters.otel import DROPPED_EVENTS, OtelExporter

from .conftest import Otel, key, points, sums

MS = 1_000_000  # ns
T0 = 1_760_000_000_000  # unix ms

OPENAI_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
}
ANTHROPIC_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
}
INPUT = {"gen_ai.token.type": "input"}
OUTPUT = {"gen_ai.token.type": "output"}


class FakeMonotonic:
    """An injectable monotonic clock in ns; ``advance`` moves it."""

    def __init__(self) -> None:
        self.t = 5_000 * MS

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += int(ms * MS)


class UpstreamError(Exception):
    status_code = 503


def exporter_for(store: EventStore, otel: Otel, **options: object) -> OtelExporter:
    return OtelExporter(
        store,
        meter_provider=otel.meter_provider,
        tracer_provider=otel.tracer_provider,
        **options,  # type: ignore[arg-type]
    )


async def test_metrics_follow_the_genai_conventions(db_path: Path, otel: Otel) -> None:
    mono = FakeMonotonic()
    async with (
        EventStore(db_path, monotonic=mono, clock=lambda: T0) as store,
        exporter_for(store, otel, spans=False) as exporter,
    ):
        recorded = [
            await store.record_llm_completed("gpt-4o-mini", 1_000, 50, duration_ms=812.0),
            await store.record_llm_completed("gpt-4o-mini", 10, 2, duration_ms=100.0),
            await store.record_llm_completed("claude-sonnet-4-5", 300, 20, duration_ms=2_000.0),
            await store.record_llm_failed(
                "gpt-4o-mini", error_code="rate_limited", status_code=429, duration_ms=50.0
            ),
        ]
        async with store.track_stream("gpt-4o-mini", endpoint="/v1/chat/completions") as s:
            mono.advance(120)  # time to first chunk
            s.token()
            mono.advance(65)
            s.usage(input_tokens=1_000, output_tokens=4)
        recorded.append(s.event)
        await store.record_router_started(port=8080)  # no GenAI measurements
        await exporter.flush()
        assert (exporter.exported, exporter.dropped, exporter.errors) == (5, 0, 0)
        stored = await store.snapshot_events()

    assert all(ev is not None for ev in recorded)
    assert [ev.event_id for ev in stored[:5]] == [ev.event_id for ev in recorded if ev]
    metrics = otel.metrics()
    assert set(metrics) == {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "llmtally.cost",
        DROPPED_EVENTS,
    }
    units = {name: m.unit for name, m in metrics.items()}
    assert units == {
        "gen_ai.client.token.usage": "{token}",
        "gen_ai.client.operation.duration": "s",
        "gen_ai.client.operation.time_to_first_chunk": "s",
        "llmtally.cost": "{nanodollar}",
        DROPPED_EVENTS: "{event}",
    }

    tokens = points(metrics["gen_ai.client.token.usage"])
    # The failed call reported no usage: it records no tokens.
    assert set(tokens) == {
        key(OPENAI_CHAT, INPUT),
        key(OPENAI_CHAT, OUTPUT),
        key(ANTHROPIC_CHAT, INPUT),
        key(ANTHROPIC_CHAT, OUTPUT),
    }
    p = tokens[key(OPENAI_CHAT, INPUT)]
    assert (p.count, p.sum, p.min, p.max) == (3, 2_010, 10, 1_000)
    assert tuple(p.explicit_bounds) == TOKEN_USAGE_BUCKETS
    # 10 → (4, 16]; 1,000 twice → (256, 1024]
    assert list(p.bucket_counts) == [0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    p = tokens[key(OPENAI_CHAT, OUTPUT)]
    assert (p.count, p.sum) == (3, 56)
    p = tokens[key(ANTHROPIC_CHAT, OUTPUT)]
    assert (p.count, p.sum) == (1, 20)

    durations = points(metrics["gen_ai.client.operation.duration"])
    assert set(durations) == {
        key(OPENAI_CHAT),
        key(OPENAI_CHAT, {"error.type": "rate_limited"}),
        key(ANTHROPIC_CHAT),
    }
    p = durations[key(OPENAI_CHAT)]
    assert p.count == 3
    assert p.sum == pytest.approx(0.812 + 0.100 + 0.185)
    assert tuple(p.explicit_bounds) == DURATION_BUCKETS
    # 0.1 → (0.08, 0.16]; 0.185 → (0.16, 0.32]; 0.812 → (0.64, 1.28]
    assert list(p.bucket_counts) == [0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    p = durations[key(OPENAI_CHAT, {"error.type": "rate_limited"})]
    assert (p.count, p.sum) == (1, pytest.approx(0.05))
    assert durations[key(ANTHROPIC_CHAT)].sum == pytest.approx(2.0)

    ttft = points(metrics["gen_ai.client.operation.time_to_first_chunk"])
    assert set(ttft) == {key(OPENAI_CHAT)}  # the streamed call only
    p = ttft[key(OPENAI_CHAT)]
    assert (p.count, p.sum) == (1, pytest.approx(0.120))
    assert tuple(p.explicit_bounds) == DURATION_BUCKETS

    costs = sums(metrics["llmtally.cost"])
    expected = {key(OPENAI_CHAT): 0, key(ANTHROPIC_CHAT): 0}
    for ev in recorded:
        assert ev is not None
        p = ev.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        expected[key(OPENAI_CHAT if p.model == "gpt-4o-mini" else ANTHROPIC_CHAT)] += p.cost_nanos
    assert costs == expected
    assert all(type(v) is int and v > 0 for v in costs.values())  # exact integer nanos
    assert sums(metrics[DROPPED_EVENTS]) == {frozenset(): 0}


async def test_one_span_per_request(db_path: Path, otel: Otel) -> None:
    mono = FakeMonotonic()
    async with (
        EventStore(db_path, monotonic=mono, clock=lambda: T0) as store,
        exporter_for(store, otel) as exporter,
    ):
        ok = await store.record_llm_completed(
            "gpt-4o-mini",
            1_000,
            50,
            cached_input_tokens=200,
            agent_id="agent-7",
            provider_id="key-1",
            duration_ms=812.5,
            timestamp_ms=T0 - 1_000,
        )
        with pytest.raises(UpstreamError):
            async with store.track_stream(
                "claude-sonnet-4-5", endpoint="/v1/messages", agent_id="agent-7"
            ) as s:
                mono.advance(90)
                s.token(3)
                mono.advance(10)
                raise UpstreamError("upstream overloaded")
        await exporter.flush()
        assert exporter.exported == 2

    assert ok is not None and s.event is not None
    spans = {span.name: span for span in otel.finished_spans()}
    assert set(spans) == {"chat gpt-4o-mini", "chat claude-sonnet-4-5"}

    span = spans["chat gpt-4o-mini"]
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None  # a trace of its own
    assert span.end_time == (T0 - 1_000) * MS
    assert span.start_time == (T0 - 1_000) * MS - 812_500_000
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        **OPENAI_CHAT,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1_000,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 200,
        "llmtally.event_id": ok.event_id,
        "llmtally.pricing_status": "priced",
        "llmtally.cost.usd": pytest.approx(ok.payload.cost_nanos / 1e9),  # type: ignore[union-attr]
        "llmtally.agent_id": "agent-7",
        "llmtally.provider_id": "key-1",
    }

    span = spans["chat claude-sonnet-4-5"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream overloaded"
    assert span.end_time == T0 * MS
    assert span.start_time == T0 * MS - 100 * MS
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "UpstreamError"
    assert attributes["http.response.status_code"] == 503
    assert attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.09)
    assert attributes["gen_ai.usage.output_tokens"] == 3  # counted chunks, no usage report
    assert "gen_ai.usage.input_tokens" not in attributes  # never reported
    assert "gen_ai.response.model" not in attributes
    assert attributes["llmtally.endpoint"] == "/v1/messages"


def request_event(i: int) -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=new_event_id(T0),
        timestamp_ms=T0,
        payload=LlmRequestCompleted(
            model="gpt-4o-mini", provider="openai", input_tokens=10 + i, output_tokens=1
        ),
    )


async def test_a_slow_exporter_drops_and_counts(db_path: Path, otel: Otel) -> None:
    async with (
        EventStore(db_path) as store,
        exporter_for(store, otel, capacity=2, spans=False) as exporter,
    ):
        # Ten events reach the aggregator as one batch, published at once: two fit in
        # the buffer, and one more when the actor was waiting (handed over directly).
        for i in range(10):
            assert store.record_nowait(request_event(i))
        await exporter.flush()
        exported, dropped = exporter.exported, exporter.dropped
        assert exported in (2, 3)
        assert exported + dropped == 10
        assert len(await store.snapshot_events()) == 10  # the store lost nothing
        metrics = otel.metrics()
    assert sums(metrics[DROPPED_EVENTS]) == {frozenset(): dropped}
    tokens = points(metrics["gen_ai.client.token.usage"])
    assert tokens[key(OPENAI_CHAT, INPUT)].count == exported


async def test_leaving_exports_what_is_buffered_then_stops(db_path: Path, otel: Otel) -> None:
    async with EventStore(db_path) as store:
        async with exporter_for(store, otel, spans=False) as exporter:
            for i in range(600):  # more than one stretch between the actor's yields
                assert store.record_nowait(request_event(i))
            await store.flush()  # in the exporter's buffer, not necessarily exported
        assert (exporter.exported, exporter.dropped) == (600, 0)
        await store.record_llm_completed("gpt-4o-mini", 1, 1)
        await exporter.flush()  # returns at once: stopped
        assert exporter.exported == 600
    tokens = points(otel.metrics()["gen_ai.client.token.usage"])
    assert tokens[key(OPENAI_CHAT, INPUT)].count == 600
    assert tokens[key(OPENAI_CHAT, INPUT)].sum == sum(10 + i for i in range(600))


async def test_an_exporter_is_entered_once(otel: Otel) -> None:
    async with EventStore() as store:
        exporter = exporter_for(store, otel)
        with pytest.raises(StoreClosedError):
            await exporter.flush()
        async with exporter:
            with pytest.raises(StoreClosedError):
                await exporter.__aenter__()
        with pytest.raises(StoreClosedError):
            async with exporter:
                pass


def test_without_the_extra_the_import_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "llmtally.exporters.otel")
    with pytest.raises(ImportError, match=r"pip install 'llmtally\[otel\]'"):
        importlib.import_module("llmtally.exporters.otel")

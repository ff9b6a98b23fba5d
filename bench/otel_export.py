"""What the OpenTelemetry exporter costs per event.

Printed beside each other, in the same run and with the same events (uvloop, the
OpenTelemetry SDK; a metric reader that is never collected during the run and a
``BatchSpanProcessor`` whose exporter discards, so only the recording is measured):

  mapping         ``GenAiMapper`` alone: event → measurements (and span data)
  SDK floor       the same instrument calls (and spans) with everything prebuilt: what the
                  SDK itself costs, the limit for any exporter of these measurements
  exporter actor  ``OtelExporter``'s loop: buffered events → mapping → SDK calls
  end to end      ``record_llm_completed`` → aggregate → SQLite, with and without an
                  exporter following the store (metrics only; default capacity)

Events: 5 models over 2 providers, 30% streamed (TTFT), 2% failed. Rates are events per
CPU second of the process (``time.process_time``), best of ``--rounds``.

    .venv/bin/python bench/otel_export.py [--events 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import uvloop
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmtally import EventStore
from llmtally._ids import new_event_id
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.exporters.genai import (
    DURATION_BUCKETS,
    TOKEN_USAGE_BUCKETS,
    GenAiMapper,
    GenAiMeasurements,
    GenAiSpan,
)
from llmtally.exporters.otel import OtelExporter
from llmtally.pipeline.fanout import Fanout, Subscription

_clock = time.process_time  # CPU time: other processes on a shared machine don't count

MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-3-5-haiku", "anthropic"),
    ("o3-mini", "openai"),
]
T0 = 1_760_000_000_000


def make_events(n: int) -> list[AnalyticsEvent]:
    out: list[AnalyticsEvent] = []
    for i in range(n):
        model, provider = MODELS[i % 5]
        common: dict[str, object] = {
            "model": model,
            "provider": provider,
            "input_tokens": 100 + i % 900,
            "output_tokens": 20 + i % 300,
            "cost_nanos": 1_000 + i % 5_000,
            "duration_ms": 200.0 + i % 1000,
        }
        if i % 10 < 3:
            common["ttft_ms"] = 20.0 + i % 100
            common["endpoint"] = "/v1/chat/completions"
        payload: LlmRequestCompleted | LlmRequestFailed
        if i % 50 == 7:
            payload = LlmRequestFailed(error_code="rate_limited", status_code=429, **common)  # type: ignore[arg-type]
        else:
            payload = LlmRequestCompleted(**common)  # type: ignore[arg-type]
        ts = T0 + i // 10
        out.append(AnalyticsEvent(event_id=new_event_id(ts), timestamp_ms=ts, payload=payload))
    return out


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Providers:
    def __init__(self, queue: int) -> None:
        self.meter_provider = MeterProvider(
            metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False
        )
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(_Discard(), max_queue_size=max(queue, 2_048) + 1)
        )

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


class _Source:
    """What ``OtelExporter`` uses of a store: ``capacity``, ``subscribe()``, ``flush()``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.fanout = Fanout(capacity=capacity)

    def subscribe(self, capacity: int | None = None) -> AbstractAsyncContextManager[Subscription]:
        return self.fanout.subscribe(capacity)

    async def flush(self) -> None:
        return None


def best(rounds: int, run: Callable[[], float]) -> float:
    return max(run() for _ in range(rounds))


def mapping_rate(events: list[AnalyticsEvent], spans: bool) -> float:
    mapper = GenAiMapper()
    gc.collect()
    t0 = _clock()
    for ev in events:
        m = mapper.measurements(ev)
        if spans and m is not None:
            mapper.span(ev, m)
    return len(events) / (_clock() - t0)


def sdk_floor_rate(events: list[AnalyticsEvent], spans: bool) -> float:
    """The exporter's SDK calls, with the measurements and span data made beforehand."""
    mapper = GenAiMapper()
    prepared: list[tuple[GenAiMeasurements, GenAiSpan]] = []
    for ev in events:
        m = mapper.measurements(ev)
        assert m is not None
        prepared.append((m, mapper.span(ev, m)))
    providers = Providers(len(events))
    meter = providers.meter_provider.get_meter("floor")
    tokens = meter.create_histogram(
        "t", unit="{token}", explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS
    )
    duration = meter.create_histogram(
        "d", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )
    ttft = meter.create_histogram(
        "f", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )
    cost = meter.create_counter("c", unit="{nanodollar}")
    tracer = providers.tracer_provider.get_tracer("floor")
    gc.collect()
    t0 = _clock()
    for m, s in prepared:
        if m.input_tokens is not None:
            tokens.record(m.input_tokens, m.input_attributes)
        if m.output_tokens is not None:
            tokens.record(m.output_tokens, m.output_attributes)
        if m.duration_s is not None:
            duration.record(m.duration_s, m.duration_attributes)
        if m.ttft_s is not None:
            ttft.record(m.ttft_s, m.attributes)
        if m.cost_nanos is not None:
            cost.add(m.cost_nanos, m.attributes)
        if spans:
            span = tracer.start_span(
                s.name, kind=SpanKind.CLIENT, attributes=s.attributes, start_time=s.start_ns
            )
            if s.error_type is not None:
                span.set_status(Status(StatusCode.ERROR, s.error_message))
            span.end(end_time=s.end_ns)
    elapsed = _clock() - t0
    providers.shutdown()
    return len(events) / elapsed


async def actor_rate(events: list[AnalyticsEvent], spans: bool) -> float:
    """Events per CPU second through ``OtelExporter``'s loop (buffer holds them all)."""
    providers = Providers(len(events))
    source = _Source(len(events))
    exporter = OtelExporter(
        source,  # type: ignore[arg-type]
        meter_provider=providers.meter_provider,
        tracer_provider=providers.tracer_provider,
        spans=spans,
    )
    async with exporter:
        source.fanout.publish(events)
        gc.collect()
        t0 = _clock()
        await exporter.flush()
        elapsed = _clock() - t0
        assert exporter.exported == len(events) and exporter.dropped == 0
    providers.shutdown()
    return len(events) / elapsed


async def end_to_end(path: Path, events: list[AnalyticsEvent], export: bool) -> tuple[float, int]:
    """``record_llm_completed`` → SQLite; events per second and the exporter's drops."""
    providers = Providers(0)
    dropped = 0
    async with EventStore(path, capacity=10_000, overflow="block") as store:
        exporter: OtelExporter | None = None
        if export:
            exporter = OtelExporter(store, meter_provider=providers.meter_provider, spans=False)
            await exporter.__aenter__()
        rec = store.record_llm_completed
        gc.collect()
        t0 = _clock()
        for ev in events:
            p = ev.payload
            assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
            await rec(
                p.model,
                p.input_tokens,
                p.output_tokens,
                provider=p.provider,
                duration_ms=p.duration_ms,
                ttft_ms=p.ttft_ms,
            )
        if exporter is not None:
            await exporter.flush()
        else:
            await store.flush()
        elapsed = _clock() - t0
        if exporter is not None:
            await exporter.__aexit__(None, None, None)
            assert exporter.exported + exporter.dropped == len(events)
            dropped = exporter.dropped
    providers.shutdown()
    return len(events) / elapsed, dropped


async def main_async(n: int, rounds: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {n:,} events, uvloop")
    events = make_events(n)
    print(f"{'':<16} {'metrics':>16} {'metrics + spans':>18}")
    rows: dict[str, tuple[float, float]] = {}
    rows["mapping"] = (
        best(rounds, lambda: mapping_rate(events, False)),
        best(rounds, lambda: mapping_rate(events, True)),
    )
    rows["SDK floor"] = (
        best(rounds, lambda: sdk_floor_rate(events, False)),
        best(rounds, lambda: sdk_floor_rate(events, True)),
    )
    actor = [0.0, 0.0]
    for _ in range(rounds):
        actor[0] = max(actor[0], await actor_rate(events, False))
        actor[1] = max(actor[1], await actor_rate(events, True))
    rows["exporter actor"] = (actor[0], actor[1])
    for label, (plain, spans) in rows.items():
        print(
            f"{label:<16} {plain:>10,.0f} ev/s {spans:>12,.0f} ev/s"
            f"   ({1e6 / plain:.1f} / {1e6 / spans:.1f} µs/event)"
        )
    floor, with_spans = rows["SDK floor"]
    print(f"{'actor / floor':<16} {actor[0] / floor:>14.0%} {actor[1] / with_spans:>16.0%}")
    tmp = Path(tempfile.mkdtemp(prefix="llmtally-bench-"))
    off = on = 0.0
    dropped = 0
    for r in range(rounds):
        off = max(off, (await end_to_end(tmp / f"off-{r}.db", events, export=False))[0])
        rate, lost = await end_to_end(tmp / f"on-{r}.db", events, export=True)
        on, dropped = max(on, rate), max(dropped, lost)
    cost = (1 / on - 1 / off) * 1e6
    print(
        f"end to end (SQLite): {off:,.0f} ev/s without, {on:,.0f} ev/s with the exporter "
        f"(+{cost:.1f} µs/event; exporter drops: {dropped})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main_async(args.events, args.rounds))


if __name__ == "__main__":
    main()

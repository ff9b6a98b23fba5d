"""Export what llmtally records as OpenTelemetry GenAI metrics and spans.

pip install 'llmtally[otel]'
python examples/otel_export.py [path/to/analytics.db]

The SDK prints to the console here; in production an OTLP exporter takes its place
(``opentelemetry-exporter-otlp``: ``OTLPMetricExporter()``, ``OTLPSpanExporter()``).
"""

from __future__ import annotations

import sys

import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from llmtally import EventStore
from llmtally.exporters.otel import OtelExporter


async def main(path: str) -> None:
    async with EventStore(path) as store, OtelExporter(store) as exporter:
        await store.record_llm_completed("gpt-4o-mini", 812, 240, duration_ms=930.0)
        await store.record_llm_failed(
            "claude-sonnet-4-5", error_code="rate_limited", status_code=429, duration_ms=120.0
        )
        async with store.track_stream("gpt-4o-mini", endpoint="/v1/chat/completions") as s:
            s.token()  # first chunk: gen_ai.client.operation.time_to_first_chunk
            s.usage(input_tokens=90, output_tokens=1)
        await exporter.flush()  # everything recorded so far is in the SDK
        print(f"exported={exporter.exported} dropped={exporter.dropped}", flush=True)


if __name__ == "__main__":
    # The global providers (OtelExporter uses them unless given others). Both export from
    # their own threads, and both export what is left when the process exits.
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[PeriodicExportingMetricReader(ConsoleMetricExporter())])
    )
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "analytics.db")

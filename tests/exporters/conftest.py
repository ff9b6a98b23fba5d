"""OpenTelemetry SDK providers that keep what they are given in memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class Otel:
    meter_provider: MeterProvider
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    spans: InMemorySpanExporter

    def metrics(self) -> dict[str, Metric]:
        """Every metric collected now (cumulative), by name."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: metric
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


def points(metric: Metric) -> dict[frozenset[tuple[str, object]], HistogramDataPoint]:
    """A histogram's data points by their attributes."""
    out: dict[frozenset[tuple[str, object]], HistogramDataPoint] = {}
    for point in metric.data.data_points:
        assert isinstance(point, HistogramDataPoint)
        out[frozenset((point.attributes or {}).items())] = point
    return out


def sums(metric: Metric) -> dict[frozenset[tuple[str, object]], int | float]:
    """A counter's values by their attributes."""
    out: dict[frozenset[tuple[str, object]], int | float] = {}
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        out[frozenset((point.attributes or {}).items())] = point.value
    return out


def key(*parts: Mapping[str, object], **more: object) -> frozenset[tuple[str, object]]:
    """The lookup key of a data point with these attributes (merged in order)."""
    merged: dict[str, object] = {}
    for part in parts:
        merged.update(part)
    merged.update(more)
    return frozenset(merged.items())


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    yield Otel(meter_provider, reader, tracer_provider, spans)
    meter_provider.shutdown()
    tracer_provider.shutdown()

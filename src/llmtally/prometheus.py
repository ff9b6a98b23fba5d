"""Prometheus metrics for an ``EventStore`` (or the collector), built at scrape time.

Mount them in a router's own Starlette/FastAPI app with one line::

    app.mount("/metrics", llmtally.prometheus.make_asgi_app(store))

``make_asgi_app`` is prometheus_client's own ASGI app over a dedicated
``CollectorRegistry`` holding one ``LlmTallyCollector``; nothing is registered in the
process-wide default registry. The collector keeps no metric objects and no state:
``collect()`` reads ``source.stats()``, the trackers and the budgets when Prometheus
scrapes, and yields metric families; prometheus_client writes the text (or OpenMetrics)
format. prometheus_client's ASGI app runs ``collect()`` on the event loop's thread, which
is where the store's state may be read.

Names follow the Prometheus conventions: counters end in ``_total``, base units
(seconds, US dollars, ratios 0–1). Request metrics carry ``model`` and ``provider``;
``agent_id`` is opt-in (``agent_label=True``) and bounded: the ``max_agents`` agents with
the most requests keep their id, the others share ``"(other)"``, requests without an
agent have ``agent_id=""``.

=============================================  ======  ======================================
metric                                         type    labels
=============================================  ======  ======================================
llmtally_requests_total                        counter model, provider[, agent_id]
llmtally_request_failures_total                counter model, provider[, agent_id]
llmtally_tokens_total                          counter model, provider[, agent_id], type
llmtally_cost_usd_total                        counter model, provider[, agent_id]
llmtally_unpriced_requests_total               counter model, provider[, agent_id]
llmtally_request_duration_seconds              summary model, provider[, agent_id]
llmtally_time_to_first_token_seconds           summary model, provider[, agent_id]
llmtally_active_streams                        gauge   model
llmtally_streams_total                         counter model, outcome
llmtally_stream_inter_token_latency_seconds    summary model
llmtally_stream_output_tokens_per_second       summary model
llmtally_dropped_events_total                  counter cause
llmtally_unsynced_events                       gauge
llmtally_persist_errors_total                  counter
llmtally_sync_events_total                     counter outcome
llmtally_sync_requests_total                   counter
llmtally_sync_status                           gauge   status (1 for the current one)
llmtally_error_patterns                        gauge
llmtally_slo_target, _error_rate, _violated,   gauge
_error_budget_remaining
llmtally_slo_burn_rate                         gauge   window (5m, 30m, 1h, 6h, 3d)
llmtally_slo_alert                             gauge   alert (fast_burn, slow_burn, ticket)
llmtally_budget_limit_usd, _spent_usd,         gauge   budget_id, scope, scope_value, kind,
_reserved_usd, _remaining_usd, _forecast_usd,          period
_used_ratio
=============================================  ======  ======================================

``tokens_total{type="input"}`` is the total input, cache reads (``cached_input``) and
writes (``cache_write``) included: do not add the types up. Summaries have p50, p95 and
p99 (from a mergeable sketch, ±1%) plus ``_count`` and ``_sum``.

Money is integer nano-dollars everywhere in llmtally; the exposition format is float64,
so ``llmtally_cost_usd_total`` is ``nanos / 1e9`` rounded once, at this edge, to the
nearest double (exactly representable as nanos up to 2**53, about 9 million dollars;
beyond, within one part in 2**53). Budget gauges likewise from micro-dollars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import make_asgi_app as _prometheus_asgi_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .analysis.budgets import BudgetStatus
from .analysis.sketch import SketchSummary
from .analysis.slo import HOUR_MS, SloStatus
from .analysis.stats import Aggregate, ComputedStats
from .analysis.trackers import Trackers

__all__ = [
    "LlmTallyCollector",
    "MetricsSource",
    "make_asgi_app",
    "make_registry",
    "render",
]

_QUANTILES: Final = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
_TOKEN_TYPES: Final = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write", "cache_write_input_tokens"),
)
_SYNC_OUTCOMES: Final = ("sent", "accepted", "duplicates", "rejected", "dropped", "failed")
_SYNC_STATUSES: Final = ("disabled", "idle", "ok", "retrying", "config_error")
_NANOS_PER_USD: Final = 1_000_000_000
_MICROS_PER_USD: Final = 1_000_000


class MetricsSource(Protocol):
    """What the collector reads: ``EventStore`` and the collector server's view both
    provide it. Every method is called on the event loop's thread, at scrape time."""

    def stats(self) -> ComputedStats: ...

    def observed_state(self) -> tuple[Aggregate, Trackers]: ...

    def slo_status(
        self, target: float | str | Decimal | Fraction = ..., window_ms: int = ...
    ) -> SloStatus: ...

    def budget_status(self) -> list[BudgetStatus]: ...


def _summary(
    family: SummaryMetricFamily, labels: dict[str, str], s: SketchSummary, scale: float = 1.0
) -> None:
    """Add one summary: its quantile samples, ``_count`` and ``_sum``; values x ``scale``
    (``1e-3``: milliseconds to seconds)."""
    for q, attr in _QUANTILES:
        value = getattr(s, attr)
        if value is not None:
            family.samples.append(Sample(family.name, {**labels, "quantile": q}, value * scale))
    family.add_metric(list(labels.values()), s.count, s.sum * scale)


class LlmTallyCollector(Collector):
    """A prometheus_client custom collector over a ``MetricsSource`` (see the module
    docstring for the metrics). ``slo_target``/``slo_window_ms`` choose the SLO the
    ``llmtally_slo_*`` gauges report. Raises ``ValueError`` for ``max_agents < 1``."""

    def __init__(
        self,
        source: MetricsSource,
        *,
        agent_label: bool = False,
        max_agents: int = 20,
        slo_target: float | str | Decimal | Fraction = 0.999,
        slo_window_ms: int = HOUR_MS,
    ) -> None:
        if max_agents < 1:
            raise ValueError("max_agents must be at least 1")
        self.source = source
        self.agent_label = agent_label
        self.max_agents = max_agents
        self.slo_target = slo_target
        self.slo_window_ms = slo_window_ms

    def _families(self) -> dict[str, Any]:
        req = ["model", "provider", *(["agent_id"] if self.agent_label else [])]
        budget = ["budget_id", "scope", "scope_value", "kind", "period"]
        c, g, s = CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
        return {
            "requests": c("llmtally_requests", "LLM requests (completed and failed).", labels=req),
            "failures": c("llmtally_request_failures", "Failed LLM requests.", labels=req),
            "tokens": c(
                "llmtally_tokens",
                "Tokens by type; input is the total input, cached_input and cache_write "
                "are parts of it.",
                labels=[*req, "type"],
            ),
            "cost": c("llmtally_cost_usd", "Cost in US dollars.", labels=req),
            "unpriced": c(
                "llmtally_unpriced_requests",
                "Requests of models without a price (their cost counts as 0).",
                labels=req,
            ),
            "duration": s("llmtally_request_duration_seconds", "LLM request duration.", labels=req),
            "ttft": s("llmtally_time_to_first_token_seconds", "Time to first token.", labels=req),
            "active": g("llmtally_active_streams", "Streams in progress.", labels=["model"]),
            "streams": c(
                "llmtally_streams", "Finished streams by outcome.", labels=["model", "outcome"]
            ),
            "itl": s(
                "llmtally_stream_inter_token_latency_seconds",
                "Mean inter-token latency of each stream.",
                labels=["model"],
            ),
            "tps": s(
                "llmtally_stream_output_tokens_per_second",
                "Output tokens per second of each stream after its first token.",
                labels=["model"],
            ),
            "dropped": c("llmtally_dropped_events", "Events dropped, by cause.", labels=["cause"]),
            "unsynced": g("llmtally_unsynced_events", "Request events not yet synced."),
            "persist_errors": c("llmtally_persist_errors", "Failed writes (retried)."),
            "sync_events": c("llmtally_sync_events", "Events by sync outcome.", labels=["outcome"]),
            "sync_requests": c("llmtally_sync_requests", "Requests made to the collector."),
            "sync_status": g(
                "llmtally_sync_status", "1 for the syncer's current status.", labels=["status"]
            ),
            "error_patterns": g("llmtally_error_patterns", "Distinct error patterns tracked."),
            "slo_target": g("llmtally_slo_target", "The success-rate objective."),
            "slo_error_rate": g("llmtally_slo_error_rate", "Error rate over the SLO window."),
            "slo_budget": g(
                "llmtally_slo_error_budget_remaining",
                "Errors left in the SLO window's error budget (negative once overspent).",
            ),
            "slo_violated": g("llmtally_slo_violated", "1 when the error rate exceeds 1 - target."),
            "slo_burn": g(
                "llmtally_slo_burn_rate",
                "Error-budget burn rate (1 = exactly on budget).",
                labels=["window"],
            ),
            "slo_alert": g(
                "llmtally_slo_alert", "1 when a multi-window burn alert fires.", labels=["alert"]
            ),
            "budget_limit": g("llmtally_budget_limit_usd", "Budget limit.", labels=budget),
            "budget_spent": g(
                "llmtally_budget_spent_usd", "Spend in the current period.", labels=budget
            ),
            "budget_reserved": g(
                "llmtally_budget_reserved_usd", "Held by calls in flight.", labels=budget
            ),
            "budget_remaining": g(
                "llmtally_budget_remaining_usd",
                "Limit minus spend and holds (negative once overspent).",
                labels=budget,
            ),
            "budget_used": g(
                "llmtally_budget_used_ratio", "Spend / limit (1 = used up).", labels=budget
            ),
            "budget_forecast": g(
                "llmtally_budget_forecast_usd",
                "Linear forecast of spend at the end of the period.",
                labels=budget,
            ),
        }

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (for duplicate checks at registration)."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        """Every family, with samples read from the source now."""
        f = self._families()
        stats = self.source.stats()
        aggregate, trackers = self.source.observed_state()
        self._requests(f, aggregate)
        self._streams(f, trackers)
        self._health(f, stats)
        f["error_patterns"].add_metric([], len(trackers.errors))
        self._slo(f)
        self._budgets(f)
        yield from f.values()

    def _requests(self, f: Mapping[str, Any], aggregate: Aggregate) -> None:
        rollup = aggregate.rollup(agents=self.max_agents if self.agent_label else 0)
        for (model, provider, agent_id), t in sorted(rollup.items()):
            names = {"model": model, "provider": provider}
            if self.agent_label:
                names["agent_id"] = agent_id
            labels = list(names.values())
            f["requests"].add_metric(labels, t.requests)
            f["failures"].add_metric(labels, t.failed_requests)
            for kind, attr in _TOKEN_TYPES:
                f["tokens"].add_metric([*labels, kind], getattr(t, attr))
            f["cost"].add_metric(labels, t.cost_nanos / _NANOS_PER_USD)
            f["unpriced"].add_metric(labels, t.unpriced_requests)
            if t.duration.count:
                _summary(f["duration"], names, t.duration.summary(), 1e-3)
            if t.ttft.count:
                _summary(f["ttft"], names, t.ttft.summary(), 1e-3)

    def _streams(self, f: Mapping[str, Any], trackers: Trackers) -> None:
        snapshot = trackers.streaming.snapshot()
        sketches = trackers.streaming.sketches()
        for model, m in sorted(snapshot.by_model.items()):
            f["active"].add_metric([model], m.active_streams)
            for outcome in ("completed", "failed", "cancelled"):
                f["streams"].add_metric([model, outcome], getattr(m, outcome))
            sk = sketches[model]
            if sk.itl_ms.count:
                _summary(f["itl"], {"model": model}, sk.itl_ms, 1e-3)
            if sk.tokens_per_s.count:
                _summary(f["tps"], {"model": model}, sk.tokens_per_s)

    def _health(self, f: Mapping[str, Any], stats: ComputedStats) -> None:
        for cause, n in sorted(stats.dropped_by_cause.items()):
            f["dropped"].add_metric([cause], n)
        f["unsynced"].add_metric([], stats.unsynced_events)
        f["persist_errors"].add_metric([], stats.persist_errors)
        if stats.sync:
            for outcome in _SYNC_OUTCOMES:
                f["sync_events"].add_metric([outcome], stats.sync.get(outcome, 0))
            f["sync_requests"].add_metric([], stats.sync.get("requests", 0))
        for status in _SYNC_STATUSES:
            f["sync_status"].add_metric([status], 1 if stats.sync_status == status else 0)

    def _slo(self, f: Mapping[str, Any]) -> None:
        slo = self.source.slo_status(self.slo_target, self.slo_window_ms)
        f["slo_target"].add_metric([], slo.target)
        f["slo_error_rate"].add_metric([], slo.error_rate)
        f["slo_budget"].add_metric([], slo.error_budget_remaining)
        f["slo_violated"].add_metric([], 1 if slo.violated else 0)
        for window in ("5m", "30m", "1h", "6h", "3d"):
            f["slo_burn"].add_metric([window], getattr(slo, f"burn_rate_{window}"))
        for alert in ("fast_burn", "slow_burn", "ticket"):
            f["slo_alert"].add_metric([alert], 1 if getattr(slo, alert) else 0)

    def _budgets(self, f: Mapping[str, Any]) -> None:
        for b in self.source.budget_status():
            labels = [b.budget_id, b.scope, b.scope_value or "", b.kind, b.period]
            f["budget_limit"].add_metric(labels, b.limit_micros / _MICROS_PER_USD)
            f["budget_spent"].add_metric(labels, b.spent_nanos / _NANOS_PER_USD)
            f["budget_reserved"].add_metric(labels, b.reserved_micros / _MICROS_PER_USD)
            f["budget_remaining"].add_metric(labels, b.remaining_micros / _MICROS_PER_USD)
            f["budget_used"].add_metric(labels, b.spent_nanos / (b.limit_micros * 1000))
            if b.forecast_micros is not None:
                f["budget_forecast"].add_metric(labels, b.forecast_micros / _MICROS_PER_USD)


def make_registry(source: MetricsSource, **options: Any) -> CollectorRegistry:
    """A fresh ``CollectorRegistry`` holding one ``LlmTallyCollector(source, **options)``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LlmTallyCollector(source, **options))
    return registry


def make_asgi_app(source: MetricsSource, **options: Any) -> Callable[..., Any]:
    """prometheus_client's ASGI app serving ``source``'s metrics from a dedicated
    registry: ``app.mount("/metrics", make_asgi_app(store))``. ``options`` go to
    ``LlmTallyCollector`` (``agent_label``, ``max_agents``, ``slo_target``, ...)."""
    app: Callable[..., Any] = _prometheus_asgi_app(make_registry(source, **options))
    return app


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` of a scrape of ``registry`` in the format ``accept``
    asks for (OpenMetrics or the Prometheus text format), by prometheus_client."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type

"""Anomalies in words, for people: the dashboard and ``llmtally tail`` show them alike.

Pure and dependency-free (``tail`` runs without the server extra). Values are in each
detector metric's unit (``llmtally.analysis.anomaly``): requests per minute, a failed
share, milliseconds, nano-dollars per minute (shown as dollars, in decimal arithmetic).
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Protocol

__all__ = ["METRIC_LABELS", "anomaly_summary", "anomaly_value"]

METRIC_LABELS: Final = {
    "request_rate": "request rate",
    "error_rate": "error rate",
    "cost_rate": "cost rate",
    "p95_latency_ms": "p95 latency",
}


class _Anomaly(Protocol):
    @property
    def metric(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def dim(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def minute_ms(self) -> int: ...
    @property
    def observed(self) -> int | float: ...
    @property
    def baseline(self) -> int | float: ...
    @property
    def window_minutes(self) -> int: ...


def _usd(micros: Decimal) -> str:
    places = 2 if abs(micros) >= 10_000_000 else 4 if abs(micros) >= 10_000 or not micros else 6
    return f"${micros / 1_000_000:,.{places}f}"


def anomaly_value(metric: str, v: int | float) -> str:
    """``v`` in ``metric``'s unit: ``180/min``, ``25.00%``, ``812 ms`` / ``1.23 s``,
    ``$0.000180/min``; an unknown metric's value as is."""
    if metric == "request_rate":
        whole = isinstance(v, int) or float(v).is_integer()
        return f"{v:,.0f}/min" if whole else f"{v:,.1f}/min"
    if metric == "error_rate":
        return f"{100 * v:.2f}%"
    if metric == "p95_latency_ms":
        return f"{v:,.0f} ms" if v < 1000 else f"{v / 1000:,.2f} s"
    if metric == "cost_rate":
        return _usd((Decimal(repr(v)) / 1000).to_integral_value(ROUND_HALF_UP)) + "/min"
    return repr(v)


def anomaly_summary(a: _Anomaly) -> str:
    """One line: ``spike of request rate for model=gpt-4o at 01-15 07:40 UTC: 180/min,
    baseline 30/min`` (with `` over N min`` for a trailing window longer than a minute)."""
    when = time.strftime("%m-%d %H:%M", time.gmtime(a.minute_ms / 1000))
    window = f" over {a.window_minutes} min" if a.window_minutes > 1 else ""
    return (
        f"{a.kind} of {METRIC_LABELS.get(a.metric, a.metric)} for {a.dim}={a.value} at "
        f"{when} UTC: {anomaly_value(a.metric, a.observed)}{window}, "
        f"baseline {anomaly_value(a.metric, a.baseline)}"
    )

"""The dashboard's anomalies: a table of the detector's findings and markers on the time
charts. Pure: ``AnomalyRecord``s in, escaped HTML (or ``TimeMarker``s) out.

Each table row and each marker carries ``data-anomaly`` (the event id), ``data-metric``,
``data-kind`` (``spike``/``drop``), ``data-dim``, ``data-group`` (the model or provider)
and ``data-start`` (the episode's first minute, unix seconds), so tests and scripts can
match them with ``GET /analytics/anomalies``. A marker stands in the middle of that
minute on the chart that draws the metric (``ANOMALY_CHARTS``). Values are shown in
their metric's unit (``llmtally._anomaly_text``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import Final

from ..._anomaly_text import METRIC_LABELS, anomaly_summary, anomaly_value
from ...query.anomalies import AnomalyRecord
from .svg import TimeMarker

__all__ = ["ANOMALY_CHARTS", "anomaly_markers", "anomaly_table"]

ANOMALY_CHARTS: Final = {
    "request_rate": "chart-traffic",
    "error_rate": "chart-traffic",
    "cost_rate": "chart-cost",
    "p95_latency_ms": "chart-latency",
}
"""The chart (by id) on which an anomaly of each detector metric is marked."""
_HALF_MINUTE_MS: Final = 30_000


def _when(a: AnomalyRecord) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(a.minute_ms / 1000))


def _data(a: AnomalyRecord) -> tuple[tuple[str, str], ...]:
    return (
        ("anomaly", a.event_id),
        ("metric", a.metric),
        ("kind", a.kind),
        ("dim", a.dim),
        ("group", a.value),
        ("start", str(a.timestamp)),
    )


def anomaly_markers(found: Sequence[AnomalyRecord]) -> dict[str, list[TimeMarker]]:
    """Markers per chart id: one per anomaly whose metric a chart draws, at the middle
    of its minute, pointing up for a spike and down for a drop."""
    out: dict[str, list[TimeMarker]] = {}
    for a in found:
        chart = ANOMALY_CHARTS.get(a.metric)
        if chart is None:
            continue
        out.setdefault(chart, []).append(
            TimeMarker(
                t_ms=a.minute_ms + _HALF_MINUTE_MS,
                title=anomaly_summary(a),
                css_class=f"anomaly {'spike' if a.kind == 'spike' else 'drop'}",
                up=a.kind == "spike",
                data=_data(a),
            )
        )
    return out


def anomaly_table(found: Sequence[AnomalyRecord]) -> str:
    """The anomalies as a table, in the given order (newest first)."""
    if not found:
        return '<p class="empty">No anomalies detected in this range.</p>'
    rows = []
    for a in found:
        attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in _data(a))
        kind = "spike" if a.kind == "spike" else "drop"
        arrow = "▲" if kind == "spike" else "▼"
        rows.append(
            f'<tr class="anomaly {kind}"{attrs} title="{escape(anomaly_summary(a))}">'
            f"<td>{escape(_when(a))}</td>"
            f"<td>{escape(METRIC_LABELS.get(a.metric, a.metric))}</td>"
            f"<td>{escape(a.dim)}={escape(a.value)}</td>"
            f'<td class="kind">{arrow} {escape(a.kind)}</td>'
            f'<td class="n">{escape(anomaly_value(a.metric, a.observed))}</td>'
            f'<td class="n">{escape(anomaly_value(a.metric, a.baseline))}</td>'
            f'<td class="n">{a.window_minutes} min</td>'
            f'<td class="n">{a.score:+.1f}</td></tr>'
        )
    return (
        '<table class="list" id="anomalies"><thead><tr><th>When</th><th>Metric</th>'
        "<th>Series</th><th>Direction</th><th>Observed</th><th>Baseline</th><th>Window</th>"
        f"<th>z</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )

"""The dashboard's panels as one HTML fragment: tiles, charts and tables.

``render_panels(data)`` is pure: ``DashboardData`` in, escaped HTML out. The page embeds
it at load, and its script fetches it again (``GET /dashboard/panels``) to refresh the
charts without reloading. Tiles carry ``data-value`` (the exact number) and
``data-kind`` so the script can add live events to them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, Final

from ...analysis.budgets import BudgetStatus
from ...analysis.errors import ErrorPatternsSnapshot
from ...analysis.slo import FAST_BURN_THRESHOLD, SLOW_BURN_THRESHOLD, TICKET_BURN_THRESHOLD
from ...query import AggregateResult, TimeSeriesResult
from .anomaly_panel import anomaly_markers, anomaly_table
from .data import MAX_ANOMALIES, DashboardData, SloSummary
from .formats import format_count, format_ms, format_usd, format_usd_tick
from .svg import PALETTE, Bar, Series, column_chart, hbar_chart, line_chart

__all__ = [
    "MAX_MODEL_SERIES",
    "format_count",
    "format_ms",
    "format_usd",
    "render_panels",
]

MAX_MODEL_SERIES: Final = 7
"""Models with the most cost get their own series; the rest are summed as "other"."""
_OTHER: Final = "(other)"
_REQUESTS_COLOR: Final = "#3b82f6"
_FAILURES_COLOR: Final = "#ef4444"
_P50, _P95, _P99 = "#10b981", "#f59e0b", "#ef4444"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "0.00%"


def _tile(tile_id: str, label: str, value: int | float | None, text: str, kind: str) -> str:
    data_value = "" if value is None else f' data-value="{value!r}"'
    return (
        f'<div class="tile"><div class="label">{escape(label)}</div>'
        f'<div class="num" id="{tile_id}" data-kind="{kind}"{data_value}>{escape(text)}</div></div>'
    )


def _tiles(t: AggregateResult) -> str:
    return (
        '<div class="tiles">'
        + _tile("t-requests", "Requests", t.total_requests, format_count(t.total_requests), "int")
        + _tile("t-failed", "Failed", t.failed_requests, format_count(t.failed_requests), "int")
        + _tile(
            "t-error-rate",
            "Error rate",
            None,
            _percent(t.failed_requests, t.total_requests),
            "percent",
        )
        + _tile("t-cost", "Cost", t.total_cost_micros, format_usd(t.total_cost_micros), "usd")
        + _tile(
            "t-input",
            "Input tokens",
            t.total_input_tokens,
            format_count(t.total_input_tokens),
            "int",
        )
        + _tile(
            "t-output",
            "Output tokens",
            t.total_output_tokens,
            format_count(t.total_output_tokens),
            "int",
        )
        + _tile("t-p95", "p95 latency", t.duration_ms.p95, format_ms(t.duration_ms.p95), "ms")
        + _tile("t-ttft-p95", "p95 TTFT", t.ttft_ms.p95, format_ms(t.ttft_ms.p95), "ms")
        + "</div>"
    )


def _card(title: str, body: str, *, card_id: str, wide: bool = False, note: str = "") -> str:
    cls = "card wide" if wide else "card"
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return (
        f'<section class="{cls}" id="{card_id}"><h2>{escape(title)}</h2>{body}{note_html}</section>'
    )


def _legend(series: Iterable[Series]) -> str:
    items = "".join(
        f'<span class="key"><svg width="10" height="10" aria-hidden="true">'
        f'<rect width="10" height="10" fill="{escape(s.color)}"/></svg>{escape(s.label)}</span>'
        for s in series
    )
    return f'<div class="legend">{items}</div>'


def _points(result: TimeSeriesResult) -> list[tuple[int, float | None]]:
    """The points of an ungrouped series (none when the range has no requests), in ms."""
    return [(t * 1000, v) for series in result.series for t, v in series.points]


def _model_series(cost: TimeSeriesResult) -> list[Series]:
    """One series per model, the ``MAX_MODEL_SERIES`` costliest kept apart and the rest
    summed as "(other)" (unless that would be a single model)."""
    by_model = {s.group or "(none)": s.points for s in cost.series}
    total = {m: sum(v or 0 for _, v in points) for m, points in by_model.items()}
    ranked = sorted(total, key=lambda m: (-total[m], m))
    keep = ranked[:MAX_MODEL_SERIES] if len(ranked) > MAX_MODEL_SERIES + 1 else ranked
    out = [
        Series(m, m, PALETTE[i % len(PALETTE)], [(t * 1000, v) for t, v in by_model[m]])
        for i, m in enumerate(keep)
    ]
    rest = ranked[len(keep) :]
    if rest:
        other: dict[int, int | float] = {}
        for m in rest:
            for t, v in by_model[m]:
                other[t] = other.get(t, 0) + (v or 0)
        color = PALETTE[len(keep) % len(PALETTE)]
        out.append(Series(_OTHER, _OTHER, color, [(t * 1000, v) for t, v in sorted(other.items())]))
    return out


def _charts(data: DashboardData) -> str:
    spec, ts = data.range, data.series
    frame: dict[str, Any] = {
        "start_ms": data.start_ms,
        "end_ms": data.end_ms,
        "bucket_ms": spec.window_ms,
    }
    traffic = [
        Series("requests", "requests", _REQUESTS_COLOR, _points(ts["requests"])),
        Series("failures", "failures", _FAILURES_COLOR, _points(ts["failures"])),
    ]
    models = _model_series(ts["cost"])
    markers = anomaly_markers(data.anomalies)

    def latency(prefix: str) -> list[Series]:
        return [
            Series(f"{prefix}_{q}", q, color, _points(ts[f"{prefix}_{q}"]))
            for q, color in (("p50", _P50), ("p95", _P95), ("p99", _P99))
        ]

    per = f"per {spec.window}"
    return (
        _card(
            f"Requests and failures {per}",
            column_chart(
                "chart-traffic",
                "Requests and failures",
                traffic,
                fmt=format_count,
                integer=True,
                markers=markers.get("chart-traffic", ()),
                **frame,
            )
            + _legend(traffic),
            card_id="card-traffic",
        )
        + _card(
            f"Cost by model {per}",
            column_chart(
                "chart-cost",
                "Cost by model",
                models,
                fmt=format_usd_tick,
                stacked=True,
                markers=markers.get("chart-cost", ()),
                **frame,
            )
            + _legend(models),
            card_id="card-cost",
        )
        + _card(
            f"Latency {per}",
            line_chart(
                "chart-latency",
                "Latency",
                latency("duration_ms"),
                fmt=format_ms,
                markers=markers.get("chart-latency", ()),
                **frame,
            )
            + _legend(latency("duration_ms")),
            card_id="card-latency",
        )
        + _card(
            f"Time to first token {per}",
            line_chart(
                "chart-ttft", "Time to first token", latency("ttft_ms"), fmt=format_ms, **frame
            )
            + _legend(latency("ttft_ms")),
            card_id="card-ttft",
        )
    )


def _slo(slo: SloSummary, totals: AggregateResult) -> str:
    bars = [
        Bar(
            w.window,
            f"{w.window} ({w.errors}/{w.requests})",
            w.burn_rate,
            _FAILURES_COLOR if w.burn_rate >= 1 else _REQUESTS_COLOR,
        )
        for w in slo.windows
    ]
    markers = [
        (float(TICKET_BURN_THRESHOLD), "1"),
        (float(SLOW_BURN_THRESHOLD), "6"),
        (float(FAST_BURN_THRESHOLD), "14.4"),
    ]
    alerts = "".join(
        f'<span class="badge {"alert" if on else "ok"}" data-alert="{key}">'
        f"{escape(label)}: {'firing' if on else 'ok'}</span>"
        for key, label, on in (
            ("fast_burn", "fast burn (page)", slo.fast_burn),
            ("slow_burn", "slow burn (page)", slo.slow_burn),
            ("ticket", "ticket", slo.ticket),
        )
    )
    allowed = (1 - slo.target) * totals.total_requests
    summary = (
        f'<p class="note">Target {slo.target:.4%} success. In this range: '
        f"{format_count(totals.failed_requests)} errors of an error budget of {allowed:,.1f}.</p>"
    )

    def burn(v: float) -> str:
        return f"{v:,.2f}×"

    return (
        f'<div class="badges">{alerts}</div>'
        + hbar_chart("chart-burn", "Burn rate per window", bars, fmt=burn, markers=markers)
        + summary
    )


def _errors(snapshot: ErrorPatternsSnapshot, span_ms: int) -> str:
    if not snapshot.patterns:
        return '<p class="empty">No failed requests in this range.</p>'
    top = max(p.count for p in snapshot.patterns)
    rows = []
    for p in snapshot.patterns:
        models = ", ".join(f"{m} ({n})" for m, n in sorted(p.models.items(), key=lambda kv: -kv[1]))
        codes = ", ".join(str(c) for c in sorted(p.status_codes))
        width = max(1.0, 60 * p.count / top)
        seen = time.strftime("%m-%d %H:%M:%S", time.gmtime(p.last_seen_ms / 1000))
        rows.append(
            f'<tr data-fingerprint="{escape(p.fingerprint)}" data-count="{p.count}">'
            f'<td class="n"><svg width="62" height="10" aria-hidden="true"><rect width="{width:.1f}" '
            f'height="10" fill="{_FAILURES_COLOR}"/></svg> {format_count(p.count)}</td>'
            f"<td>{escape(p.error_type)}</td>"
            f'<td class="msg" title="{escape(p.sample_message)}">{escape(p.message)}</td>'
            f"<td>{escape(models)}</td><td>{escape(codes)}</td><td>{escape(seen)}</td></tr>"
        )
    return (
        '<table class="list"><thead><tr><th>Count</th><th>Error</th><th>Pattern</th>'
        "<th>Models</th><th>Status</th><th>Last seen (UTC)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _budgets(budgets: Sequence[BudgetStatus]) -> str:
    if not budgets:
        return (
            '<p class="empty">No budgets here: start the collector with '
            "<code>--budgets FILE</code> to follow them (routers enforce their own).</p>"
        )
    rows = []
    for b in budgets:
        used = min(100.0, max(0.0, b.percent_used))
        color = _FAILURES_COLOR if b.exceeded else _REQUESTS_COLOR
        scope = b.scope if b.scope_value is None else f"{b.scope}={b.scope_value}"
        reached = ", ".join(f"{t}%" for t in b.thresholds_reached) or "–"
        forecast = "–" if b.forecast_micros is None else format_usd(b.forecast_micros)
        rows.append(
            f'<tr data-budget="{escape(b.budget_id)}" data-value="{b.percent_used!r}" '
            f'data-spent-micros="{b.spent_micros}" data-limit-micros="{b.limit_micros}" '
            f'data-thresholds="{",".join(map(str, b.thresholds_reached))}">'
            f"<td>{escape(b.budget_id)}</td><td>{escape(scope)}</td><td>{escape(b.period)}</td>"
            f"<td>{escape(b.kind)}</td>"
            f'<td class="n">{format_usd(b.spent_micros)} / {format_usd(b.limit_micros)}</td>'
            f'<td><svg width="120" height="10" aria-hidden="true"><rect width="120" height="10" '
            f'fill="#e5e7eb"/><rect width="{1.2 * used:.1f}" height="10" fill="{color}"/></svg> '
            f"{b.percent_used:.1f}%</td><td>{reached}</td>"
            f'<td class="n">{forecast}</td></tr>'
        )
    return (
        '<table class="list"><thead><tr><th>Budget</th><th>Scope</th><th>Period</th>'
        "<th>Kind</th><th>Spent / limit</th><th>Used</th><th>Thresholds reached</th>"
        "<th>Forecast</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_panels(data: DashboardData) -> str:
    """The tiles, charts, SLO, error and budget panels of ``data``."""
    note = (
        f"Based on the first {data.errors.total_errors:,} failed requests of the range."
        if data.errors_sampled
        else ""
    )
    return (
        _tiles(data.totals)
        + '<div class="grid">'
        + _charts(data)
        + _card(
            "Anomalies (UTC)",
            anomaly_table(data.anomalies),
            card_id="card-anomalies",
            wide=True,
            note=(
                f"The newest {MAX_ANOMALIES} of the range."
                if len(data.anomalies) >= MAX_ANOMALIES
                else ""
            ),
        )
        + _card("SLO burn rate", _slo(data.slo, data.totals), card_id="card-slo")
        + _card("Budgets", _budgets(data.budgets), card_id="card-budgets")
        + _card(
            "Top error patterns",
            _errors(data.errors, data.end_ms - data.start_ms),
            card_id="card-errors",
            wide=True,
            note=note,
        )
        + "</div>"
    )

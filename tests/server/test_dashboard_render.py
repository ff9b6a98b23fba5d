"""The dashboard's pure parts: charts, number formats, SLO maths, anomalies, escaping,
and what ``gather`` reads from a storage."""

from __future__ import annotations

import re
from fractions import Fraction
from html.parser import HTMLParser
from typing import Any, Literal

import msgspec
import pytest

from llmtally._anomaly_text import anomaly_value
from llmtally.events import AnalyticsEvent, AnomalyDetected, decode_wire_event, from_wire
from llmtally.query import QueryError, aggregate, timeseries
from llmtally.query.anomalies import record_of_anomaly
from llmtally.server.dashboard.anomaly_panel import anomaly_markers, anomaly_table
from llmtally.server.dashboard.data import (
    CHART_QUERIES,
    LATEST_EVENTS,
    RANGES,
    DashboardData,
    gather,
    parse_target,
    slo_summary,
)
from llmtally.server.dashboard.formats import format_usd_tick
from llmtally.server.dashboard.page import render_login, render_page
from llmtally.server.dashboard.panels import format_ms, format_usd, render_panels
from llmtally.server.dashboard.svg import Series, column_chart, line_chart, nice_max
from llmtally.server.detector import anomaly_event_id
from llmtally.storage.memory import MemoryStorage

from .collector import wire_event

NOW_MS = 1_800_000_000_000  # a fixed "now": 2027-01-15 08:00 UTC
HOSTILE = '<script>alert("x")</script>'


def event(i: int, **overrides: Any) -> AnalyticsEvent:
    return from_wire(decode_wire_event(msgspec.json.encode(wire_event(i, **overrides))))


class _Marks(HTMLParser):
    """Collects the attributes of every element with ``data-value``, and every ``<script>``."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[dict[str, str | None]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-value" in a:
            self.marks.append({"tag": tag, **a})
        self.scripts += tag == "script"


def marks(html: str, series: str | None = None) -> list[dict[str, str | None]]:
    p = _Marks()
    p.feed(html)
    return [m for m in p.marks if series is None or m.get("data-series") == series]


@pytest.mark.parametrize(
    ("value", "integer", "expected"),
    [
        pytest.param(0, False, 1.0, id="zero"),
        pytest.param(3, True, 4.0, id="small-count"),
        pytest.param(7, True, 8.0, id="count"),
        pytest.param(9, False, 10.0, id="ten"),
        pytest.param(0.0123, False, 0.02, id="small"),
        pytest.param(178.5, False, 200.0, id="hundreds"),
        pytest.param(1001, True, 2000.0, id="just-over"),
        pytest.param(1000, True, 1000.0, id="exact"),
    ],
)
def test_nice_max(value: float, integer: bool, expected: float) -> None:
    assert nice_max(value, integer=integer) == pytest.approx(expected)
    assert nice_max(value, integer=integer) >= value


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        pytest.param(0, "$0.0000", id="zero"),
        pytest.param(1_235, "$0.001235", id="tiny"),
        pytest.param(446_900, "$0.4469", id="cents"),
        pytest.param(12_345_678_901, "$12,345.68", id="large"),
    ],
)
def test_format_usd_is_exact(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_format_ms() -> None:
    assert (format_ms(None), format_ms(812.4), format_ms(1234.0)) == ("–", "812 ms", "1.23 s")


def test_slo_summary_matches_the_seed_example() -> None:
    # 99.9%: 1000 requests with 2 errors burn at exactly 2.0.
    s = slo_summary(Fraction("0.999"), [("1h", 1000, 2), ("5m", 0, 0)])
    assert [(w.window, w.burn_rate) for w in s.windows] == [("1h", 2.0), ("5m", 0.0)]
    assert not (s.fast_burn or s.slow_burn or s.ticket)
    fast = slo_summary(
        Fraction("0.999"), [("5m", 1000, 15), ("1h", 1000, 15), ("30m", 10, 0), ("6h", 10, 0)]
    )
    assert fast.fast_burn
    assert not fast.slow_burn
    ticket = slo_summary(Fraction("0.99"), [("6h", 100, 1), ("3d", 100, 1)])
    assert ticket.ticket  # exactly at the threshold counts


@pytest.mark.parametrize("raw", ["1", "0", "abc", "NaN", "-0.5"])
def test_bad_targets(raw: str) -> None:
    with pytest.raises(QueryError, match="target"):
        parse_target(raw)


def test_column_chart_marks_carry_exact_values() -> None:
    t0 = NOW_MS - 3 * 60_000
    series = [
        Series("a", "a", "#000", [(t0, 3), (t0 + 60_000, 1)]),
        Series("b", "b", "#111", [(t0, 2)]),
    ]
    svg = column_chart(
        "c", "t", series, start_ms=t0, end_ms=NOW_MS, bucket_ms=60_000, fmt=str, stacked=True
    )
    got = [(m["data-series"], m["data-start"], m["data-value"]) for m in marks(svg)]
    assert got == [
        ("a", str(t0 // 1000), "3"),
        ("a", str((t0 + 60_000) // 1000), "1"),
        ("b", str(t0 // 1000), "2"),
    ]
    # Stacked: b sits on top of a, so its bottom is a's top.
    a0, _, b0 = marks(svg)
    assert float(b0["y"] or 0) + float(b0["height"] or 0) == pytest.approx(
        float(a0["y"] or 0), abs=0.15
    )
    assert "no data" not in svg
    empty = line_chart("e", "t", [], start_ms=t0, end_ms=NOW_MS, bucket_ms=60_000, fmt=str)
    assert "no data in this range" in empty


def test_line_chart_values_round_trip_floats() -> None:
    v = 0.1 + 0.2  # not representable in one decimal: data-value must be exact
    svg = line_chart(
        "l", "t", [Series("p", "p", "#000", [(NOW_MS, v)])],
        start_ms=NOW_MS, end_ms=NOW_MS + 60_000, bucket_ms=60_000, fmt=str,
    )  # fmt: skip
    assert float(marks(svg)[0]["data-value"] or "") == v


async def _data(events: list[AnalyticsEvent], range_name: str = "1h") -> DashboardData:
    storage = MemoryStorage()
    await storage.open()
    try:
        await storage.ingest(events)
        return await gather(storage, RANGES[range_name], NOW_MS)
    finally:
        await storage.close()


async def test_gather_matches_aggregate_and_finds_errors() -> None:
    events = [event(i, timestamp_ms=NOW_MS - 3_000_000 + i * 20_000) for i in range(60)]
    events += [
        event(6, timestamp_ms=NOW_MS - 1000, error_message=f"rate limit req_{i}x9 in {i}s")
        for i in range(3)
    ]
    data = await _data(events)
    assert data.end_ms == NOW_MS + 1000
    assert data.start_ms == data.end_ms - 3_600_000
    storage = MemoryStorage()
    await storage.open()
    await storage.ingest(events)
    expected = await aggregate(storage, data.start_ms, data.end_ms)
    series = {
        name: await timeseries(
            storage,
            q.metric,
            data.start_ms,
            data.end_ms,
            window="1m",
            aggregation=q.aggregation,
            group_by=q.group_by,
            fill=q.fill,
        )
        for name, q in CHART_QUERIES.items()
    }
    await storage.close()
    assert data.totals == expected
    assert data.series == series
    html = render_panels(data)
    requests = {m["data-start"]: int(m["data-value"] or 0) for m in marks(html, "requests")}
    assert requests == {str(t): v for t, v in series["requests"].series[0].points}
    assert len(requests) == 61  # every bucket, those without requests at 0
    assert sum(requests.values()) == 63
    # Percentiles are not filled: the line breaks where minutes have no requests.
    p95 = {m["data-start"]: m["data-value"] for m in marks(html, "duration_ms_p95")}
    points = series["duration_ms_p95"].series[0].points
    assert p95 == {str(t): repr(v) for t, v in points if v is not None}
    assert 0 < len(p95) < len(points)
    latency = html[html.index('id="chart-latency"') : html.index('id="card-ttft"')]
    # Minutes 10-30 have requests, then none until the last whole minute: one line per
    # percentile through the first run; the last minute's point is a lone dot.
    assert latency.count("<polyline") == 3
    assert [v is None for _, v in points[-3:]] == [True, False, True]
    assert str(points[-2][0]) in p95
    # Failures: 60 // 7 from the helper ("429") and the 3 rate-limit ones: two patterns.
    assert data.errors.total_errors == 8 + 3
    assert sorted(p.count for p in data.errors.patterns) == [3, 8]
    assert len(data.latest) == LATEST_EVENTS
    assert data.latest[0].timestamp_ms >= data.latest[-1].timestamp_ms  # newest first
    assert [w.window for w in data.slo.windows] == ["5m", "30m", "1h", "6h", "3d"]
    assert data.slo.windows[0].requests == 3  # only the last minute's events


async def test_hostile_values_are_escaped() -> None:
    events = [
        event(1, timestamp_ms=NOW_MS - 60_000, model=HOSTILE, agent_id=HOSTILE),
        event(6, timestamp_ms=NOW_MS - 30_000, error_message=HOSTILE, error_code="x<y"),
    ]
    data = await _data(events)
    page = render_page(data, nonce="n0nce", live_url="/analytics/live", panels_url="/p?a=1&b=2")
    parser = _Marks()
    parser.feed(page)
    assert parser.scripts == 1  # ours, and only ours
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'data-panels-url="/p?a=1&amp;b=2"' in page
    assert re.findall(r'nonce="([^"]*)"', page) == ["n0nce", "n0nce"]
    assert "style=" not in page  # a strict CSP forbids style attributes
    login = render_login(nonce="n", error=HOSTILE)
    assert "<script>alert" not in login


async def test_empty_storage_renders() -> None:
    data = await _data([], "30d")
    html = render_panels(data)
    assert "no data in this range" in html
    assert "No failed requests in this range." in html
    assert "No budgets here" in html and "--budgets FILE" in html
    assert data.latest == []


# --- anomalies --------------------------------------------------------------------------


def anomaly(
    metric: str,
    minute_ms: int,
    *,
    kind: Literal["spike", "drop"] = "spike",
    dim: str = "model",
    value: str = "gpt-4o-mini",
    observed: int | float = 180,
    baseline: int | float = 30.5,
) -> AnalyticsEvent:
    """An ``anomaly_detected`` event as the detector stores it."""
    return AnalyticsEvent(
        event_id=anomaly_event_id(dim, value, metric, minute_ms),
        timestamp_ms=minute_ms,
        payload=AnomalyDetected(
            dim=dim,
            value=value,
            metric=metric,
            kind=kind,
            minute_ms=minute_ms,
            observed=observed,
            baseline=baseline,
            score=9.25 if kind == "spike" else -4.5,
        ),
    )


class _Anomalies(HTMLParser):
    """``(chart id or None, tag, attributes)`` of every element with ``data-anomaly``,
    and the text of each marker's ``<title>``."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str | None, str, dict[str, str | None]]] = []
        self.titles: list[str] = []
        self._chart: str | None = None
        self._in_marker = self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self._chart = a.get("id")
        if "data-anomaly" in a:
            self.found.append((self._chart if tag == "g" else None, tag, a))
            self._in_marker = tag == "g"
        self._in_title = self._in_marker and tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None
        if tag == "g":
            self._in_marker = False
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)


def test_anomaly_values_are_shown_in_their_units() -> None:
    assert anomaly_value("request_rate", 180) == "180/min"
    assert anomaly_value("request_rate", 30.25) == "30.2/min"
    assert anomaly_value("error_rate", 0.25) == "25.00%"
    assert anomaly_value("p95_latency_ms", 1234.0) == "1.23 s"
    assert anomaly_value("cost_rate", 180_000) == "$0.000180/min"
    assert anomaly_value("cost_rate", 12_345_678_901.5) == "$12.35/min"


async def test_anomalies_table_and_markers() -> None:
    minute = NOW_MS - 20 * 60_000
    events = [event(i, timestamp_ms=NOW_MS - 1_800_000 + i * 20_000) for i in range(60)]
    found = [
        anomaly("request_rate", minute),
        anomaly("cost_rate", minute, observed=180_000, baseline=30_000),
        anomaly("p95_latency_ms", minute + 60_000, kind="drop", observed=50.0, baseline=400.0),
        anomaly("error_rate", minute + 120_000, dim="provider", value="openai", observed=0.5),
        anomaly("request_rate", NOW_MS - 2 * 3_600_000),  # before the range: not shown
    ]
    data = await _data(events + found)
    ids = [a.event_id for a in data.anomalies]
    assert ids == [found[3].event_id, found[2].event_id, found[0].event_id, found[1].event_id]
    p = _Anomalies()
    p.feed(render_panels(data))
    rows = [a for chart, tag, a in p.found if tag == "tr"]
    assert [r["data-anomaly"] for r in rows] == ids  # newest first
    assert rows[0]["data-dim"] == "provider" and rows[0]["data-group"] == "openai"
    assert rows[1]["data-kind"] == "drop"
    assert {r["data-start"] for r in rows} == {
        str(m // 1000) for m in (minute, minute + 60_000, minute + 120_000)
    }
    markers = {a["data-anomaly"]: (chart, a) for chart, tag, a in p.found if tag == "g"}
    assert {k: chart for k, (chart, _) in markers.items()} == {
        found[0].event_id: "chart-traffic",
        found[1].event_id: "chart-cost",
        found[2].event_id: "chart-latency",
        found[3].event_id: "chart-traffic",
    }
    assert markers[found[2].event_id][1]["class"] == "anomaly drop"
    assert markers[found[0].event_id][1]["class"] == "anomaly spike"
    assert any(
        t.startswith("drop of p95 latency for model=gpt-4o-mini at ") and "50 ms" in t
        for t in p.titles
    )
    assert "spike of cost rate for model=gpt-4o-mini" in " ".join(p.titles)
    # Markers stand in the middle of their minute: spike and drop on the same x as a
    # column (traffic) drawn for that minute.
    html = render_panels(data)
    line_x = re.search(
        rf'data-anomaly="{found[0].event_id}"[^>]*><title>[^<]*</title><line x1="([\d.]+)"', html
    )
    column = re.search(
        rf'<rect class="mark" data-series="requests" data-start="{minute // 1000}"[^>]* '
        r'x="([\d.]+)"[^>]* width="([\d.]+)"',
        html,
    )
    assert line_x and column
    assert float(line_x[1]) == pytest.approx(float(column[1]) + (float(column[2]) + 1) / 2, abs=0.2)


async def test_anomalies_escape_everything() -> None:
    hostile = anomaly("request_rate", NOW_MS - 600_000, value=HOSTILE, dim='x"y')
    data = await _data([hostile])
    assert data.latest == []  # an anomaly is not a request
    page = render_page(data, nonce="n0nce", live_url="/l", panels_url="/p")
    assert "<script>alert" not in page
    assert 'x"y' not in page
    p = _Anomalies()
    p.feed(page)
    assert [(tag, a["data-group"], a["data-dim"]) for _, tag, a in p.found] == [
        ("g", HOSTILE, 'x"y'),
        ("tr", HOSTILE, 'x"y'),
    ]
    assert "style=" not in page


def test_no_anomalies_and_unknown_metrics() -> None:
    assert "No anomalies detected in this range." in anomaly_table([])
    record = record_of_anomaly(anomaly("queue_depth", NOW_MS))
    assert record is not None
    assert anomaly_markers([record]) == {}  # no chart draws it: listed, not marked
    assert "queue_depth" in anomaly_table([record])


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        pytest.param(0, "$0", id="zero"),
        pytest.param(2_500, "$0.0025", id="tick"),
        pytest.param(1_235, "$0.001235", id="tiny"),
        pytest.param(1_500_000, "$1.5", id="dollars"),
        pytest.param(12_345_678, "$12.35", id="cents"),
        pytest.param(1_250_000_000, "$1,250", id="large"),
        pytest.param(2_499.6, "$0.0025", id="float-axis-value"),
    ],
)
def test_cost_ticks_are_short(micros: float, text: str) -> None:
    assert format_usd_tick(micros) == text

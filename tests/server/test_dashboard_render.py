"""The dashboard's pure parts: charts, number formats, SLO maths, escaping, and what
``gather`` reads from a storage."""

from __future__ import annotations

import re
from fractions import Fraction
from html.parser import HTMLParser
from typing import Any

import msgspec
import pytest

from llmtally.events import AnalyticsEvent, decode_wire_event, from_wire
from llmtally.query import QueryError, aggregate
from llmtally.server.dashboard.data import (
    LATEST_EVENTS,
    RANGES,
    DashboardData,
    gather,
    parse_target,
    slo_summary,
)
from llmtally.server.dashboard.page import render_login, render_page
from llmtally.server.dashboard.panels import format_ms, format_usd, render_panels
from llmtally.server.dashboard.svg import Series, column_chart, line_chart, nice_max
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
    expected = await aggregate(storage, data.start_ms, data.end_ms, window="1m")
    await storage.close()
    assert data.totals == expected
    html = render_panels(data)
    requests = {m["data-start"]: int(m["data-value"] or 0) for m in marks(html, "requests")}
    assert requests == {str(b.period_start): b.total_requests for b in expected.buckets}
    assert sum(requests.values()) == 63
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

"""The dashboard in a real headless Chromium against a real ``llmtally serve``.

Signs in through the form, checks that the charts show what ``/analytics/timeseries``
answers (the query they are drawn from) and the tiles what ``/analytics/aggregate``
does, that the anomalies panel and the charts' markers show what ``/analytics/anomalies``
lists, that a newly posted event appears live (EventSource) and the charts refresh
without a reload, that the page logs no console error (a CSP violation would be one),
and writes a screenshot. Debian's chromium is used as is (``/usr/bin/chromium``; no
``playwright install``). Without it the test is skipped — or fails, when
``LLMTALLY_REQUIRE_BROWSER=1`` (CI), so a missing browser is never silently untested.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from llmtally.analysis.anomaly import Finding
from llmtally.events import AnalyticsEvent
from llmtally.server.detector import anomaly_event
from llmtally.storage.sqlite import SqliteStorage

from .collector import EVENTS_PATH, INGEST_TOKEN, READ_TOKEN, Collector, start_collector, wire_event

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium)"
        if os.environ.get("LLMTALLY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LLMTALLY_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"BROWSER TEST SKIPPED: {reason}")
    return CHROMIUM


def anomalies_before(now_ms: int) -> list[AnalyticsEvent]:
    """Two anomalies the detector stored earlier: a request-rate spike of gpt-4o 20
    minutes ago and a p95-latency drop of anthropic 35 minutes ago."""
    minute = now_ms // 60_000 * 60_000
    return [
        anomaly_event(
            "model",
            "gpt-4o",
            minute - 20 * 60_000,
            Finding("request_rate", "spike", 42, 7.5, 11.2),
        ),
        anomaly_event(
            "provider",
            "anthropic",
            minute - 35 * 60_000,
            Finding("p95_latency_ms", "drop", 55.0, 640.0, -6.4, window=5),
        ),
    ]


async def seed(db: Path, events: list[AnalyticsEvent]) -> None:
    storage = SqliteStorage(db)
    await storage.open()
    try:
        await storage.ingest(events)
    finally:
        await storage.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    workdir = tmp_path / "collector"
    workdir.mkdir()
    asyncio.run(seed(workdir / "collector.db", anomalies_before(int(time.time() * 1000))))
    server = start_collector(workdir)
    try:
        yield server
    finally:
        code = server.terminate()  # with the page's stream open: must still be quick
        assert code == 0, server.log_text()


def post(collector: Collector, events: list[dict[str, Any]]) -> None:
    r = httpx2.post(
        collector.url + EVENTS_PATH,
        json={"events": events},
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events)


def get(collector: Collector, path: str, **params: str) -> dict[str, Any]:
    r = httpx2.get(
        collector.url + path,
        params=params,
        headers={"Authorization": f"Bearer {READ_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def series_points(answer: dict[str, Any], key: str | None = None) -> dict[tuple[str, str], Any]:
    """A ``/analytics/timeseries`` answer's non-null points as ``{(series, start): value}``;
    the series is ``key`` or, grouped, the group."""
    return {
        (key or s["group"], str(t)): v
        for s in answer["series"]
        for t, v in s["points"]
        if v is not None
    }


def test_dashboard_in_chromium(chromium_path: Path, collector: Collector, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    now = int(time.time() * 1000)
    history = []
    for i in range(90):
        overrides: dict[str, Any] = {"timestamp_ms": now - 3_000_000 + i * 32_000}
        if i % 3 == 0:
            overrides.update(model="gpt-4o", provider="openai")
        if i % 14 == 6:  # half the failures (every 7th event fails): a second pattern
            overrides["error_message"] = f"rate limit for req_{i}k7 exceeded, retry in {i % 9}s"
        history.append(wire_event(i, **overrides))
    post(collector, history)

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium_path), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            # Signing in: the form, a wrong token, then the read token.
            r = page.goto(collector.url + "/")
            assert r is not None and r.status == 401
            page.fill("#token", "wrong-token")
            page.click("button[type=submit]")
            page.wait_for_selector("p.error", timeout=WAIT_MS)
            page.fill("#token", READ_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#dashboard", timeout=WAIT_MS)
            assert "token" not in page.url
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["llmtally_session"]["httpOnly"]
            assert cookies["llmtally_session"]["sameSite"] == "Strict"
            # The sign-in's 401 answers are logged as console errors; nothing else may be.
            assert all("status of 401" in m for m in problems), problems
            problems.clear()

            # The charts show what /analytics/timeseries answers for the same range.
            root = page.locator("#dashboard")
            start, end = root.get_attribute("data-start"), root.get_attribute("data-end")
            window = root.get_attribute("data-window")
            assert start and end and window == "1m"
            rng = {"start": start, "end": end, "window": window}

            def timeseries(key: str | None = None, **params: str) -> dict[tuple[str, str], Any]:
                return series_points(get(collector, "/analytics/timeseries", **rng, **params), key)

            def chart(selector: str) -> dict[tuple[str, str], float]:
                values: list[list[str]] = page.eval_on_selector_all(
                    selector,
                    "els => els.map(e => [e.dataset.series, e.dataset.start, e.dataset.value])",
                )
                return {(s, t): float(v) for s, t, v in values}

            traffic = chart("#chart-traffic .mark")
            assert traffic == {
                **timeseries("requests", metric="requests", aggregation="count", fill="zero"),
                **timeseries("failures", metric="errors", aggregation="count", fill="zero"),
            }
            assert len(traffic) == 2 * 61  # every minute of the hour, empty ones at 0
            cost = chart("#chart-cost .mark")
            assert cost == timeseries(
                metric="cost_micros", aggregation="sum", group_by="model", fill="zero"
            )
            assert {series for series, _ in cost} == {"gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini"}
            for prefix, metric in (("duration_ms", "duration_ms"), ("ttft_ms", "ttft_ms")):
                drawn = chart(f"#chart-{'latency' if metric == 'duration_ms' else 'ttft'} .mark")
                expected: dict[tuple[str, str], Any] = {}
                for q in ("p50", "p95", "p99"):
                    expected |= timeseries(f"{prefix}_{q}", metric=metric, aggregation=q)
                assert drawn == expected  # no fill: minutes without requests are gaps
                assert 0 < len(drawn) < 3 * 61
            # ... and the totals of /analytics/aggregate.
            totals = get(collector, "/analytics/aggregate", start=start, end=end)
            assert sum(v for (s, _), v in traffic.items() if s == "requests") == 90
            assert (
                sum(v for (s, _), v in traffic.items() if s == "failures")
                == (totals["failed_requests"])
            )
            # Each bucket's cost is rounded to whole micro-dollars on its own.
            nonzero = sum(1 for v in cost.values() if v)
            assert abs(sum(cost.values()) - totals["total_cost_micros"]) <= nonzero / 2

            # The anomalies: listed newest first, and marked on their charts.
            listed = get(collector, "/analytics/anomalies", start=start, end=end)["anomalies"]
            assert [a["kind"] for a in listed] == ["spike", "drop"]
            rows = page.eval_on_selector_all(
                "#card-anomalies tbody tr",
                "els => els.map(e => [e.dataset.anomaly, e.dataset.metric, e.dataset.group, "
                "e.innerText])",
            )
            assert [r[:3] for r in rows] == [
                [a["event_id"], a["metric"], a["value"]] for a in listed
            ]
            assert "gpt-4o" in rows[0][3] and "42/min" in rows[0][3] and "7.5/min" in rows[0][3]
            assert "55 ms" in rows[1][3] and "640 ms" in rows[1][3] and "5 min" in rows[1][3]
            spike = page.locator(
                f'#chart-traffic g.anomaly.spike[data-anomaly="{listed[0]["event_id"]}"]'
            )
            assert spike.get_attribute("data-start") == str(listed[0]["timestamp"])
            assert "spike of request rate for model=gpt-4o" in (
                spike.locator("title").text_content() or ""
            )
            drop = page.locator(
                f'#chart-latency g.anomaly.drop[data-anomaly="{listed[1]["event_id"]}"]'
            )
            assert "drop of p95 latency for provider=anthropic" in (
                drop.locator("title").text_content() or ""
            )
            assert page.locator("g.anomaly").count() == 2

            tile = page.locator("#t-requests")
            assert tile.get_attribute("data-value") == str(totals["total_requests"]) == "90"
            assert page.locator("#t-cost").get_attribute("data-value") == str(
                totals["total_cost_micros"]
            )
            assert page.locator("#card-errors tbody tr").count() == 2  # 429s and rate limits
            burn = page.locator("#chart-burn .mark")
            assert burn.count() == 5

            # Live: a new event shows up without a reload, then the charts refresh.
            page.wait_for_selector("#live-status.live", timeout=WAIT_MS)
            fresh = wire_event(1, timestamp_ms=int(time.time() * 1000), model="live-model-7")
            post(collector, [fresh])
            row = page.locator(f'tr[data-event-id="{fresh["event_id"]}"]')
            row.wait_for(timeout=WAIT_MS)
            assert "live-model-7" in row.inner_text()
            assert tile.get_attribute("data-value") == str(totals["total_requests"] + 1)
            page.wait_for_selector("#dashboard[data-refreshes]", state="attached", timeout=WAIT_MS)
            refreshed = chart("#chart-cost .mark")
            assert any(series == "live-model-7" for series, _ in refreshed)

            page.screenshot(path=str(tmp_path / "dashboard-1h.png"), full_page=True)

            # The range picker.
            page.click("nav.ranges a:text('24h')")
            page.wait_for_selector('#dashboard[data-range="24h"]', timeout=WAIT_MS)
            assert root.get_attribute("data-window") == "15m"
            day = chart("#chart-traffic .mark[data-series=requests]")
            assert sum(int(v) for v in day.values()) == 91

            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000

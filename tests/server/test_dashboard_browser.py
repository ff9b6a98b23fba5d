"""The dashboard in a real headless Chromium against a real ``llmtally serve``.

Signs in through the form, checks that the charts show what ``/analytics/aggregate``
answers, that a newly posted event appears live (EventSource) and the charts refresh
without a reload, that the page logs no console error (a CSP violation would be one),
and writes a screenshot. Debian's chromium is used as is (``/usr/bin/chromium``; no
``playwright install``). Without it the test is skipped — or fails, when
``LLMTALLY_REQUIRE_BROWSER=1`` (CI), so a missing browser is never silently untested.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

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


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    server = start_collector(tmp_path / "collector")
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


def aggregate(collector: Collector, **params: str) -> dict[str, Any]:
    r = httpx2.get(
        collector.url + "/analytics/aggregate",
        params=params,
        headers={"Authorization": f"Bearer {READ_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


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

            # The charts show what /analytics/aggregate answers for the same range.
            root = page.locator("#dashboard")
            start, end = root.get_attribute("data-start"), root.get_attribute("data-end")
            window = root.get_attribute("data-window")
            assert start and end and window == "1m"
            totals = aggregate(collector, start=start, end=end, window=window)
            by_model = aggregate(collector, start=start, end=end, window=window, group_by="model")

            def chart(selector: str) -> dict[tuple[str, str], str]:
                values: list[list[str]] = page.eval_on_selector_all(
                    selector,
                    "els => els.map(e => [e.dataset.series, e.dataset.start, e.dataset.value])",
                )
                return {(s, t): v for s, t, v in values}

            traffic = chart("#chart-traffic .mark")
            assert {k: int(v) for k, v in traffic.items()} == {
                **{
                    ("requests", str(b["period_start"])): b["total_requests"]
                    for b in totals["buckets"]
                },
                **{
                    ("failures", str(b["period_start"])): b["failed_requests"]
                    for b in totals["buckets"]
                },
            }
            assert sum(int(v) for (s, _), v in traffic.items() if s == "requests") == 90
            cost = chart("#chart-cost .mark")
            assert {k: int(v) for k, v in cost.items()} == {
                (b["group"], str(b["period_start"])): b["total_cost_micros"]
                for b in by_model["buckets"]
            }
            latency = chart("#chart-latency .mark")
            for b in totals["buckets"]:
                for q in ("p50", "p95", "p99"):
                    key = (f"duration_ms_{q}", str(b["period_start"]))
                    assert float(latency[key]) == b["duration_ms"][q]
            tile = page.locator("#t-requests")
            assert tile.get_attribute("data-value") == str(totals["total_requests"])
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

"""``llmtally serve --budgets FILE`` as a process: events ingested over HTTP show as exact
spend and thresholds at ``/analytics/budgets``, on the dashboard and in ``/metrics``; a
bad budgets file is one line and exit 2."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from .collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    READ_TOKEN,
    TOKEN_ENV,
    Collector,
    base_env,
    body,
    free_port,
    serve_command,
    start_collector,
    wire_event,
)

BUDGETS_TOML = """
[[budgets]]
id = "agent-1-total"
limit_usd = "0.01"
scope = "agent_id"
scope_value = "agent-1"
period = "total"

[[budgets]]
id = "mini-total"
limit_micros = 5000
scope = "model"
scope_value = "gpt-4o-mini"
period = "total"
thresholds = [100, 200, 400]

[[budgets]]
id = "everything-daily"
limit_usd = "1"
period = "daily"
"""
AGENT_1_COST = 1_700_080  # nanos; five of them: 8_500_400 = 8_500 micros, 85% of the limit


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    workdir: Path = tmp_path_factory.mktemp("budgets")
    (workdir / "budgets.toml").write_text(BUDGETS_TOML)
    server = start_collector(workdir, "--budgets", str(workdir / "budgets.toml"))
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.log_text()


def _events(now_ms: int) -> list[dict[str, Any]]:
    events = [
        wire_event(i, agent_id="agent-1", cost_nanos=AGENT_1_COST, timestamp_ms=now_ms - 10 + i)
        for i in range(5)
    ]
    events += [
        wire_event(i, agent_id="agent-2", cost_nanos=3_333_333, timestamp_ms=now_ms - 20 + i)
        for i in range(5, 8)
    ]
    return events


def _spend(events: list[dict[str, Any]], **match: str) -> int:
    return sum(e["cost_nanos"] for e in events if all(e[k] == v for k, v in match.items()))


def test_budgets_show_the_exact_spend_everywhere(collector: Collector) -> None:
    now_ms = time.time_ns() // 1_000_000
    events = _events(now_ms)
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    with httpx2.Client(base_url=collector.url, timeout=10.0) as http:
        r = http.post(
            EVENTS_PATH,
            content=body(events),
            headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
        )
        assert r.json()["accepted"] == len(events)
        # Ingest answers once the events and their rollups are committed, and nothing in
        # this module asked for budgets before (answers are cached for a few seconds):
        # the first answer is computed now and must count every event just stored.
        budgets = {
            b["budget_id"]: b
            for b in http.get("/analytics/budgets", headers=read).json()["budgets"]
        }
        dashboard = http.get("/", headers=read)
        metrics = http.get("/metrics", headers=read).text

    agent = budgets["agent-1-total"]
    assert (agent["spent_nanos"], agent["spent_micros"]) == (8_500_400, 8_500)
    assert (agent["limit_micros"], agent["remaining_micros"]) == (10_000, 1_500)
    assert agent["thresholds_reached"] == [50, 80] and agent["exceeded"] is False
    assert agent["percent_used"] == pytest.approx(85.004)
    mini = budgets["mini-total"]
    mini_nanos = _spend(events, model="gpt-4o-mini")
    assert mini["spent_nanos"] == mini_nanos
    assert mini["spent_micros"] == (mini_nanos + 500) // 1000
    assert mini["thresholds_reached"] == [t for t in (100, 200, 400) if mini_nanos >= t * 50_000]
    assert mini["exceeded"] is (mini_nanos >= 5_000_000)
    daily = budgets["everything-daily"]
    if daily["period_start_ms"] <= now_ms - 20:  # else UTC midnight fell in between
        assert daily["spent_nanos"] == _spend(events)
        assert daily["forecast_micros"] is None or daily["forecast_micros"] >= 0

    assert dashboard.status_code == 200
    row = re.search(r'<tr data-budget="agent-1-total"[^>]*>', dashboard.text)
    assert row is not None, dashboard.text
    assert 'data-spent-micros="8500"' in row[0] and 'data-thresholds="50,80"' in row[0]
    assert "$0.008500 / $0.0100" in dashboard.text

    labels = 'budget_id="agent-1-total",kind="soft",period="total",scope="agent_id",scope_value="agent-1"'
    assert f"llmtally_budget_spent_usd{{{labels}}} 0.0085004" in metrics
    assert f"llmtally_budget_limit_usd{{{labels}}} 0.01" in metrics


def test_budgets_need_a_read_token(collector: Collector) -> None:
    r = httpx2.get(f"{collector.url}/analytics/budgets")
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("b.toml", '[[budgets]]\nid = "x"\nlimit_usd = 1.5\n', "limit_usd", id="float"),
        pytest.param("b.json", '{"budgets": [{"id": "x"}]}', "exactly one of", id="no-limit"),
        pytest.param("b.txt", "", "must end in .toml or .json", id="extension"),
    ],
)
def test_a_bad_budgets_file_is_one_line_and_exit_2(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    result = subprocess.run(
        serve_command(tmp_path / "c.db", free_port(), "--budgets", str(tmp_path / name)),
        env=base_env(TOKEN_ENV),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llmtally: error: serve: budgets file ")
    assert message in lines[0] and str(tmp_path / name) in lines[0]
    assert not (tmp_path / "c.db").exists()

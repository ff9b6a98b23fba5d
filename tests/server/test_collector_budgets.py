"""``CollectorBudgets``: budgets computed from a real SQLite storage, with an injected
clock, give exactly what the embedded ``BudgetBook`` gives for the same events; the
cache; the budgets file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmtally import ConfigurationError, ValidationError
from llmtally.analysis.budgets import Budget, BudgetBook, period_bounds
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from llmtally.server.budget_file import MAX_BUDGETS, dump_budgets, load_budgets, parse_budgets
from llmtally.server.budgets import CollectorBudgets
from llmtally.storage.sqlite import SqliteStorage

from ..storage.factory import T0, random_requests, request

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NOW_MS = T0 + 3 * HOUR_MS + 1_234  # 2023-11-15 01:00 UTC; 2023-11-14 20:00 in New York
BUDGETS = [
    Budget(id="all-daily", limit_micros=1_000_000, period="daily"),
    Budget(
        id="a-daily-ny",
        scope="agent_id",
        scope_value="agent-a",
        limit_micros=400_000,
        period="daily",
        timezone="America/New_York",
        thresholds=(25, 50, 75, 100, 150),
    ),
    Budget(
        id="gpt4o-weekly",
        scope="model",
        scope_value="gpt-4o",
        limit_micros=2_000_000,
        period="weekly",
    ),
    Budget(
        id="key1-monthly",
        scope="provider_id",
        scope_value="key-1",
        limit_micros=5_000_000,
        kind="hard",
        timezone="Asia/Kolkata",  # half-hour offset: the period starts mid-hour
    ),
    Budget(
        id="b-total",
        scope="agent_id",
        scope_value="agent-b",
        limit_micros=3_000_000,
        period="total",
    ),
    Budget(id="nobody", scope="agent_id", scope_value="agent-z", limit_micros=1, period="daily"),
]
EVENTS = sorted(
    random_requests(300, seed=3, start_ms=NOW_MS - 40 * DAY_MS, span_ms=40 * DAY_MS)
    + random_requests(200, seed=4, start_ms=NOW_MS - 3 * HOUR_MS, span_ms=3 * HOUR_MS),
    key=lambda e: e.timestamp_ms,
)


def _embedded(events: list[AnalyticsEvent], now_ms: int) -> BudgetBook:
    """What a router's store would hold having spent ``events`` as they happened."""
    book = BudgetBook(BUDGETS, now_ms=events[0].timestamp_ms)
    for e in events:
        p = e.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        book.spend_nanos(
            e.timestamp_ms,
            p.cost_nanos,
            agent_id=e.agent_id,
            provider_id=p.provider_id,
            model=p.model,
        )
    return book


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    s = SqliteStorage(tmp_path / "collector.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_status_is_the_embedded_books_for_the_same_events(storage: SqliteStorage) -> None:
    await storage.ingest(EVENTS)
    budgets = CollectorBudgets(storage, BUDGETS, clock=lambda: NOW_MS)
    got = await budgets.status()
    assert got == _embedded(EVENTS, NOW_MS).status(NOW_MS)
    by_id = {s.budget_id: s for s in got}
    start, end = period_bounds("daily", NOW_MS, "America/New_York")
    a = by_id["a-daily-ny"]
    assert (a.period_start_ms, a.period_end_ms) == (start, end)
    expected = sum(
        e.payload.cost_nanos  # type: ignore[union-attr]
        for e in EVENTS
        if e.agent_id == "agent-a" and start <= e.timestamp_ms
    )
    assert a.spent_nanos == expected > 0
    assert a.spent_micros == (expected + 500) // 1000
    assert a.thresholds_reached == tuple(
        t for t in (25, 50, 75, 100, 150) if expected * 100 >= t * 400_000_000
    )
    assert by_id["nobody"].spent_micros == 0 and by_id["nobody"].thresholds_reached == ()
    assert by_id["all-daily"].forecast_micros is not None  # 1 h of the day has passed
    assert by_id["b-total"].forecast_micros is None
    assert all(s.reserved_micros == 0 for s in got)


async def test_answers_are_cached_for_max_age(storage: SqliteStorage) -> None:
    now = [NOW_MS]
    await storage.ingest(EVENTS)
    budgets = CollectorBudgets(storage, BUDGETS[:1], clock=lambda: now[0], max_age_ms=5_000)
    assert budgets.cached() == []
    [before] = await budgets.status()
    await storage.ingest([request(NOW_MS - 1, cost_nanos=123_456_789)])
    now[0] += 4_999
    assert await budgets.status() == [before]  # cached
    assert budgets.cached() == [before]
    now[0] += 1
    [after] = await budgets.status()
    assert after.spent_nanos == before.spent_nanos + 123_456_789
    now[0] += DAY_MS  # the next day: a new period, nothing spent in it yet
    [tomorrow] = await budgets.status()
    assert tomorrow.spent_nanos == 0 and tomorrow.period_start_ms == before.period_end_ms


async def test_no_budgets_and_bad_budgets(storage: SqliteStorage) -> None:
    assert await CollectorBudgets(storage).status() == []
    with pytest.raises(ValidationError):
        CollectorBudgets(storage, [BUDGETS[0], BUDGETS[0]])
    with pytest.raises(ValueError, match="max_age_ms"):
        CollectorBudgets(storage, BUDGETS, max_age_ms=-1)


# --- the budgets file --------------------------------------------------------------------

TOML = b"""
[[budgets]]
id = "support-daily"
limit_usd = "25.50"
scope = "agent_id"
scope_value = "support-bot"
period = "daily"
timezone = "Europe/Paris"
thresholds = [50, 90]
kind = "hard"

[[budgets]]
id = "everything"
limit_micros = 100000000
"""


def test_a_toml_file_and_its_json_twin_give_the_same_budgets(tmp_path: Path) -> None:
    want = [
        Budget(
            id="support-daily",
            limit_micros=25_500_000,
            scope="agent_id",
            scope_value="support-bot",
            period="daily",
            timezone="Europe/Paris",
            thresholds=(50, 90),
            kind="hard",
        ),
        Budget(id="everything", limit_micros=100_000_000),  # Budget's defaults
    ]
    (tmp_path / "b.toml").write_bytes(TOML)
    assert load_budgets(tmp_path / "b.toml") == want
    json = (
        b'{"budgets": [{"id": "support-daily", "limit_usd": "25.50", "scope": "agent_id",'
        b' "scope_value": "support-bot", "period": "daily", "timezone": "Europe/Paris",'
        b' "thresholds": [50, 90], "kind": "hard"}, {"id": "everything", "limit_usd": 100}]}'
    )
    (tmp_path / "b.JSON").write_bytes(json)
    assert load_budgets(tmp_path / "b.JSON") == want


def test_dumped_budgets_load_back() -> None:
    assert parse_budgets(dump_budgets(BUDGETS), "json") == BUDGETS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('[[budgets]]\nid = "x"\nlimit_usd = 2.5', "got `float`", id="float-money"),
        pytest.param('[[budgets]]\nid = "x"', "exactly one of limit_usd", id="no-limit"),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\nlimit_micros = 1',
            "exactly one of limit_usd",
            id="two-limits",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\nperiod = "hourly"',
            "budgets[0].period",
            id="bad-period",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\nlimt_micros = 1',
            "unknown field `limt_micros`",
            id="typo",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\nscope = "agent_id"',
            "budgets[0] ('x'): budget 'x': scope_value is required",
            id="no-scope-value",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\ntimezone = "Mars/Olympus"',
            "unknown time zone",
            id="bad-zone",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "0.0000001"',
            "whole number of micro-dollars",
            id="sub-micro",
        ),
        pytest.param(
            '[[budgets]]\nid = "x"\nlimit_usd = "1"\n[[budgets]]\nid = "x"\nlimit_usd = "2"',
            "budgets[1] ('x'): duplicate id",
            id="duplicate",
        ),
        pytest.param('budgets = "x"', "Expected `array`", id="not-a-list"),
        pytest.param("[[budgets]\n", "at line 1", id="not-toml"),
    ],
)
def test_bad_files_are_one_line_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        parse_budgets(text.encode(), "toml")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_too_many_budgets_and_bad_paths(tmp_path: Path) -> None:
    many = "".join(f'[[budgets]]\nid = "b{i}"\nlimit_micros = 1\n' for i in range(MAX_BUDGETS + 1))
    with pytest.raises(ConfigurationError, match="at most"):
        parse_budgets(many.encode(), "toml")
    with pytest.raises(ConfigurationError, match=r"budgets file .*\.yaml: must end in"):
        load_budgets(tmp_path / "b.yaml")
    with pytest.raises(ConfigurationError, match="No such file"):
        load_budgets(tmp_path / "missing.toml")

"""Budgets: calendar periods, thresholds once per period, hard-limit reservations, status."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally import BudgetExceeded, ValidationError
from llmtally.analysis.budgets import (
    Budget,
    BudgetBook,
    BudgetPeriod,
    ThresholdCrossing,
    period_bounds,
    usd_to_micros,
)
from llmtally.events import BudgetThresholdReached

USD = 1_000_000  # micro-dollars
HOUR = 3_600_000
DAY = 24 * HOUR


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, tz: str = "UTC") -> int:
    """Unix milliseconds of a local wall-clock time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()) * 1000


NOON = ms(2024, 5, 15, 12)  # a Wednesday


# --- money --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        pytest.param("12.50", 12_500_000, id="str"),
        pytest.param(Decimal("0.000001"), 1, id="one-micro"),
        pytest.param(3, 3_000_000, id="int"),
        pytest.param("1e2", 100_000_000, id="exponent"),
        pytest.param(Decimal("7.0000000"), 7_000_000, id="trailing-zeros"),
    ],
)
def test_usd_to_micros(amount: Decimal | str | int, micros: int) -> None:
    assert usd_to_micros(amount) == micros


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(0.1, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("ten", id="not-a-number"),
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("0.0000001", id="sub-micro"),
        pytest.param(None, id="none"),
    ],
)
def test_usd_to_micros_refuses(amount: object) -> None:
    with pytest.raises(ValidationError):
        usd_to_micros(amount)  # type: ignore[arg-type]


# --- the Budget struct --------------------------------------------------------------------


def test_budget_from_usd_and_defaults() -> None:
    b = Budget.from_usd("team", "25.00", scope="agent_id", scope_value="agent-7", kind="hard")
    assert b.limit_micros == 25 * USD
    assert (b.period, b.thresholds, b.timezone) == ("monthly", (50, 80, 100), "UTC")
    with pytest.raises(ValidationError, match="float"):
        Budget.from_usd("x", 25.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        pytest.param({"id": ""}, "non-empty id", id="empty-id"),
        pytest.param({"limit_micros": 0}, "positive", id="zero-limit"),
        pytest.param({"limit_micros": True}, "positive", id="bool-limit"),
        pytest.param({"scope": "agent_id"}, "scope_value is required", id="missing-value"),
        pytest.param({"scope_value": "x"}, "no scope_value", id="global-with-value"),
        pytest.param({"scope": "team"}, "unknown scope", id="bad-scope"),
        pytest.param({"period": "hourly"}, "unknown period", id="bad-period"),
        pytest.param({"kind": "firm"}, "unknown kind", id="bad-kind"),
        pytest.param({"thresholds": (80, 50)}, "strictly increasing", id="unsorted"),
        pytest.param({"thresholds": (50, 50)}, "strictly increasing", id="duplicate"),
        pytest.param({"thresholds": (0, 50)}, "strictly increasing", id="zero-threshold"),
        pytest.param({"timezone": "Mars/Olympus"}, "time zone", id="bad-timezone"),
    ],
)
def test_budget_validation(fields: dict[str, object], match: str) -> None:
    kw: dict[str, object] = {"id": "b", "limit_micros": USD, **fields}
    with pytest.raises(ValidationError, match=match):
        Budget(**kw)  # type: ignore[arg-type]


def test_budget_decodes_from_json_with_validation() -> None:
    b = msgspec.json.decode(
        b'{"id":"d","limit_micros":5000000,"period":"daily","thresholds":[90]}', type=Budget
    )
    assert b.thresholds == (90,)
    with pytest.raises(msgspec.ValidationError, match="scope_value"):
        msgspec.json.decode(b'{"id":"d","limit_micros":1,"scope":"model"}', type=Budget)


# --- calendar periods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "tz", "start", "end"),
    [
        pytest.param("daily", NOON, "UTC", ms(2024, 5, 15), ms(2024, 5, 16), id="daily-utc"),
        pytest.param(
            "daily", ms(2024, 5, 15), "UTC", ms(2024, 5, 15), ms(2024, 5, 16), id="at-midnight"
        ),
        pytest.param(
            "daily",
            ms(2024, 5, 15, 23, 59) + 59_999,
            "UTC",
            ms(2024, 5, 15),
            ms(2024, 5, 16),
            id="last-ms-of-day",
        ),
        pytest.param(  # 12:00 UTC is 21:00 in Tokyo, still May 15 there
            "daily",
            NOON,
            "Asia/Tokyo",
            ms(2024, 5, 15, tz="Asia/Tokyo"),
            ms(2024, 5, 16, tz="Asia/Tokyo"),
            id="daily-tokyo",
        ),
        pytest.param(  # 12:00 UTC is 00:00 on May 16 in Auckland (UTC+12 in May)
            "daily",
            NOON,
            "Pacific/Auckland",
            ms(2024, 5, 16, tz="Pacific/Auckland"),
            ms(2024, 5, 17, tz="Pacific/Auckland"),
            id="daily-auckland-next-date",
        ),
        pytest.param(  # spring forward: a 23-hour day
            "daily",
            ms(2024, 3, 31, 12, tz="Europe/Paris"),
            "Europe/Paris",
            ms(2024, 3, 31, tz="Europe/Paris"),
            ms(2024, 3, 31, tz="Europe/Paris") + 23 * HOUR,
            id="paris-23h-day",
        ),
        pytest.param(  # fall back: a 25-hour day
            "daily",
            ms(2024, 10, 27, 12, tz="Europe/Paris"),
            "Europe/Paris",
            ms(2024, 10, 27, tz="Europe/Paris"),
            ms(2024, 10, 27, tz="Europe/Paris") + 25 * HOUR,
            id="paris-25h-day",
        ),
        pytest.param(
            "weekly", NOON, "UTC", ms(2024, 5, 13), ms(2024, 5, 20), id="weekly-from-monday"
        ),
        pytest.param(
            "weekly", ms(2024, 5, 19, 23), "UTC", ms(2024, 5, 13), ms(2024, 5, 20), id="sunday"
        ),
        pytest.param("monthly", NOON, "UTC", ms(2024, 5, 1), ms(2024, 6, 1), id="monthly"),
        pytest.param(
            "monthly", ms(2024, 12, 31, 23), "UTC", ms(2024, 12, 1), ms(2025, 1, 1), id="december"
        ),
        pytest.param(
            "monthly", ms(2024, 2, 29, 1), "UTC", ms(2024, 2, 1), ms(2024, 3, 1), id="leap-february"
        ),
    ],
)
def test_period_bounds(period: BudgetPeriod, now: int, tz: str, start: int, end: int) -> None:
    assert period_bounds(period, now, tz) == (start, end)
    assert period_bounds(period, now, ZoneInfo(tz)) == (start, end)


def test_total_period_never_ends() -> None:
    assert period_bounds("total", NOON) == (0, None)


def test_bad_period_and_zone() -> None:
    with pytest.raises(ValidationError, match="period"):
        period_bounds("hourly", NOON)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="time zone"):
        period_bounds("daily", NOON, "Nowhere/Special")


_ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",  # DST changes at midnight
    "America/Havana",  # DST changes at midnight
    "Asia/Kolkata",  # +05:30
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Apia",  # skipped a whole day in 2011
]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["daily", "weekly", "monthly"]),
    st.integers(min_value=ms(2005, 1, 1), max_value=ms(2035, 1, 1)),
    st.sampled_from(_ZONES),
)
def test_periods_tile_time(period: BudgetPeriod, now: int, tz: str) -> None:
    start, end = period_bounds(period, now, tz)
    assert end is not None
    assert start <= now < end
    assert period_bounds(period, start, tz) == (start, end)
    assert period_bounds(period, end - 1, tz) == (start, end)
    assert period_bounds(period, end, tz)[0] == end  # the next period starts where this ends
    local = datetime.fromtimestamp(start / 1000, ZoneInfo(tz))
    if period == "weekly":
        assert local.weekday() == 0 or local.hour != 0  # Monday (unless midnight is skipped)
    if period == "monthly":
        assert local.day == 1 or local.hour != 0


# --- spend and thresholds -----------------------------------------------------------------


def test_each_threshold_is_reported_once() -> None:
    book = BudgetBook([Budget(id="g", limit_micros=10 * USD)], now_ms=NOON)
    assert book.spend(NOON, 4 * USD) == []  # 40%
    [c50] = book.spend(NOON, 1 * USD)  # 5/10 = 50% exactly: reached
    assert (c50.budget_id, c50.threshold_percent, c50.spent_micros) == ("g", 50, 5 * USD)
    assert book.spend(NOON, 1 * USD) == []  # 60%: 50 already reported
    crossings = book.spend(NOON, 5 * USD)  # 110%: jumps past 80 and 100 at once
    assert [c.threshold_percent for c in crossings] == [80, 100]
    assert all(c.spent_micros == 11 * USD for c in crossings)
    assert book.spend(NOON, 5 * USD) == []
    [s] = book.status(NOON)
    assert s.thresholds_reached == (50, 80, 100)
    assert s.exceeded


def test_thresholds_compare_exact_nanos() -> None:
    # limit 3 micro-dollars: 50% is 1.5 micro-dollars = 1500 nanos.
    book = BudgetBook([Budget(id="g", limit_micros=3, thresholds=(50,))], now_ms=NOON)
    assert book.spend_nanos(NOON, 1499) == []
    [c] = book.spend_nanos(NOON, 1)
    assert c.threshold_percent == 50
    assert c.spent_micros == 2  # 1500 nanos, rounded half up
    [s] = book.status(NOON)
    assert (s.spent_nanos, s.spent_micros, s.percent_used) == (1500, 2, 50.0)


def test_spend_goes_to_every_matching_budget() -> None:
    book = BudgetBook(
        [
            Budget(id="all", limit_micros=100 * USD),
            Budget(id="a7", limit_micros=10 * USD, scope="agent_id", scope_value="agent-7"),
            Budget(id="k1", limit_micros=10 * USD, scope="provider_id", scope_value="key-1"),
            Budget(id="mini", limit_micros=10 * USD, scope="model", scope_value="gpt-4o-mini"),
        ],
        now_ms=NOON,
    )
    book.spend(NOON, 1 * USD, agent_id="agent-7", provider_id="key-2", model="gpt-4o-mini")
    book.spend(NOON, 2 * USD, agent_id="agent-8", provider_id="key-1", model="gpt-4o")
    book.spend(NOON, 4 * USD)  # no dimensions: global only
    spent = {s.budget_id: s.spent_micros for s in book.status(NOON)}
    assert spent == {"all": 7 * USD, "a7": 1 * USD, "k1": 2 * USD, "mini": 1 * USD}


def test_period_rollover_resets_spend_and_thresholds() -> None:
    book = BudgetBook(
        [Budget(id="d", limit_micros=10 * USD, period="daily", thresholds=(50,))], now_ms=NOON
    )
    assert [c.threshold_percent for c in book.spend(NOON, 6 * USD)] == [50]
    tomorrow = NOON + DAY
    [c] = book.spend(tomorrow, 6 * USD)  # a new day: 6 of 10 again, 50% reported again
    assert c.spent_micros == 6 * USD
    assert c.period_start_ms == ms(2024, 5, 16)
    [s] = book.status(tomorrow + 1)
    assert s.spent_micros == 6 * USD
    assert (s.period_start_ms, s.period_end_ms) == (ms(2024, 5, 16), ms(2024, 5, 17))
    # status alone rolls the period over too
    [s] = book.status(tomorrow + DAY)
    assert (s.spent_micros, s.thresholds_reached) == (0, ())


def test_late_spend_counts_in_the_current_period() -> None:
    book = BudgetBook([Budget(id="d", limit_micros=10 * USD, period="daily")], now_ms=NOON)
    book.spend(NOON + DAY, 1 * USD)
    book.spend(NOON, 2 * USD)  # timestamped yesterday, arriving late: never lost
    [s] = book.status(NOON + DAY)
    assert s.spent_micros == 3 * USD


def test_negative_amounts_are_refused() -> None:
    book = BudgetBook([Budget(id="g", limit_micros=USD, kind="hard")])
    with pytest.raises(ValidationError):
        book.spend(NOON, -1)
    with pytest.raises(ValidationError):
        book.reserve(NOON, -1)
    with pytest.raises(ValidationError):
        book.restore(NOON, {"g": -1})


def test_crossing_becomes_an_event_payload() -> None:
    book = BudgetBook([Budget(id="g", limit_micros=10 * USD, thresholds=(80,))])
    [c] = book.spend(NOON, 8 * USD)
    assert isinstance(c, ThresholdCrossing)
    assert c.to_payload() == BudgetThresholdReached(
        threshold_percent=80, current_spend_micros=8 * USD, budget_micros=10 * USD, budget_id="g"
    )


# --- hard limits ----------------------------------------------------------------------------


def _hard(limit: int, **kw: object) -> BudgetBook:
    return BudgetBook(
        [Budget(id="h", limit_micros=limit, kind="hard", **kw)],  # type: ignore[arg-type]
        now_ms=NOON,
    )


def test_exactly_ten_reservations_fit_a_limit_of_ten_estimates() -> None:
    e = 250_000
    book = _hard(10 * e)
    ok, refused = [], 0
    for _ in range(100):
        try:
            ok.append(book.reserve(NOON, e, agent_id="a"))
        except BudgetExceeded:
            refused += 1
    assert (len(ok), refused) == (10, 90)
    assert book.outstanding_reservations == 10
    [s] = book.status(NOON)
    assert (s.spent_micros, s.reserved_micros, s.remaining_micros) == (0, 10 * e, 0)


def test_refusal_message_names_the_budget_and_its_numbers() -> None:
    book = _hard(1000, scope="agent_id", scope_value="agent-7")
    book.spend(NOON, 600, agent_id="agent-7")
    book.reserve(NOON, 300, agent_id="agent-7")
    with pytest.raises(BudgetExceeded) as info:
        book.reserve(NOON, 200, agent_id="agent-7")
    msg = str(info.value)
    for part in ("'h'", "agent_id=agent-7", "limit 1000", "spent 600", "reserved 300", "200"):
        assert part in msg
    book.reserve(NOON, 200, agent_id="agent-8")  # not this budget's agent: no limit


def test_settle_lower_frees_room_and_records_spend() -> None:
    e = 1000
    book = _hard(10 * e)
    held = [book.reserve(NOON, e) for _ in range(10)]
    with pytest.raises(BudgetExceeded):
        book.reserve(NOON, 1)
    book.settle(held[0], e // 2, NOON)  # actual 500 instead of 1000: 500 free
    [s] = book.status(NOON)
    assert (s.spent_micros, s.reserved_micros, s.remaining_micros) == (500, 9 * e, 500)
    with pytest.raises(BudgetExceeded):
        book.reserve(NOON, e)
    book.reserve(NOON, e // 2)  # exactly fills the limit
    with pytest.raises(BudgetExceeded):
        book.reserve(NOON, 0)  # used up: even a zero estimate is refused


def test_settle_higher_and_thresholds() -> None:
    book = _hard(1000, thresholds=(100,))
    r = book.reserve(NOON, 100)
    [c] = book.settle(r, 1200, NOON)  # the call cost more than estimated: recorded anyway
    assert c.threshold_percent == 100
    with pytest.raises(BudgetExceeded):
        book.check(NOON)


def test_release_frees_room_once() -> None:
    book = _hard(1000)
    r = book.reserve(NOON, 1000)
    with pytest.raises(BudgetExceeded):
        book.check(NOON)  # spent 0 + reserved 1000 ≥ 1000
    assert book.release(r) is True
    assert book.release(r) is False
    book.check(NOON)
    assert book.status(NOON)[0].spent_micros == 0


def test_check_ignores_soft_budgets_and_other_scopes() -> None:
    book = BudgetBook(
        [
            Budget(id="soft", limit_micros=10),
            Budget(id="m", limit_micros=10, kind="hard", scope="model", scope_value="big"),
        ]
    )
    book.spend(NOON, 50, model="small")  # soft global at 500%
    book.check(NOON, model="small")
    book.reserve(NOON, 5, model="small")
    book.spend(NOON, 10, model="big")
    with pytest.raises(BudgetExceeded, match="'m'"):
        book.check(NOON, model="big")
    r = book.reserve(NOON, 1_000_000)  # no dimensions: no hard budget matches
    assert r.budget_ids == ()


def test_reservations_expire_and_are_bounded() -> None:
    book = BudgetBook(
        [Budget(id="h", limit_micros=100, kind="hard")],
        now_ms=NOON,
        reservation_ttl_ms=1000,
        max_reservations=3,
    )
    r1 = book.reserve(NOON, 10)
    for _ in range(3):
        book.reserve(NOON + 500, 10)  # the 4th hold evicts the oldest (r1)
    assert (book.evicted_reservations, book.outstanding_reservations) == (1, 3)
    assert book.release(r1) is False
    assert book.status(NOON + 1499)[0].reserved_micros == 30
    assert book.status(NOON + 1500)[0].reserved_micros == 0  # expired at created + ttl
    assert book.expired_reservations == 3
    assert r1.expires_ms == NOON + 1000


def test_a_hold_outlives_a_period_change() -> None:
    book = _hard(1000, period="daily")
    book.spend(NOON, 900)
    r = book.reserve(ms(2024, 5, 15, 23, 59), 100)
    [s] = book.status(ms(2024, 5, 16, 0, 1))  # a new day: spend resets, the hold stays
    assert (s.spent_micros, s.reserved_micros) == (0, 100)
    book.settle(r, 80, ms(2024, 5, 16, 0, 2))
    [s] = book.status(ms(2024, 5, 16, 0, 2))
    assert (s.spent_micros, s.reserved_micros) == (80, 0)


# --- status and forecast --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "forecast"),
    [
        # Daily, 06:00: a quarter of the day elapsed, 1 USD spent → 1 × 24/6 = 4 USD.
        pytest.param("daily", ms(2024, 5, 15, 6), 4 * USD, id="daily-quarter"),
        # Daily, 00:59: 59 min < 1/24 of the day (60 min) → too early.
        pytest.param("daily", ms(2024, 5, 15, 0, 59), None, id="daily-too-early"),
        # Daily, 01:00: exactly 1/24 elapsed → 1 × 24 = 24 USD.
        pytest.param("daily", ms(2024, 5, 15, 1), 24 * USD, id="daily-first-hour"),
        # May has 31 days; on the 11th at 00:00, 10 days elapsed → 1 × 31/10 = 3.1 USD.
        pytest.param("monthly", ms(2024, 5, 11), 3_100_000, id="monthly"),
        # Weekly from Monday 13th; Wednesday 15th 12:00 = 2.5 days → 1 × 7/2.5 = 2.8 USD.
        pytest.param("weekly", NOON, 2_800_000, id="weekly"),
        pytest.param("total", NOON, None, id="total-has-no-end"),
    ],
)
def test_linear_forecast(period: BudgetPeriod, now: int, forecast: int | None) -> None:
    book = BudgetBook([Budget(id="b", limit_micros=10 * USD, period=period)], now_ms=now)
    book.spend(now, 1 * USD)
    [s] = book.status(now)
    assert s.forecast_micros == forecast


def test_forecast_rounds_down() -> None:
    # 1 micro-dollar after 7 of 24 hours: 1 × 24/7 = 3.43 → 3.
    book = BudgetBook([Budget(id="b", limit_micros=USD, period="daily")], now_ms=NOON)
    book.spend(ms(2024, 5, 15, 7), 1)
    assert book.status(ms(2024, 5, 15, 7))[0].forecast_micros == 3


def test_status_fields() -> None:
    book = BudgetBook(
        [
            Budget(id="s", limit_micros=4 * USD, period="total", scope="model", scope_value="m"),
            Budget(id="h", limit_micros=10 * USD, kind="hard", period="daily"),
        ],
        now_ms=NOON,
    )
    book.spend(NOON, 5 * USD, model="m")
    book.reserve(NOON, 2 * USD)
    soft, hard = book.status(NOON)
    assert soft.budget_id == "s"
    assert (soft.spent_micros, soft.reserved_micros, soft.remaining_micros) == (
        5 * USD,
        0,
        -1 * USD,
    )
    assert (soft.percent_used, soft.exceeded) == (125.0, True)
    assert (soft.period_start_ms, soft.period_end_ms) == (0, None)
    assert (hard.spent_micros, hard.reserved_micros, hard.remaining_micros) == (
        5 * USD,
        2 * USD,
        3 * USD,
    )
    assert (hard.percent_used, hard.exceeded, hard.thresholds_reached) == (50.0, False, (50,))
    assert msgspec.json.decode(msgspec.json.encode(hard))["forecast_micros"] == 10 * USD


# --- restart ------------------------------------------------------------------------------


def test_restore_seeds_spend_without_repeating_thresholds() -> None:
    book = BudgetBook(
        [
            Budget(id="d", limit_micros=10 * USD, period="daily"),
            Budget(id="h", limit_micros=10 * USD, kind="hard"),
        ],
        now_ms=NOON,
    )
    book.restore(NOON, {"d": 8_500_000_000, "h": 10_000_000_000, "gone": 1})
    [d, h] = book.status(NOON)
    assert (d.spent_micros, d.thresholds_reached) == (8_500_000, (50, 80))
    assert h.thresholds_reached == (50, 80, 100)
    with pytest.raises(BudgetExceeded):
        book.reserve(NOON, 1)
    # Only the thresholds not yet reached are reported from now on.
    assert [c.threshold_percent for c in book.spend(NOON, 2 * USD)] == [100]


# --- the set of budgets ---------------------------------------------------------------------


def test_add_remove_and_limits() -> None:
    book = BudgetBook(max_budgets=2)
    book.add(Budget(id="a", limit_micros=1, scope="model", scope_value="m"))
    book.add(Budget(id="b", limit_micros=1, scope="model", scope_value="m"))
    with pytest.raises(ValidationError, match="exists"):
        book.add(Budget(id="a", limit_micros=1))
    with pytest.raises(ValidationError, match="at most 2"):
        book.add(Budget(id="c", limit_micros=1))
    assert len(book) == 2
    assert "a" in book
    assert book.remove("a") is True
    assert book.remove("a") is False
    assert [b.id for b in book.budgets()] == ["b"]
    assert book.spend(NOON, 1, model="m")[0].budget_id == "b"
    assert book.remove("b") is True
    assert book.spend(NOON, 1, model="m") == []
    with pytest.raises(ValueError, match="must be > 0"):
        BudgetBook(max_budgets=0)

"""SLO maths on hand-worked examples: budget, burn rate, windows, multi-window alerts."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest

from llmtally.analysis.slo import HOUR_MS, MINUTE_MS, SloStatus, SloTracker

# 472_223 whole hours after the epoch (2023-11-14T23:00Z): aligned to hours and minutes.
T0 = 472_223 * HOUR_MS
M = MINUTE_MS
H = HOUR_MS


def _tracker(*minutes: tuple[int, int, int]) -> SloTracker:
    """A tracker fed ``(minute offset from T0, requests, errors)``."""
    t = SloTracker()
    for minute, requests, errors in minutes:
        t.add(T0 + minute * M, requests, errors)
    return t


@pytest.mark.parametrize(
    ("errors", "remaining", "violated", "burn"),
    [
        # 99.9% of 1000 requests: allowed rate 1 - 0.999 = 0.001, budget 0.001 * 1000 = 1.
        # 0 errors: rate 0, remaining 1 - 0 = 1, burn 0 / 0.001 = 0.
        pytest.param(0, 1.0, False, 0.0, id="no-errors"),
        # 1 error: rate 1/1000 = 0.001, not > 0.001 (at the threshold), remaining 0,
        # burn 0.001 / 0.001 = 1.
        pytest.param(1, 0.0, False, 1.0, id="one-error-at-threshold"),
        # 2 errors: rate 0.002 > 0.001, remaining 1 - 2 = -1, burn 0.002 / 0.001 = 2.
        pytest.param(2, -1.0, True, 2.0, id="two-errors-violated"),
    ],
)
def test_seed_example_99_9_percent_of_1000(
    errors: int, remaining: float, violated: bool, burn: float
) -> None:
    t = _tracker((0, 1000, errors))
    s = t.status(T0 + 30_000, target=0.999, window_ms=H)
    assert s.requests == 1000
    assert s.errors == errors
    assert s.error_budget_total == 1.0  # exactly: 0.999 is read as 999/1000
    assert s.error_budget_consumed == errors
    assert s.error_budget_remaining == remaining
    assert s.violated is violated
    assert s.burn_rate == burn
    assert s.error_rate == errors / 1000
    assert s.success_rate == (1000 - errors) / 1000


def test_zero_requests_burn_nothing() -> None:
    s = SloTracker().status(T0)
    assert (s.requests, s.errors, s.error_rate, s.burn_rate) == (0, 0, 0.0, 0.0)
    assert s.success_rate == 1.0
    assert s.error_budget_total == 0.0
    assert s.error_budget_remaining == 0.0
    assert not (s.violated or s.fast_burn or s.slow_burn or s.ticket)


def test_window_expiry_minute_buckets() -> None:
    t = _tracker((0, 10, 10))
    # A 5-minute window at minute 4 covers minutes 0..4 (the current one and 4 before).
    assert t.window(T0 + 4 * M + 59_999, 5 * M) == (10, 10)
    # At minute 5 it covers minutes 1..5: minute 0 has left the window.
    assert t.window(T0 + 5 * M, 5 * M) == (0, 0)
    # A window that is not a whole number of minutes is rounded up: 90 s → 2 buckets.
    assert t.window(T0 + 1 * M, 90_000) == (10, 10)
    assert t.window(T0 + 2 * M, 90_000) == (0, 0)
    # The 6 h window (360 minute buckets) keeps it until minute 359.
    assert t.window(T0 + 359 * M, 6 * H) == (10, 10)
    assert t.window(T0 + 360 * M, 6 * H) == (0, 0)


def test_window_expiry_hour_buckets() -> None:
    t = _tracker((0, 10, 1))
    # Past 6 h, windows use hour buckets: 1 day = the current hour and the 23 before.
    assert t.window(T0 + 23 * H + 59 * M, 24 * H) == (10, 1)
    assert t.window(T0 + 24 * H, 24 * H) == (0, 0)
    assert t.window(T0 + 29 * 24 * H, 30 * 24 * H) == (10, 1)
    assert t.window(T0 + 30 * 24 * H, 30 * 24 * H) == (0, 0)
    s = t.status(T0 + 23 * H, window_ms=24 * H)
    assert (s.requests, s.errors, s.window_ms) == (10, 1, 24 * H)


def test_a_reused_slot_forgets_its_old_bucket() -> None:
    # Minute 0 and minute 360 share a slot of the 360-minute ring.
    t = _tracker((0, 5, 5), (360, 1, 0))
    assert t.window(T0 + 360 * M, 6 * H) == (1, 0)
    # The hour ring still holds both: hours 0 and 6 are in the last 7 hours.
    assert t.window(T0 + 360 * M, 7 * H) == (6, 5)
    assert (t.requests, t.errors) == (6, 5)


def test_late_observations() -> None:
    t = _tracker((0, 1, 0))
    t.add(T0 + 31 * 24 * H, 1, 0)  # 31 days on: the hour ring has moved past T0
    t.observe(T0, ok=False)  # older than every window: dropped and counted
    assert t.late == 1
    assert (t.requests, t.errors) == (2, 0)
    # 7 h late: only in the hour ring (the minute ring keeps 6 h).
    t.observe(T0 + 31 * 24 * H - 7 * H, ok=False)
    assert t.late == 1
    assert t.window(T0 + 31 * 24 * H, 6 * H) == (1, 0)
    assert t.window(T0 + 31 * 24 * H, 8 * H) == (2, 1)


def test_fast_burn_pages_when_1h_and_5m_both_burn() -> None:
    # 60 minutes of 100 requests with 2 errors: rate 2/100 = 0.02, burn 0.02/0.001 = 20
    # over 5 min, 30 min, 1 h and 6 h alike: ≥ 14.4 (fast) and ≥ 6 (slow) → both page.
    t = _tracker(*((m, 100, 2) for m in range(60)))
    s = t.status(T0 + 59 * M)
    assert s.burn_rate_5m == s.burn_rate_1h == s.burn_rate_30m == s.burn_rate_6h == 20.0
    assert s.fast_burn
    assert s.slow_burn
    # 3 days: the same 6000 requests and 120 errors → burn 20 ≥ 1, and 6 h too → ticket.
    assert s.burn_rate_3d == 20.0
    assert s.ticket


def test_short_spike_does_not_page() -> None:
    # 55 clean minutes of 100 requests, then 5 minutes of 100 requests with 10 errors.
    # 5 min: 50/500 = 0.1 → burn 100 ≥ 14.4; 1 h: 50/6000 → burn 8.33… < 14.4: no page.
    t = _tracker(*((m, 100, 0) for m in range(55)), *((m, 100, 10) for m in range(55, 60)))
    s = t.status(T0 + 59 * M)
    assert s.burn_rate_5m == 100.0
    assert s.burn_rate_1h == pytest.approx(50 / 6000 / 0.001)
    assert not s.fast_burn
    # 30 min: 50/3000 → burn 16.67 ≥ 6, but 6 h (= this hour): 8.33 ≥ 6 too → slow page.
    assert s.slow_burn


def test_recovered_service_stops_paging_at_once() -> None:
    # Minutes 0..59 burn at 20, then minutes 60..64 are clean (100 requests each).
    t = _tracker(*((m, 100, 2) for m in range(60)), *((m, 100, 0) for m in range(60, 65)))
    s = t.status(T0 + 64 * M)
    # 1 h = minutes 5..64: 55 bad minutes → 110 errors / 6000 → burn 18.33… ≥ 14.4,
    # but 5 min = minutes 60..64: 0 errors → burn 0: the short window resets the page.
    assert s.burn_rate_1h == pytest.approx(110 / 6000 / 0.001)
    assert s.burn_rate_5m == 0.0
    assert not s.fast_burn
    # The slow page takes longer: 30 min = minutes 35..64: 25 bad minutes → 50/3000 →
    # burn 16.67 ≥ 6, and 6 h = minutes 0..64: 120/6500 → 18.46 ≥ 6.
    assert s.burn_rate_30m == pytest.approx(50 / 3000 / 0.001)
    assert s.burn_rate_6h == pytest.approx(120 / 6500 / 0.001)
    assert s.slow_burn
    # After 30 clean minutes (60..89) the 30-minute window is clean: burn 0, no page,
    # although the 6 h window still burns at 120/9000 → 13.3.
    for m in range(65, 90):
        t.add(T0 + m * M, 100, 0)
    s = t.status(T0 + 89 * M)
    assert s.burn_rate_30m == 0.0
    assert s.burn_rate_6h == pytest.approx(120 / 9000 / 0.001)
    assert not s.slow_burn


@pytest.mark.parametrize(
    ("errors", "fires"),
    [
        # 144 / 10_000 = 0.0144 = 14.4 × 0.001 exactly: ≥ 14.4 fires (float maths would
        # give 14.399999999999999).
        pytest.param(144, True, id="exactly-14.4"),
        pytest.param(143, False, id="14.3"),
    ],
)
def test_fast_burn_threshold_is_exact(errors: int, fires: bool) -> None:
    t = _tracker((0, 10_000, errors))
    assert t.status(T0).fast_burn is fires


def test_slow_burn_pages_on_six_hours_at_6x() -> None:
    # 360 minutes of 1000 requests with 6 errors: burn 0.006/0.001 = 6 over 30 min and 6 h
    # → slow page; 6 < 14.4 → no fast page.
    t = _tracker(*((m, 1000, 6) for m in range(360)))
    s = t.status(T0 + 359 * M)
    assert s.burn_rate_6h == s.burn_rate_30m == 6.0
    assert s.slow_burn
    assert not s.fast_burn
    # With 5 errors a minute: burn 5 < 6 → no page.
    t = _tracker(*((m, 1000, 5) for m in range(360)))
    assert not t.status(T0 + 359 * M).slow_burn


def test_ticket_on_three_days_at_1x() -> None:
    # Every hour for 72 hours, 1000 requests with 1 error at the hour: burn 1 over 3 days
    # (72 hour buckets) and over 6 h (hours 66..71) → ticket; no page.
    t = SloTracker()
    for h in range(72):
        t.add(T0 + h * H, 1000, 1)
    s = t.status(T0 + 71 * H, window_ms=72 * H)
    assert (s.requests, s.errors) == (72_000, 72)
    assert s.burn_rate_3d == s.burn_rate_6h == 1.0
    assert s.ticket
    assert not (s.fast_burn or s.slow_burn)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(0.99, id="float"),
        pytest.param("0.99", id="str"),
        pytest.param(Decimal("0.99"), id="decimal"),
        pytest.param(Fraction(99, 100), id="fraction"),
    ],
)
def test_target_forms(target: float | str | Decimal | Fraction) -> None:
    # 99%: 200 requests → budget 2; 3 errors → burn (3/200)/(1/100) = 1.5, violated.
    s = _tracker((0, 200, 3)).status(T0, target=target)
    assert s.target == 0.99
    assert s.error_budget_total == 2.0
    assert s.burn_rate == 1.5
    assert s.violated


@pytest.mark.parametrize("target", [0, 1, 1.5, -0.1, True])
def test_bad_target(target: float) -> None:
    with pytest.raises((ValueError, TypeError)):
        SloTracker().status(T0, target=target)


@pytest.mark.parametrize("window_ms", [0, -1, 30 * 24 * H + 1])
def test_bad_window(window_ms: int) -> None:
    with pytest.raises(ValueError, match="window_ms"):
        SloTracker().window(T0, window_ms)


def test_add_validates_and_clear_resets() -> None:
    t = SloTracker()
    with pytest.raises(ValueError, match="errors <= requests"):
        t.add(T0, 1, 2)
    with pytest.raises(ValueError, match="errors <= requests"):
        t.add(T0, 1, -1)
    t.add(T0, 0, 0)  # nothing to count
    t.observe(T0, ok=True)
    t.observe(T0, ok=False)
    assert (t.requests, t.errors) == (2, 1)
    t.clear()
    assert (t.requests, t.errors, t.late) == (0, 0, 0)
    assert t.window(T0, H) == (0, 0)


def test_status_round_trips_as_json() -> None:
    s = _tracker((0, 10, 1)).status(T0)
    assert msgspec.json.decode(msgspec.json.encode(s), type=SloStatus) == s

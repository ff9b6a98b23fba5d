"""Availability SLO over sliding windows: error budget, burn rate, multi-window alerts.

Requests and errors are counted in two rings of time buckets: 360 one-minute buckets
(6 hours) and 720 one-hour buckets (30 days), so memory is fixed whatever the traffic.

Windows are bucket-aligned. A window of ``k`` buckets at ``now_ms`` is the bucket holding
``now_ms`` (partly elapsed) and the ``k - 1`` buckets before it, with
``k = ceil(window_ms / bucket_ms)``: windows up to 6 h use minute buckets, longer ones
(up to 30 days) hour buckets. So a request at ``t`` is in the 5-minute window at ``now``
when ``t // 60_000 > now // 60_000 - 5``.

The maths (Google SRE workbook, "Alerting on SLOs"), for a target ``T`` (e.g. 0.999):

- allowed error rate ``1 - T``; error rate ``e = errors / requests`` (0 with no requests);
- error budget of a window ``B = (1 - T) * requests`` (in errors), consumed ``errors``,
  remaining ``B - errors`` (negative once overspent);
- burn rate ``e / (1 - T)``: 1.0 spends the budget exactly over the SLO period;
- violated when ``e > 1 - T`` (at the threshold is not a violation);
- fast-burn page: burn rate over 1 h **and** over 5 min both ≥ 14.4 (2% of a 30-day
  budget in one hour); slow-burn page: over 6 h **and** 30 min both ≥ 6 (5% in six
  hours); ticket: over 3 days **and** 6 h both ≥ 1 (10% in three days).

Every comparison is exact: the target is read as the decimal it prints as
(``Fraction(str(0.999)) == 999/1000``), so the seed example (99.9%, 1000 requests,
budget 1) gives a budget of exactly 1.0, 1 error is not a violation, 2 errors are, burn
rate 2.0. Reported rates and budgets are the floats nearest to the exact fractions.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Final

import msgspec

__all__ = [
    "FAST_BURN_THRESHOLD",
    "HOUR_BUCKETS",
    "MAX_WINDOW_MS",
    "MINUTE_BUCKETS",
    "SLOW_BURN_THRESHOLD",
    "TICKET_BURN_THRESHOLD",
    "SloStatus",
    "SloTracker",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
MINUTE_BUCKETS: Final = 360
"""Minute ring length: windows up to 6 hours have minute resolution."""
HOUR_BUCKETS: Final = 720
"""Hour ring length: windows up to 30 days have hour resolution."""
MAX_WINDOW_MS: Final = HOUR_BUCKETS * HOUR_MS

FAST_BURN_THRESHOLD: Final = Fraction("14.4")
SLOW_BURN_THRESHOLD: Final = Fraction(6)
TICKET_BURN_THRESHOLD: Final = Fraction(1)

_5M: Final = 5 * MINUTE_MS
_30M: Final = 30 * MINUTE_MS
_1H: Final = HOUR_MS
_6H: Final = 6 * HOUR_MS
_3D: Final = 72 * HOUR_MS


class SloStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The SLO over one window at ``now_ms``, plus the burn-rate alerts.

    ``error_budget_total`` is ``(1 - target) * requests`` in errors (a float, the nearest
    to the exact value); ``error_budget_consumed`` is ``errors``;
    ``error_budget_remaining`` is their difference and goes negative once overspent.
    ``burn_rate`` is ``error_rate / (1 - target)``. With no requests every rate is 0 and
    nothing is violated. ``fast_burn``/``slow_burn`` are pages, ``ticket`` a ticket (see
    the module docstring); the ``burn_rate_*`` fields are the windows they use.
    """

    target: float
    window_ms: int
    requests: int
    errors: int
    success_rate: float
    error_rate: float
    error_budget_total: float
    error_budget_consumed: int
    error_budget_remaining: float
    burn_rate: float
    violated: bool
    burn_rate_5m: float
    burn_rate_30m: float
    burn_rate_1h: float
    burn_rate_6h: float
    burn_rate_3d: float
    fast_burn: bool
    slow_burn: bool
    ticket: bool


class _Ring:
    """``size`` buckets of ``width_ms``; slot ``i`` holds the bucket whose index is
    ``stamp[i]`` (a bucket index is ``t // width_ms``)."""

    __slots__ = ("errors", "newest", "requests", "size", "stamp", "width_ms")

    def __init__(self, size: int, width_ms: int) -> None:
        self.size = size
        self.width_ms = width_ms
        self.requests = [0] * size
        self.errors = [0] * size
        self.stamp = [-1] * size
        self.newest = -1

    def add(self, now_ms: int, requests: int, errors: int) -> bool:
        """Count into the bucket of ``now_ms``; ``False`` if it has left the ring."""
        b = now_ms // self.width_ms
        if b <= self.newest - self.size:
            return False
        i = b % self.size
        if self.stamp[i] != b:  # an older bucket's slot: reuse it
            self.stamp[i] = b
            self.requests[i] = 0
            self.errors[i] = 0
        self.requests[i] += requests
        self.errors[i] += errors
        if b > self.newest:
            self.newest = b
        return True

    def window(self, now_ms: int, buckets: int) -> tuple[int, int]:
        """(requests, errors) in the ``buckets`` buckets ending with the one of ``now_ms``."""
        last = now_ms // self.width_ms
        stamp, size = self.stamp, self.size
        req = err = 0
        for b in range(last - buckets + 1, last + 1):
            i = b % size
            if stamp[i] == b:
                req += self.requests[i]
                err += self.errors[i]
        return req, err


def _exact_target(target: float | str | Decimal | Fraction) -> Fraction:
    if isinstance(target, bool):
        raise TypeError("target must be a number, not bool")
    # A float is read as the decimal it prints as: 0.999 → 999/1000, not 0.99899999...
    t = Fraction(repr(target)) if isinstance(target, float) else Fraction(target)
    if not 0 < t < 1:
        raise ValueError(f"target must be within (0, 1), got {target}")
    return t


def _burn(requests: int, errors: int, allowed: Fraction) -> Fraction:
    if not requests:
        return Fraction(0)
    return Fraction(errors, requests) / allowed


class SloTracker:
    """Counts requests and errors per minute and per hour; answers ``status``.

    ``observe`` is O(1); ``status`` is O(buckets in the windows it reads) — under 1,200
    bucket reads. Not thread-safe: owned by one actor. ``now_ms`` is unix milliseconds and
    is expected to be non-decreasing; an observation older than the 30-day ring is dropped
    and counted in ``late``, one older than 6 h only misses the minute ring.
    """

    __slots__ = ("_hours", "_minutes", "errors", "late", "requests")

    def __init__(self) -> None:
        self._minutes = _Ring(MINUTE_BUCKETS, MINUTE_MS)
        self._hours = _Ring(HOUR_BUCKETS, HOUR_MS)
        self.requests = 0
        """Every request observed (lifetime)."""
        self.errors = 0
        """Every error observed (lifetime)."""
        self.late = 0
        """Observations dropped because they were older than every window."""

    def observe(self, now_ms: int, ok: bool) -> None:
        """Count one request at ``now_ms``; ``ok=False`` counts it as an error too."""
        self.add(now_ms, 1, 0 if ok else 1)

    def add(self, now_ms: int, requests: int, errors: int) -> None:
        """Count ``requests`` requests of which ``errors`` failed, at ``now_ms`` (bulk form
        of ``observe``, e.g. to seed the rings from storage after a restart).

        Raises ``ValueError`` unless ``0 <= errors <= requests``.
        """
        if not 0 <= errors <= requests:
            raise ValueError(f"need 0 <= errors <= requests, got {errors}/{requests}")
        if not requests:
            return
        if not self._hours.add(now_ms, requests, errors):
            self.late += requests
            return
        self._minutes.add(now_ms, requests, errors)
        self.requests += requests
        self.errors += errors

    def window(self, now_ms: int, window_ms: int) -> tuple[int, int]:
        """``(requests, errors)`` in the window of ``window_ms`` ending at ``now_ms``.

        Raises ``ValueError`` unless ``0 < window_ms <= MAX_WINDOW_MS`` (30 days).
        """
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ValueError(f"window_ms must be within (0, {MAX_WINDOW_MS}], got {window_ms}")
        if window_ms <= MINUTE_BUCKETS * MINUTE_MS:
            return self._minutes.window(now_ms, -(-window_ms // MINUTE_MS))
        return self._hours.window(now_ms, -(-window_ms // HOUR_MS))

    def status(
        self,
        now_ms: int,
        target: float | str | Decimal | Fraction = 0.999,
        window_ms: int = HOUR_MS,
    ) -> SloStatus:
        """The SLO status over ``window_ms`` (default 1 h) and the burn-rate alerts.

        ``target`` is the success-rate objective, strictly between 0 and 1; a float is
        read as its decimal repr. Raises ``ValueError`` for a bad target or window.
        """
        t = _exact_target(target)
        allowed = 1 - t
        requests, errors = self.window(now_ms, window_ms)
        burn = _burn(requests, errors, allowed)
        budget = allowed * requests
        rates = {w: _burn(*self.window(now_ms, w), allowed) for w in (_5M, _30M, _1H, _6H, _3D)}
        rate = Fraction(errors, requests) if requests else Fraction(0)
        return SloStatus(
            target=float(t),
            window_ms=window_ms,
            requests=requests,
            errors=errors,
            success_rate=float(1 - rate) if requests else 1.0,
            error_rate=float(rate),
            error_budget_total=float(budget),
            error_budget_consumed=errors,
            error_budget_remaining=float(budget - errors),
            burn_rate=float(burn),
            violated=rate > allowed,
            burn_rate_5m=float(rates[_5M]),
            burn_rate_30m=float(rates[_30M]),
            burn_rate_1h=float(rates[_1H]),
            burn_rate_6h=float(rates[_6H]),
            burn_rate_3d=float(rates[_3D]),
            fast_burn=rates[_1H] >= FAST_BURN_THRESHOLD and rates[_5M] >= FAST_BURN_THRESHOLD,
            slow_burn=rates[_6H] >= SLOW_BURN_THRESHOLD and rates[_30M] >= SLOW_BURN_THRESHOLD,
            ticket=rates[_3D] >= TICKET_BURN_THRESHOLD and rates[_6H] >= TICKET_BURN_THRESHOLD,
        )

    def clear(self) -> None:
        """Forget everything."""
        self._minutes = _Ring(MINUTE_BUCKETS, MINUTE_MS)
        self._hours = _Ring(HOUR_BUCKETS, HOUR_MS)
        self.requests = self.errors = self.late = 0

"""Spending budgets on any dimension: thresholds, hard limits with reservations, forecasts.

A ``Budget`` limits spend over a calendar period (daily, weekly, monthly — in the budget's
time zone — or in total) for everything (``scope="global"``) or for one agent, API key
(``provider_id``) or model. ``BudgetBook`` holds the budgets of a store:

- ``spend``/``spend_nanos`` add settled cost to every matching budget and return the
  thresholds (50/80/100% by default) crossed, each reported once per budget and period;
- ``reserve`` → ``settle`` | ``release`` guard *hard* budgets before a call: a reservation
  holds an estimate so concurrent calls cannot together overshoot the limit;
- ``check`` refuses a call when a hard budget is already used up;
- ``status`` shows spend, holds, remaining room and a linear end-of-period forecast.

Money is integers: limits, estimates and reports in micro-dollars (1 USD = 1,000,000);
spend is kept in nano-dollars, exactly as events carry it, so thousands of sub-micro-dollar
calls add up exactly. The book is pure and synchronous; every time is an explicit
``now_ms`` (unix milliseconds). Not thread-safe: owned by one actor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Final, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .. import _validation as v
from .._exceptions import BudgetExceeded, ValidationError
from ..events import BudgetThresholdReached, nanos_to_micros
from .stats import SeriesKey, Tally

__all__ = [
    "FORECAST_MIN_ELAPSED_FRACTION",
    "Budget",
    "BudgetBook",
    "BudgetKind",
    "BudgetPeriod",
    "BudgetScope",
    "BudgetStatus",
    "Reservation",
    "ThresholdCrossing",
    "period_bounds",
    "usd_to_micros",
]

BudgetScope: TypeAlias = Literal["global", "agent_id", "provider_id", "model"]
BudgetPeriod: TypeAlias = Literal["daily", "weekly", "monthly", "total"]
BudgetKind: TypeAlias = Literal["soft", "hard"]

FORECAST_MIN_ELAPSED_FRACTION: Final = 24
"""No forecast until ``1/24`` of the period has elapsed (1 h of a day, 7 h of a week,
about 1.25 days of a month): earlier, one expensive call would extrapolate wildly."""

_MICROS_PER_USD: Final = 1_000_000
_NANOS_PER_MICRO: Final = 1_000
_MS: Final = timedelta(milliseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SCOPES: Final = ("global", "agent_id", "provider_id", "model")


def usd_to_micros(amount: Decimal | str | int) -> int:
    """An exact US-dollar amount (``Decimal("12.50")``, ``"12.50"``, ``12``) in micro-dollars.

    Raises ``ValidationError`` for a float (money is never a float: pass a string), a
    malformed or non-finite amount, or one with sub-micro-dollar precision.
    """
    if isinstance(amount, float | bool) or not isinstance(amount, Decimal | str | int):
        raise ValidationError(
            f"a USD amount must be a Decimal, str or int, not {type(amount).__name__}"
        )
    try:
        d = Decimal(amount)
    except InvalidOperation:
        raise ValidationError(f"not a USD amount: {amount!r}") from None
    if not d.is_finite():
        raise ValidationError(f"not a finite USD amount: {amount!r}")
    micros = d * _MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValidationError(f"{amount!r} USD is not a whole number of micro-dollars")
    return int(micros)


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValidationError(f"unknown time zone: {tz!r}") from e


def _midnight_ms(d: date, zone: ZoneInfo) -> int:
    # fold=0: an ambiguous midnight is its first occurrence; a skipped one (DST at 00:00)
    # maps to the instant of the transition.
    return (datetime(d.year, d.month, d.day, tzinfo=zone) - _EPOCH) // _MS


def _first_day(period: BudgetPeriod, d: date) -> date:
    if period == "daily":
        return d
    if period == "weekly":
        return d - timedelta(days=d.weekday())
    return d.replace(day=1)


def _next_first_day(period: BudgetPeriod, first: date) -> date:
    if period == "daily":
        return first + timedelta(days=1)
    if period == "weekly":
        return first + timedelta(days=7)
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def period_bounds(
    period: BudgetPeriod, now_ms: int, tz: str | ZoneInfo = "UTC"
) -> tuple[int, int | None]:
    """``(start_ms, end_ms)`` of the calendar period holding ``now_ms``: ``start <= now < end``.

    Days start at 00:00 local time in ``tz``, weeks on Monday, months on the 1st; across a
    DST change a day lasts 23 or 25 hours. ``"total"`` is ``(0, None)``: it never ends.
    Raises ``ValidationError`` for an unknown period or time zone.
    """
    if period == "total":
        return 0, None
    if period not in ("daily", "weekly", "monthly"):
        raise ValidationError(f"unknown budget period: {period!r}")
    zone = _zone(tz)
    first = _first_day(period, datetime.fromtimestamp(now_ms // 1000, zone).date())
    start = _midnight_ms(first, zone)
    nxt = _next_first_day(period, first)
    end = _midnight_ms(nxt, zone)
    # Defensive: should a zone's rules make the local date of ``now`` disagree with the
    # instants of its midnights (not seen with tzdata 2024), step one period on or back.
    if now_ms >= end:  # pragma: no cover
        start, end = end, _midnight_ms(_next_first_day(period, nxt), zone)
    elif now_ms < start:  # pragma: no cover - symmetric guard, not known to occur
        end = start
        prev = _first_day(period, first - timedelta(days=1))
        start = _midnight_ms(prev, zone)
    return start, end


# --- budgets ----------------------------------------------------------------------------


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """A spending limit.

    ``scope`` names the dimension the budget applies to and ``scope_value`` the value
    (required unless ``scope="global"``): ``Budget(id="a7", scope="agent_id",
    scope_value="agent-7", limit_micros=10_000_000, period="daily", kind="hard")``.
    A ``"soft"`` budget only reports thresholds; a ``"hard"`` one also refuses
    ``reserve``/``check`` once its limit would be exceeded. ``thresholds`` are strictly
    increasing whole percentages (above 100 allowed, for soft overspend alerts).
    ``timezone`` is an IANA name; it sets where days, weeks and months begin.

    Raises ``ValidationError`` (``msgspec.ValidationError`` when decoding) when invalid.
    Build from dollars with ``Budget.from_usd``.
    """

    id: str
    limit_micros: int
    scope: BudgetScope = "global"
    scope_value: str | None = None
    period: BudgetPeriod = "monthly"
    kind: BudgetKind = "soft"
    thresholds: tuple[int, ...] = (50, 80, 100)
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        # Types first: msgspec checks them when decoding, not when a caller constructs.
        if not self.id:
            raise ValidationError("a budget needs a non-empty id")
        v.check_id("budget id", self.id)
        if type(self.limit_micros) is not int or not 0 < self.limit_micros <= v.MAX_COUNT:
            raise ValidationError(
                f"budget {self.id!r}: limit_micros must be a positive int (at most {v.MAX_COUNT})"
            )
        if self.scope_value is not None:
            v.check_id("scope_value", self.scope_value)
        if not isinstance(self.thresholds, tuple) or any(
            type(t) is not int for t in self.thresholds
        ):
            raise ValidationError(f"budget {self.id!r}: thresholds must be a tuple of ints")
        if not isinstance(self.timezone, str):
            raise ValidationError(f"budget {self.id!r}: timezone must be an IANA name (a str)")
        if self.scope not in _SCOPES:
            raise ValidationError(f"budget {self.id!r}: unknown scope {self.scope!r}")
        if (self.scope == "global") != (self.scope_value is None):
            raise ValidationError(
                f"budget {self.id!r}: scope_value is required for scope {self.scope!r}"
                if self.scope != "global"
                else f"budget {self.id!r}: a global budget takes no scope_value"
            )
        if self.period not in ("daily", "weekly", "monthly", "total"):
            raise ValidationError(f"budget {self.id!r}: unknown period {self.period!r}")
        if self.kind not in ("soft", "hard"):
            raise ValidationError(f"budget {self.id!r}: unknown kind {self.kind!r}")
        ts = self.thresholds
        if any(isinstance(t, bool) or not 0 < t <= 10_000 for t in ts) or any(
            a >= b for a, b in pairwise(ts)
        ):
            raise ValidationError(
                f"budget {self.id!r}: thresholds must be strictly increasing percentages "
                f"in (0, 10000], got {ts!r}"
            )
        _zone(self.timezone)

    @classmethod
    def from_usd(cls, id: str, limit_usd: Decimal | str | int, **fields: object) -> Budget:
        """A budget whose limit is given in dollars (``"25.00"``; floats are refused)."""
        return cls(id=id, limit_micros=usd_to_micros(limit_usd), **fields)  # type: ignore[arg-type]

    def matches(self, *, agent_id: str | None, provider_id: str | None, model: str | None) -> bool:
        """Whether a call with these dimensions counts against this budget."""
        scope = self.scope
        if scope == "global":
            return True
        if scope == "agent_id":
            return agent_id == self.scope_value
        if scope == "provider_id":
            return provider_id == self.scope_value
        return model == self.scope_value


class ThresholdCrossing(msgspec.Struct, frozen=True, kw_only=True):
    """Spend on ``budget_id`` reached ``threshold_percent`` of its limit at ``at_ms``."""

    budget_id: str
    threshold_percent: int
    spent_micros: int
    limit_micros: int
    kind: BudgetKind
    scope: BudgetScope
    scope_value: str | None
    period_start_ms: int
    period_end_ms: int | None
    at_ms: int

    def to_payload(self) -> BudgetThresholdReached:
        """The ``budget_threshold_reached`` event payload for this crossing."""
        return BudgetThresholdReached(
            threshold_percent=self.threshold_percent,
            current_spend_micros=self.spent_micros,
            budget_micros=self.limit_micros,
            budget_id=self.budget_id,
        )


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """A hold of ``amount_micros`` on the hard budgets ``budget_ids``, until settled,
    released, or ``expires_ms``. Pass it back to ``settle`` or ``release``."""

    id: int
    amount_micros: int
    budget_ids: tuple[str, ...]
    agent_id: str | None
    provider_id: str | None
    model: str | None
    created_ms: int
    expires_ms: int


class BudgetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One budget in its current period. Money in micro-dollars.

    ``remaining_micros = limit - spent - reserved`` (negative once a soft budget is
    overspent); ``percent_used = 100 * spent / limit``. ``forecast_micros`` is the linear
    projection of spend at period end, ``spent * period_length / elapsed`` rounded down;
    ``None`` for ``"total"`` budgets and until ``1/FORECAST_MIN_ELAPSED_FRACTION`` of the
    period has elapsed.
    """

    budget_id: str
    scope: BudgetScope
    scope_value: str | None
    kind: BudgetKind
    period: BudgetPeriod
    limit_micros: int
    spent_micros: int
    spent_nanos: int
    reserved_micros: int
    remaining_micros: int
    percent_used: float
    exceeded: bool
    thresholds_reached: tuple[int, ...]
    period_start_ms: int
    period_end_ms: int | None
    forecast_micros: int | None


class _State:
    """A budget's mutable state: spend and reported thresholds of the current period,
    and the holds of outstanding reservations (which outlive a period change)."""

    __slots__ = ("budget", "end_ms", "limit_nanos", "reported", "reserved", "spent", "start_ms")

    def __init__(self, budget: Budget, now_ms: int) -> None:
        self.budget = budget
        self.limit_nanos = budget.limit_micros * _NANOS_PER_MICRO
        self.spent = 0  # nanos
        self.reserved = 0  # nanos
        self.reported = 0  # how many of budget.thresholds were reported this period
        self.start_ms, self.end_ms = period_bounds(budget.period, now_ms, budget.timezone)

    def roll(self, now_ms: int) -> None:
        # Only forward: spend timestamped before the current period (a late event) is
        # counted in the current one, which errs on the safe side for hard limits.
        if self.end_ms is not None and now_ms >= self.end_ms:
            b = self.budget
            self.start_ms, self.end_ms = period_bounds(b.period, now_ms, b.timezone)
            self.spent = 0
            self.reported = 0

    def reached(self) -> int:
        """How many thresholds the current spend has reached."""
        ts, n = self.budget.thresholds, 0
        while n < len(ts) and self.spent * 100 >= ts[n] * self.limit_nanos:
            n += 1
        return n

    def refusal(self, extra: int) -> str | None:
        """Why a call needing ``extra`` more nanos is refused, or ``None`` if it fits."""
        committed = self.spent + self.reserved
        if committed + extra <= self.limit_nanos and committed < self.limit_nanos:
            return None
        b = self.budget
        where = b.scope if b.scope_value is None else f"{b.scope}={b.scope_value}"
        return (
            f"hard budget {b.id!r} ({where}, {b.period}) has no room: "
            f"limit {b.limit_micros} micro-USD, spent {nanos_to_micros(self.spent)}, "
            f"reserved {nanos_to_micros(self.reserved)}, "
            f"requested {nanos_to_micros(extra)}"
        )


class _Hold:
    __slots__ = ("amount", "expires_ms", "states")

    def __init__(self, states: list[_State], amount: int, expires_ms: int) -> None:
        self.states = states
        self.amount = amount
        self.expires_ms = expires_ms


class BudgetBook:
    """The budgets of one store and their running spend.

    At most ``max_budgets`` budgets. Outstanding reservations expire ``reservation_ttl_ms``
    after ``reserve`` (counted in ``expired_reservations``), and at most
    ``max_reservations`` are held: beyond that the oldest hold is dropped
    (``evicted_reservations``) — a safety valve for callers that never settle.
    """

    __slots__ = (
        "_hard",
        "_holds",
        "_index",
        "_next_id",
        "_scoped",
        "_states",
        "evicted_reservations",
        "expired_reservations",
        "max_budgets",
        "max_reservations",
        "reservation_ttl_ms",
    )

    def __init__(
        self,
        budgets: Iterable[Budget] = (),
        *,
        now_ms: int = 0,
        max_budgets: int = 10_000,
        max_reservations: int = 100_000,
        reservation_ttl_ms: int = 600_000,
    ) -> None:
        if max_budgets < 1 or max_reservations < 1 or reservation_ttl_ms < 1:
            raise ValueError("max_budgets, max_reservations and reservation_ttl_ms must be > 0")
        self.max_budgets = max_budgets
        self.max_reservations = max_reservations
        self.reservation_ttl_ms = reservation_ttl_ms
        self.expired_reservations = 0
        self.evicted_reservations = 0
        self._states: dict[str, _State] = {}
        self._hard = 0
        self._index: dict[tuple[str, str | None], list[_State]] = {}
        # The same states by scope, then scope value: which scopes have budgets at all.
        self._scoped: dict[str, dict[str | None, list[_State]]] = {}
        self._holds: OrderedDict[int, _Hold] = OrderedDict()
        self._next_id = 1
        for b in budgets:
            self.add(b, now_ms=now_ms)

    # --- the set of budgets -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, budget_id: object) -> bool:
        return budget_id in self._states

    @property
    def has_hard(self) -> bool:
        """Whether any budget is hard (else ``check`` and ``reserve`` never refuse)."""
        return self._hard > 0

    def budgets(self) -> list[Budget]:
        """Every budget, in the order added."""
        return [s.budget for s in self._states.values()]

    def add(self, budget: Budget, *, now_ms: int = 0) -> None:
        """Add a budget with no spend yet (see ``restore``).

        Raises ``ValidationError`` if the id is taken or the book is full.
        """
        if budget.id in self._states:
            raise ValidationError(f"a budget with id {budget.id!r} exists already")
        if len(self._states) >= self.max_budgets:
            raise ValidationError(f"at most {self.max_budgets} budgets")
        state = _State(budget, now_ms)
        self._states[budget.id] = state
        self._hard += budget.kind == "hard"
        self._index.setdefault((budget.scope, budget.scope_value), []).append(state)
        self._scoped.setdefault(budget.scope, {})[budget.scope_value] = self._index[
            (budget.scope, budget.scope_value)
        ]

    def remove(self, budget_id: str) -> bool:
        """Remove a budget; ``False`` if there was none with that id."""
        state = self._states.pop(budget_id, None)
        if state is None:
            return False
        self._hard -= state.budget.kind == "hard"
        key = (state.budget.scope, state.budget.scope_value)
        rest = [s for s in self._index[key] if s is not state]
        scoped = self._scoped[key[0]]
        if rest:
            self._index[key] = scoped[key[1]] = rest
        else:
            del self._index[key]
            del scoped[key[1]]
            if not scoped:
                del self._scoped[key[0]]
        return True

    def restore(self, now_ms: int, spent_nanos: Mapping[str, int]) -> None:
        """Seed the current period's spend after a restart, in nano-dollars per budget id.

        The store computes each budget's spend since ``period_bounds(b.period, now_ms,
        b.timezone)[0]`` over the events matching its scope. Thresholds already reached
        are marked as reported (their events were recorded before the restart). Unknown
        ids are ignored. Raises ``ValidationError`` for a negative amount.
        """
        for budget_id, nanos in spent_nanos.items():
            state = self._states.get(budget_id)
            if state is None:
                continue
            if nanos < 0:
                raise ValidationError(f"negative spend for budget {budget_id!r}")
            state.roll(now_ms)
            state.spent = nanos
            state.reported = state.reached()

    # --- spend --------------------------------------------------------------------------

    def _matching(
        self, agent_id: str | None, provider_id: str | None, model: str | None
    ) -> list[_State]:
        index = self._index
        found = list(index.get(("global", None), ()))
        if agent_id is not None:
            found += index.get(("agent_id", agent_id), ())
        if provider_id is not None:
            found += index.get(("provider_id", provider_id), ())
        if model is not None:
            found += index.get(("model", model), ())
        return found

    def spend_nanos(
        self,
        now_ms: int,
        cost_nanos: int,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> list[ThresholdCrossing]:
        """Add settled spend (nano-dollars) to every matching budget, starting a new period
        first where ``now_ms`` has passed the current one's end.

        Returns the thresholds newly reached, each reported once per budget and period
        (several at once if one call jumps past them). Raises ``ValidationError`` for a
        negative cost.
        """
        if cost_nanos < 0:
            raise ValidationError(f"cost must be >= 0, got {cost_nanos}")
        crossings: list[ThresholdCrossing] = []
        for state in self._matching(agent_id, provider_id, model):
            state.roll(now_ms)
            state.spent += cost_nanos
            reached = state.reached()
            b = state.budget
            for i in range(state.reported, reached):
                crossings.append(
                    ThresholdCrossing(
                        budget_id=b.id,
                        threshold_percent=b.thresholds[i],
                        spent_micros=nanos_to_micros(state.spent),
                        limit_micros=b.limit_micros,
                        kind=b.kind,
                        scope=b.scope,
                        scope_value=b.scope_value,
                        period_start_ms=state.start_ms,
                        period_end_ms=state.end_ms,
                        at_ms=now_ms,
                    )
                )
            if reached > state.reported:
                state.reported = reached
        return crossings

    def spend_many(
        self,
        now_ms: int,
        costs: Iterable[tuple[int, str | None, str | None, str | None]],
    ) -> list[ThresholdCrossing]:
        """``spend_nanos`` for many ``(cost_nanos, agent_id, provider_id, model)`` at one
        time ``now_ms``: costs are summed per matching budget first, so each budget is
        rolled, charged and checked once (the aggregator's per-batch form). Same result
        as calling ``spend_nanos`` for each, except that several thresholds crossed in
        one call report the spend after all of it. Raises ``ValidationError`` for a
        negative cost (nothing is charged then)."""
        add: dict[str, int] = {}
        total = 0
        # Only the scopes that have budgets are looked up (the book is often all global).
        scoped = self._scoped
        no: dict[str | None, list[_State]] = {}
        agents = scoped.get("agent_id", no)
        keys = scoped.get("provider_id", no)
        models = scoped.get("model", no)
        for cost, agent_id, provider_id, model in costs:
            if cost < 0:
                raise ValidationError(f"cost must be >= 0, got {cost}")
            total += cost
            # Unrolled (agent, API key, model: the order of the crossings): per series.
            if agents and agent_id is not None:
                for state in agents.get(agent_id, ()):
                    add[state.budget.id] = add.get(state.budget.id, 0) + cost
            if keys and provider_id is not None:
                for state in keys.get(provider_id, ()):
                    add[state.budget.id] = add.get(state.budget.id, 0) + cost
            if models and model is not None:
                for state in models.get(model, ()):
                    add[state.budget.id] = add.get(state.budget.id, 0) + cost
        for state in scoped.get("global", no).get(None, ()):
            add[state.budget.id] = add.get(state.budget.id, 0) + total
        return self._charge(add, now_ms)

    def spend_series(
        self, now_ms: int, series: Mapping[SeriesKey, Tally]
    ) -> list[ThresholdCrossing]:
        """``spend_many`` for a batch's ``StatsDelta.series``: each series' ``cost_nanos``
        with its agent, API key (``""``: none) and model, all at ``now_ms``. Same result
        as ``spend_many`` of those costs in series order; a series costs one dict
        look-up per scope that has budgets. Raises ``ValidationError`` for a negative
        cost (nothing is charged then)."""
        add: dict[str, int] = {}
        total = 0
        scoped = self._scoped
        no: dict[str | None, list[_State]] = {}
        agents = scoped.get("agent_id", no)
        keys = scoped.get("provider_id", no)
        models = scoped.get("model", no)
        # Loops reading the slot (map(attrgetter(...)) is not specialized: slower).
        if agents or keys or models:
            for (model, _, agent_id, provider_id), t in series.items():
                cost = t.cost_nanos
                if not cost:
                    continue
                if cost < 0:
                    raise ValidationError(f"cost must be >= 0, got {cost}")
                total += cost
                # The order of spend_many: agent, API key, model. Most series match no
                # scoped budget: one ``in`` per scope (cheaper than a get() call), no
                # loop. Scope values are never "" (an absent id here): no guard needed.
                if agent_id in agents:
                    for state in agents[agent_id]:
                        add[state.budget.id] = add.get(state.budget.id, 0) + cost
                if provider_id in keys:
                    for state in keys[provider_id]:
                        add[state.budget.id] = add.get(state.budget.id, 0) + cost
                if model in models:
                    for state in models[model]:
                        add[state.budget.id] = add.get(state.budget.id, 0) + cost
        else:
            for t in series.values():
                cost = t.cost_nanos
                if cost < 0:
                    raise ValidationError(f"cost must be >= 0, got {cost}")
                total += cost
        for state in scoped.get("global", no).get(None, ()):
            add[state.budget.id] = add.get(state.budget.id, 0) + total
        return self._charge(add, now_ms)

    def _charge(self, add: dict[str, int], now_ms: int) -> list[ThresholdCrossing]:
        """Add each budget's spend (by id, in order) and return the thresholds crossed."""
        crossings: list[ThresholdCrossing] = []
        for budget_id, cost in add.items():
            state = self._states[budget_id]
            state.roll(now_ms)
            state.spent += cost
            crossings += self._crossed(state, now_ms)
        return crossings

    def _crossed(self, state: _State, now_ms: int) -> list[ThresholdCrossing]:
        reached = state.reached()
        if reached <= state.reported:
            return []
        b = state.budget
        crossings = [
            ThresholdCrossing(
                budget_id=b.id,
                threshold_percent=b.thresholds[i],
                spent_micros=nanos_to_micros(state.spent),
                limit_micros=b.limit_micros,
                kind=b.kind,
                scope=b.scope,
                scope_value=b.scope_value,
                period_start_ms=state.start_ms,
                period_end_ms=state.end_ms,
                at_ms=now_ms,
            )
            for i in range(state.reported, reached)
        ]
        state.reported = reached
        return crossings

    def spend(
        self,
        now_ms: int,
        cost_micros: int,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> list[ThresholdCrossing]:
        """``spend_nanos`` with the cost in micro-dollars."""
        return self.spend_nanos(
            now_ms,
            cost_micros * _NANOS_PER_MICRO,
            agent_id=agent_id,
            provider_id=provider_id,
            model=model,
        )

    # --- hard limits --------------------------------------------------------------------

    def _expire(self, now_ms: int) -> None:
        holds = self._holds
        # Holds are kept in reserve order; with one TTL and non-decreasing now_ms that is
        # expiry order, so only the front needs looking at.
        while holds:
            hold = next(iter(holds.values()))
            if hold.expires_ms > now_ms:
                break
            holds.popitem(last=False)
            self._unhold(hold)
            self.expired_reservations += 1

    @staticmethod
    def _unhold(hold: _Hold) -> None:
        for state in hold.states:
            state.reserved -= hold.amount

    def check(
        self,
        now_ms: int,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> None:
        """Raise ``BudgetExceeded`` if a matching hard budget is used up: its spend plus
        held reservations is at or over its limit. Soft budgets never raise."""
        self._expire(now_ms)
        for state in self._matching(agent_id, provider_id, model):
            if state.budget.kind == "hard":
                state.roll(now_ms)
                reason = state.refusal(0)
                if reason is not None:
                    raise BudgetExceeded(reason)

    def reserve(
        self,
        now_ms: int,
        estimate_micros: int,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> Reservation:
        """Hold ``estimate_micros`` on every matching hard budget, all or none.

        Succeeds only if, for each, ``spent + reserved + estimate <= limit`` and the budget
        is not used up (so a zero estimate needs ``spent + reserved < limit``). Raises
        ``BudgetExceeded`` naming the first budget without room, its limit, spend and
        holds; ``ValidationError`` for a negative estimate. With no hard budget matching,
        the reservation holds nothing. Follow with ``settle`` or ``release``.
        """
        if estimate_micros < 0:
            raise ValidationError(f"estimate must be >= 0, got {estimate_micros}")
        self._expire(now_ms)
        amount = estimate_micros * _NANOS_PER_MICRO
        hard = [s for s in self._matching(agent_id, provider_id, model) if s.budget.kind == "hard"]
        for state in hard:
            state.roll(now_ms)
            reason = state.refusal(amount)
            if reason is not None:
                raise BudgetExceeded(reason)
        rid = self._next_id
        self._next_id += 1
        expires_ms = now_ms + self.reservation_ttl_ms
        if hard:
            holds = self._holds
            if len(holds) >= self.max_reservations:
                _, oldest = holds.popitem(last=False)
                self._unhold(oldest)
                self.evicted_reservations += 1
            for state in hard:
                state.reserved += amount
            holds[rid] = _Hold(hard, amount, expires_ms)
        return Reservation(
            id=rid,
            amount_micros=estimate_micros,
            budget_ids=tuple(s.budget.id for s in hard),
            agent_id=agent_id,
            provider_id=provider_id,
            model=model,
            created_ms=now_ms,
            expires_ms=expires_ms,
        )

    def release(self, reservation: Reservation) -> bool:
        """Drop a reservation's hold without recording spend (the call did not happen, or
        its cost is recorded elsewhere). ``False`` if nothing was held any more."""
        hold = self._holds.pop(reservation.id, None)
        if hold is None:
            return False
        self._unhold(hold)
        return True

    def settle(
        self, reservation: Reservation, actual_micros: int, now_ms: int
    ) -> list[ThresholdCrossing]:
        """Replace a reservation's hold by the actual cost: release the hold, then
        ``spend`` ``actual_micros`` on every budget matching the reservation's dimensions.

        The spend is recorded even if the hold has expired (the call did happen), so call
        it exactly once per reservation. Returns the thresholds crossed.
        """
        self.release(reservation)
        return self.spend(
            now_ms,
            actual_micros,
            agent_id=reservation.agent_id,
            provider_id=reservation.provider_id,
            model=reservation.model,
        )

    @property
    def outstanding_reservations(self) -> int:
        """Reservations currently holding room."""
        return len(self._holds)

    # --- status -------------------------------------------------------------------------

    def status(self, now_ms: int) -> list[BudgetStatus]:
        """Every budget in its current period, in the order added."""
        self._expire(now_ms)
        out: list[BudgetStatus] = []
        for state in self._states.values():
            state.roll(now_ms)
            b = state.budget
            spent_micros = nanos_to_micros(state.spent)
            reserved_micros = nanos_to_micros(state.reserved)
            forecast: int | None = None
            if state.end_ms is not None:
                elapsed = now_ms - state.start_ms
                length = state.end_ms - state.start_ms
                if elapsed > 0 and elapsed * FORECAST_MIN_ELAPSED_FRACTION >= length:
                    forecast = state.spent * length // (elapsed * _NANOS_PER_MICRO)
            out.append(
                BudgetStatus(
                    budget_id=b.id,
                    scope=b.scope,
                    scope_value=b.scope_value,
                    kind=b.kind,
                    period=b.period,
                    limit_micros=b.limit_micros,
                    spent_micros=spent_micros,
                    spent_nanos=state.spent,
                    reserved_micros=reserved_micros,
                    remaining_micros=b.limit_micros - spent_micros - reserved_micros,
                    percent_used=state.spent * 100 / state.limit_nanos,
                    exceeded=state.spent >= state.limit_nanos,
                    thresholds_reached=b.thresholds[: state.reported],
                    period_start_ms=state.start_ms,
                    period_end_ms=state.end_ms,
                    forecast_micros=forecast,
                )
            )
        return out

"""The collector's budgets: each one's spend in its current period, from the storage.

A collector enforces nothing (routers do, in their ``EventStore``); it reports. Given
budgets (``llmtally serve --budgets FILE``, see ``budget_file``), ``CollectorBudgets``
answers ``status()`` with the same ``BudgetStatus`` list an ``EventStore`` gives: spend so
far in the period holding now (from every replica's events, since it reads the shared
storage), limit, percent, thresholds reached, forecast to the period's end.

Spend is read from the rollups (``query.aggregate.cost_by``): one query per distinct
``(period range, facet)`` of the budgets, however many budgets share it, over a few
hundred hour rows for a month. Each budget's spend is exactly the sum of its matching
events' ``cost_nanos`` with ``period_start <= timestamp_ms < period_end`` (any time for
``"total"``, as far back as rollups are kept). The period maths, thresholds and forecast
are ``analysis.budgets``' own: the spend is restored into a ``BudgetBook``, which then
reports. Answers are cached for ``max_age_ms`` (the dashboard and ``/metrics`` may ask
often), and concurrent askers share one refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import anyio

from ..analysis.budgets import Budget, BudgetBook, BudgetStatus, period_bounds
from ..query.aggregate import cost_by
from ..storage.base import QueryStorage
from ..storage.rollups import HOUR_MS

__all__ = ["DEFAULT_MAX_AGE_MS", "CollectorBudgets"]

DEFAULT_MAX_AGE_MS: Final = 5_000
"""How long a computed status is served before the storage is asked again."""

_NEVER_MS: Final = 10**9 * HOUR_MS
"""The end of a ``"total"`` budget's range: whole hours, far past any timestamp."""

# A budget's scope -> the rollup facet holding its spend.
_FACET: Final = {"global": "", "agent_id": "agent", "provider_id": "provider_id", "model": "model"}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CollectorBudgets:
    """``budgets`` tracked over ``storage``; ``clock`` gives unix milliseconds.

    Raises ``ValidationError`` for duplicate budget ids, ``ValueError`` for a negative
    ``max_age_ms``. Touched from the event loop's thread only.
    """

    def __init__(
        self,
        storage: QueryStorage,
        budgets: Sequence[Budget] = (),
        *,
        clock: Callable[[], int] | None = None,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
    ) -> None:
        if max_age_ms < 0:
            raise ValueError("max_age_ms must be >= 0")
        self._storage = storage
        self._budgets = tuple(budgets)
        BudgetBook(self._budgets)  # validates: unique ids
        self._clock = clock or _wall_clock_ms
        self._max_age_ms = max_age_ms
        self._cached: list[BudgetStatus] = []
        self._computed_ms: int | None = None
        self._lock = anyio.Lock()

    def __len__(self) -> int:
        return len(self._budgets)

    def budgets(self) -> list[Budget]:
        """The budgets, in the order given."""
        return list(self._budgets)

    def cached(self) -> list[BudgetStatus]:
        """The last computed status (``[]`` before the first ``status()``), without I/O."""
        return list(self._cached)

    def _fresh(self, now_ms: int) -> bool:
        computed = self._computed_ms
        return computed is not None and 0 <= now_ms - computed < self._max_age_ms

    async def status(self) -> list[BudgetStatus]:
        """Every budget in its current period, in the order given: from the cache when it
        is younger than ``max_age_ms``, else computed now. Storage errors propagate (the
        cache is kept)."""
        if not self._budgets:
            return []
        if self._fresh(self._clock()):
            return list(self._cached)
        async with self._lock:
            now_ms = self._clock()
            if not self._fresh(now_ms):  # else another task refreshed while we waited
                spent = await self._spend(now_ms)
                # A fresh book each time: its periods are those of ``now_ms`` even if
                # the clock went back, and nothing carries over but the budgets.
                book = BudgetBook(self._budgets, now_ms=now_ms)
                book.restore(now_ms, spent)
                self._cached = book.status(now_ms)
                self._computed_ms = now_ms
            return list(self._cached)

    async def _spend(self, now_ms: int) -> dict[str, int]:
        """Each budget's spend (nano-dollars) in its period holding ``now_ms``."""
        ranges: list[tuple[Budget, tuple[int, int, str]]] = []
        for b in self._budgets:
            start, end = period_bounds(b.period, now_ms, b.timezone)
            ranges.append((b, (start, _NEVER_MS if end is None else end, _FACET[b.scope])))
        answers: dict[tuple[int, int, str], dict[str, int]] = {}
        for _, key in ranges:
            if key not in answers:
                answers[key] = await cost_by(self._storage, *key)
        return {b.id: answers[key].get(b.scope_value or "", 0) for b, key in ranges}

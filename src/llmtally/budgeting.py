"""Budgets in the store: the reservation handle, and spend restored from storage.

``BudgetReservation`` is what ``EventStore.reserve`` returns. Entering takes the hold
synchronously on the event loop's thread (check and hold are one step, so concurrent
reservations cannot together overshoot a hard budget); the request recorded through it
travels to the aggregator tagged with the reservation, which adds its spend and releases
the hold in one step. Leaving the block without recording releases the hold at once.

``current_spend`` computes each budget's spend so far in its current period from what is
stored, for a restart or a budget added at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from ._exceptions import StoreClosedError
from .analysis.budgets import Budget, Reservation, period_bounds
from .analysis.stats import Aggregate
from .events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, Severity
from .pipeline.aggregate import TaggedEvent
from .providers import Provider
from .storage.base import Cursor, EventFilter, EventStorage, QueryStorage

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["BudgetReservation", "SpendQuery", "current_spend"]

_SCAN_PAGE = 5_000


class BudgetReservation:
    """A hold on the hard budgets matching ``agent_id``/``provider_id``/``model`` for
    one upstream call; use as ``async with store.reserve(...) as r``.

    ``reservation`` is the hold (``None`` before entering). Record the call with
    ``r.record_llm_completed``/``r.record_llm_failed`` (same arguments as the store's;
    ``agent_id`` and ``provider_id`` default to the reservation's): such a record waits
    for room in the ingest buffer rather than being dropped, because the budget must see
    it. Each reservation settles once: a second record is a plain record.
    """

    __slots__ = (
        "_settled",
        "_store",
        "agent_id",
        "estimate_micros",
        "model",
        "provider_id",
        "reservation",
    )

    def __init__(
        self,
        store: EventStore,
        *,
        estimate_micros: int,
        agent_id: str | None,
        provider_id: str | None,
        model: str | None,
    ) -> None:
        self._store = store
        self.estimate_micros = estimate_micros
        self.agent_id = agent_id
        self.provider_id = provider_id
        self.model = model
        self.reservation: Reservation | None = None
        self._settled = False

    async def __aenter__(self) -> Self:
        """Take the hold; raises ``BudgetExceeded`` (nothing held) when there is no room."""
        if self.reservation is not None or self._settled:
            raise StoreClosedError("a reservation can be entered only once")
        store = self._store
        _, trackers = store.observed_state()
        # No await between the check and the hold: atomic on the event loop.
        self.reservation = trackers.budgets.reserve(
            store.now_ms(),
            self.estimate_micros,
            agent_id=self.agent_id,
            provider_id=self.provider_id,
            model=self.model,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the hold unless a recorded request settles it."""
        if self.reservation is not None and not self._settled:
            self._settled = True
            _, trackers = self._store.observed_state()
            trackers.budgets.release(self.reservation)

    def _take(self) -> Reservation:
        if self.reservation is None:
            raise StoreClosedError("record inside `async with store.reserve(...) as r:`")
        return self.reservation

    async def _record(self, event: AnalyticsEvent) -> AnalyticsEvent | None:
        reservation = self._take()
        settles = not self._settled
        self._settled = True
        item = TaggedEvent(event, reservation=reservation if settles else None)
        recorded: AnalyticsEvent | None = None
        try:
            recorded = await self._store._submit_tagged(item, wait=True)
        finally:
            if recorded is None and settles:
                # Not accepted (store closing, or cancelled while waiting for room):
                # nothing will settle the hold, so drop it now.
                _, trackers = self._store.observed_state()
                trackers.budgets.release(reservation)
        return recorded

    async def record_llm_completed(
        self,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        provider: Provider | str | None = None,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        duration_ms: float | None = None,
        ttft_ms: float | None = None,
        endpoint: str | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent | None:
        """``EventStore.record_llm_completed`` that settles this reservation. Returns the
        event, or ``None`` if the store is closed. Raises ``ValidationError``."""
        self._take()
        event = self._store._request_event(
            model,
            provider=provider,
            agent_id=agent_id or self.agent_id,
            provider_id=provider_id or self.provider_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_input_tokens=cache_write_input_tokens,
            duration_ms=duration_ms,
            ttft_ms=ttft_ms,
            endpoint=endpoint,
            correlation_id=correlation_id,
            parent_event_id=parent_event_id,
            severity=severity,
            tags=tags,
        )
        return await self._record(event)

    async def record_llm_failed(
        self,
        model: str,
        *,
        error_code: str,
        error_message: str | None = None,
        status_code: int | None = None,
        agent_id: str | None = None,
        provider_id: str | None = None,
        provider: Provider | str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        duration_ms: float | None = None,
        ttft_ms: float | None = None,
        endpoint: str | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent | None:
        """``EventStore.record_llm_failed`` that settles this reservation (with what the
        failed call consumed). Returns the event, or ``None`` if the store is closed."""
        self._take()
        event = self._store._request_event(
            model,
            provider=provider,
            agent_id=agent_id or self.agent_id,
            provider_id=provider_id or self.provider_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_input_tokens=cache_write_input_tokens,
            duration_ms=duration_ms,
            ttft_ms=ttft_ms,
            endpoint=endpoint,
            error=(error_code, error_message, status_code),
            correlation_id=correlation_id,
            parent_event_id=parent_event_id,
            severity=severity,
            tags=tags,
        )
        return await self._record(event)


# --- spend restored from storage --------------------------------------------------------


@runtime_checkable
class SpendQuery(Protocol):
    """What a storage may offer to restore budgets cheaply: the spend (nano-dollars) of
    request events with ``timestamp_ms >= start_ms`` matching every given dimension."""

    async def spend_since(
        self,
        start_ms: int,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> int: ...


def _dims(b: Budget) -> dict[str, str | None]:
    return {} if b.scope == "global" else {b.scope: b.scope_value}


async def current_spend(
    storage: EventStorage,
    aggregate: Aggregate,
    budgets: Sequence[Budget],
    now_ms: int,
) -> dict[str, int]:
    """Each budget's spend (nano-dollars) so far in its period holding ``now_ms``.

    ``"total"`` budgets: from the running totals (restored from the checkpoint, so events
    drained from storage still count). Periodic ones, in order of preference: the
    storage's ``spend_since`` (``SpendQuery``, one query per budget); its
    ``query_events`` keyset pages (``QueryStorage``) from the earliest period start, one
    pass for every budget; else one pass over ``snapshot()`` (every stored event in
    memory at once — only for a storage that answers no queries).
    """
    spent: dict[str, int] = {}
    periodic: list[tuple[Budget, int]] = []
    for b in budgets:
        if b.period == "total":
            spent[b.id] = _total_from(aggregate, b)
        else:
            periodic.append((b, period_bounds(b.period, now_ms, b.timezone)[0]))
    if not periodic:
        return spent
    if isinstance(storage, SpendQuery):
        for b, start in periodic:
            spent[b.id] = await storage.spend_since(start, **_dims(b))
        return spent
    for b, _ in periodic:
        spent[b.id] = 0
    earliest = min(start for _, start in periodic)
    if isinstance(storage, QueryStorage):
        flt = EventFilter(start_ms=earliest, end_ms=now_ms + 1)
        after: Cursor | None = None
        while True:
            page = await storage.query_events(flt, after=after, limit=_SCAN_PAGE)
            _charge_events(spent, periodic, page)
            if len(page) < _SCAN_PAGE:
                break
            after = (page[-1].timestamp_ms, page[-1].event_id)
        return spent
    _charge_events(spent, periodic, await storage.snapshot())
    return spent


def _charge_events(
    spent: dict[str, int], periodic: list[tuple[Budget, int]], events: Iterable[AnalyticsEvent]
) -> None:
    for e in events:
        p = e.payload
        if isinstance(p, LlmRequestCompleted | LlmRequestFailed) and p.cost_nanos:
            _charge(
                spent, periodic, e.timestamp_ms, p.cost_nanos, e.agent_id, p.provider_id, p.model
            )


def _charge(
    spent: dict[str, int],
    periodic: Iterable[tuple[Budget, int]],
    ts: int,
    cost: int,
    agent_id: str | None,
    provider_id: str | None,
    model: str,
) -> None:
    for b, start in periodic:
        if ts >= start and b.matches(agent_id=agent_id, provider_id=provider_id, model=model):
            spent[b.id] += cost


def _total_from(aggregate: Aggregate, b: Budget) -> int:
    total = 0
    for (model, _, agent_id, provider_id), t in aggregate.series.items():
        if b.matches(agent_id=agent_id or None, provider_id=provider_id or None, model=model):
            total += t.cost_nanos
    return total

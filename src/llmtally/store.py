"""``EventStore``: the facade a router embeds. Owns the streams and the actors' TaskGroup.

::

    record*() ──▶ [ingest stream, capacity N] ──▶ aggregate ──▶ [batches] ──▶ persist ──▶ storage
                  drop_newest | block               stats,        (size/time,
                                                    fan-out       1 txn each)

Runtime conditions never raise into the caller: a full buffer, a failing disk, a closed
store — each is counted (``dropped_count()``, ``stats()``). Only invalid arguments raise
``ValidationError``, and using a store that was never opened raises ``StoreClosedError``.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from decimal import Decimal
from fractions import Fraction
from types import TracebackType
from typing import Literal, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _envelope as env
from . import _validation as v
from ._config import SyncConfig
from ._exceptions import ConfigurationError, StoreClosedError, ValidationError
from ._ids import new_event_id
from .analysis.budgets import Budget, BudgetStatus
from .analysis.errors import ErrorPatternsSnapshot
from .analysis.slo import HOUR_MS, SloStatus
from .analysis.stats import Aggregate, ComputedStats, StatsDelta
from .analysis.streaming import StreamingSnapshot
from .analysis.trackers import Trackers
from .budgeting import BudgetReservation, current_spend
from .events import (
    AnalyticsEvent,
    BudgetThresholdReached,
    EventPayload,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    RouterStopped,
    nanos_to_micros,
    request_payload,
)
from .pipeline.aggregate import IngestItem, TaggedEvent, aggregate
from .pipeline.fanout import Fanout, Subscription
from .pipeline.messages import Barrier, IngestWake, Nudge, PersistBatch
from .pipeline.persist import persist
from .pipeline.sync import (
    INBOX_CAPACITY,
    SyncHooks,
    SyncMessage,
    SyncRequest,
    SyncResult,
    SyncState,
    ingest_url,
    outbox_for,
    sync,
)
from .pricing import PricingManager
from .providers import Provider, infer_provider
from .storage.base import EventStorage, QueryStorage
from .storage.memory import MemoryStorage
from .storage.rows import SYNCED
from .storage.sqlite import SqliteStorage, Synchronous, Writer
from .streams import StreamTracker

__all__ = ["EventStore", "Overflow"]

logger = logging.getLogger("llmtally")

_MAX_ID = v.MAX_ID_LENGTH
_MAX_COUNT = v.MAX_COUNT
_MAX_MS = v.MAX_DURATION_MS
_is_ref = env.is_ref
ENVIRONMENT_VARIABLE = "LLMTALLY_ENVIRONMENT"

Overflow = Literal["drop_newest", "block"]


class _State(enum.Enum):
    UNOPENED = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_DEFAULT_PRICING: list[PricingManager] = []


_MAX_BATCH = 2_000  # the most events the aggregator takes in one batch


def _default_pricing() -> PricingManager:
    # One bundled price table per process: resolving prices is costly, results are shared.
    if not _DEFAULT_PRICING:
        _DEFAULT_PRICING.append(PricingManager())
    return _DEFAULT_PRICING[0]


class EventStore:
    """Embedded analytics store. Use as ``async with EventStore(...) as store:``.

    Args:
        path: SQLite file (created with its folder), or ``None`` to keep a bounded
            in-memory history of ``history`` events instead.
        capacity: bound of the ingest buffer (events accepted, not yet aggregated).
        overflow: ``"drop_newest"`` (default) — ``record*`` never waits; an event that
            does not fit is dropped and counted. ``"block"`` — ``await record*`` waits for
            room (back-pressure); ``record_nowait`` still drops.
        pricing: prices for cost; default: genai-prices' bundled data.
        sync: where to sync request events (``SyncConfig``), or ``None``.
        batch_size, batch_linger: the persister writes when this many events wait, or
            when the oldest has waited this many seconds (default 1,000 / 0.05 s); a
            write takes up to 4x ``batch_size`` events when a backlog has queued them.
        aggregate_linger: when the aggregator wakes for an event and finds fewer than 8
            waiting, it waits up to this many seconds (default 0.005) for more before
            counting them, so events that trickle in one at a time (an HTTP client
            awaiting each call) share the per-batch cost instead of paying it each. A
            ``flush()``, the buffer filling up (``capacity // 8`` more events) and
            closing the store cut it short; ``0`` turns it off, and so does a
            ``capacity`` under 64. Stats, trackers and live subscribers see an event at
            most this much later (``await flush()`` is current as before).
        drain_timeout: leaving ``async with`` waits at most this long (s) for the
            pipeline to write what it accepted; the hard backstop, not the plan. With
            ``sync``, the syncer's last round (``sync.shutdown_timeout``) comes on top.
        synchronous: SQLite durability: ``"NORMAL"`` (survives a process crash) or
            ``"FULL"`` (survives power loss).
        subscriber_capacity: buffer of each live subscriber.
        max_keys: cardinality bound of each stats view (by model/provider/agent/key).
        clock: unix-milliseconds clock for event timestamps (injectable for tests).
        storage: a storage backend to use instead of ``path`` (advanced, tests).
        sync_hooks: the syncer's sleep, clock, jitter and HTTP transport (tests).
        budgets: spending budgets (``Budget``) to track from the start; their spend so
            far in the current period is restored from storage on open.
        monotonic: monotonic clock in integer nanoseconds for ``track_stream``
            (default ``time.perf_counter_ns``; injectable for tests).
        max_error_patterns: bound of the error-pattern table (LRU beyond it).
        environment: the ``environment`` of every event this store builds
            (``"production"``, ``"staging"``, …); default: ``$LLMTALLY_ENVIRONMENT``,
            else none. Pre-built events passed to ``record`` keep their own.
        max_pending_events: with ``sync``, the most request events kept on disk (or in
            memory) not yet accepted by the collector, events on their way to disk
            included (default 1,000,000; ``None``: no bound). While the collector is
            down the outbox grows; once it holds this many, new events are dropped —
            counted in ``stats().dropped_by_cause["pending_limit"]`` — instead of
            filling the disk, and recording resumes as soon as a sync drains it.
        retention_interval: every this many seconds (``None``, the default: never),
            delete stored events older than the storage's raw-event TTL (30 days for
            SQLite) that are synced or refused — never a pending one — and old rollup
            rows (``storage.expire``). With ``max_pending_events`` this bounds the disk.
            A monthly budget may then forget, on restart, spend older than the TTL.
        writer: where SQLite writes happen: ``"thread"`` (default) or ``"process"`` — a
            child process that runs the inserts beside the event loop instead of
            competing with it for the GIL: about twice the sustained event rate on two
            cores, and the router's loop keeps its CPU. Costs one process and ~0.1 s at
            open. Ignored with ``path=None`` or ``storage``.

    Beside ``stats()`` the aggregator keeps ``error_patterns()``, ``slo_status()``,
    ``streaming_stats()`` and the budgets (``budget_status()``, ``check_budget()``,
    ``reserve()``). Stats and budget spend are restored from storage on open; error
    patterns, SLO counts and streaming statistics start afresh with each open.
    """

    # The ingest stream exists from ``__aenter__`` on; the state check guards every use.
    _ingest_tx: MemoryObjectSendStream[IngestItem]
    _ingest_rx: MemoryObjectReceiveStream[IngestItem]

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        capacity: int = 10_000,
        overflow: Overflow = "drop_newest",
        pricing: PricingManager | None = None,
        sync: SyncConfig | None = None,
        history: int = 10_000,
        batch_size: int = 1_000,
        batch_linger: float = 0.05,
        aggregate_linger: float = 0.005,
        drain_timeout: float = 10.0,
        synchronous: Synchronous = "NORMAL",
        subscriber_capacity: int = 1_000,
        max_keys: int = 10_000,
        clock: Callable[[], int] | None = None,
        storage: EventStorage | None = None,
        sync_hooks: SyncHooks | None = None,
        budgets: Iterable[Budget] = (),
        monotonic: Callable[[], int] | None = None,
        max_error_patterns: int = 1_000,
        environment: str | None = None,
        max_pending_events: int | None = 1_000_000,
        retention_interval: float | None = None,
        writer: Writer = "thread",
    ) -> None:
        if environment is None:
            try:
                environment = env.check_environment(os.environ.get(ENVIRONMENT_VARIABLE))
            except ValidationError as exc:
                raise ConfigurationError(f"${ENVIRONMENT_VARIABLE}: {exc}") from None
        self.environment = env.check_environment(environment)
        if type(capacity) is not int or capacity < 1:
            raise ValidationError(f"capacity must be a positive int, got {capacity!r}")
        if overflow not in ("drop_newest", "block"):
            raise ValidationError(f"overflow must be 'drop_newest' or 'block', got {overflow!r}")
        if batch_size < 1 or batch_linger < 0 or drain_timeout < 0 or not aggregate_linger >= 0:
            raise ValidationError(
                "batch_size must be ≥ 1; batch_linger, aggregate_linger, drain_timeout ≥ 0"
            )
        if max_pending_events is not None and (
            type(max_pending_events) is not int or max_pending_events < 1
        ):
            raise ValidationError(
                f"max_pending_events must be a positive int or None, got {max_pending_events!r}"
            )
        if retention_interval is not None and not retention_interval > 0:
            raise ValidationError(
                f"retention_interval must be positive, got {retention_interval!r}"
            )
        # Only a syncing store drains its outbox: without sync, rows stay pending for good.
        self._max_pending = None if sync is None else max_pending_events
        self._retention_interval = retention_interval
        self._retention_scope: anyio.CancelScope | None = None
        self.path = None if path is None else os.fspath(path)
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self.sync_config = sync
        self._pricing = pricing
        self._batch_size = batch_size
        self._batch_linger = batch_linger
        # The aggregator's linger (see ``pipeline.aggregate``). Every producer counts its
        # accepted items on the wake; a capacity under 64 or a zero linger disables it.
        threshold = min(_MAX_BATCH, capacity // 8)
        self._wake = IngestWake(aggregate_linger, threshold)
        self._lingers = aggregate_linger > 0 and threshold >= 8
        # The syncer's last round starts once everything is written: it adds its own bound.
        self._drain_timeout = drain_timeout + (0.0 if sync is None else sync.shutdown_timeout)
        if sync is not None:
            ingest_url(sync.server_url)  # raises ConfigurationError now, not in __aenter__
        self._sync_state = None if sync is None else SyncState()
        self._sync_hooks = sync_hooks
        self._sync_tx: MemoryObjectSendStream[SyncMessage] | None = None
        self._clock = clock or _wall_clock_ms
        if storage is None:
            storage = (
                MemoryStorage(history=history)
                if path is None
                else SqliteStorage(
                    path, synchronous=synchronous, on_corrupt="move_aside", writer=writer
                )
            )
        self._storage: EventStorage = storage
        self._aggregate = Aggregate(max_keys=max_keys)
        self._fanout = Fanout(capacity=subscriber_capacity)
        self._state = _State.UNOPENED
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        # Half-full is where ``await record*`` starts yielding to the loop so the
        # aggregator drains the buffer even when a producer never awaits anything else.
        self._yield_at = max(1, capacity // 2 - 64)
        # Counters (only ever touched from the event loop's thread).
        self._attempted = 0
        self._accepted = 0
        self._dropped: Counter[str] = Counter()
        self._persisted = 0
        self._persist_errors = 0
        self._stored = 0
        self._pending = 0
        self._outbox_drops_seen = 0
        self._provider_of: dict[str, str] = {}
        # Fed by the aggregator actor (see ``pipeline.aggregate``). Callers on the event
        # loop's thread read snapshots and take or drop budget holds — each a synchronous
        # call, so no lock is needed and a check-then-hold is atomic.
        self._monotonic = monotonic or time.perf_counter_ns
        self._trackers = Trackers(
            budgets, now_ms=self._clock(), max_patterns=max_error_patterns, max_models=max_keys
        )
        self._emitted = 0  # budget-threshold events the aggregator added
        self._actor_scopes: list[anyio.CancelScope] = []  # see ``_shielded``

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise StoreClosedError("an EventStore can be opened only once; create a new one")
        if self._pricing is None:
            self._pricing = await anyio.to_thread.run_sync(_default_pricing)
        self._ingest_tx, self._ingest_rx = anyio.create_memory_object_stream[IngestItem](
            self.capacity
        )
        self._ingest_stats = self._ingest_tx.statistics
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._storage.open()
            stack.push_async_callback(self._storage.close)
            totals = await self._storage.load_totals()
            self._aggregate.apply(totals)
            self._stored = await self._storage.count_events()
            self._pending = await self._storage.count_pending()
            budgets = self._trackers.budgets.budgets()
            if budgets:
                now = self._clock()
                spent = await current_spend(self._storage, self._aggregate, budgets, now)
                self._trackers.budgets.restore(now, spent)
            stack.callback(self._fanout.close)
            committed_tx: MemoryObjectSendStream[int] | None = None
            if self.sync_config is not None:
                # The syncer reads the outbox through its own connection (see outbox_for).
                outbox = outbox_for(self._storage)
                if outbox is not self._storage:
                    await outbox.open()
                    stack.push_async_callback(outbox.close)
                sync_tx, sync_rx = anyio.create_memory_object_stream[SyncMessage](INBOX_CAPACITY)
                committed_tx = sync_tx.clone()  # the persister's end: its EOF ends the syncer
                stack.callback(sync_rx.close)  # (idempotent) for a failure before it starts
                stack.callback(committed_tx.close)
            self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
            if self.sync_config is not None:
                self._sync_tx = sync_tx
                stack.callback(sync_tx.close)  # on exit, before the actors drain: no sync_now
            persist_tx, persist_rx = anyio.create_memory_object_stream[PersistBatch](
                max(2, self.capacity // self._batch_size)
            )
            nudge = Nudge(self._batch_size)
            aggregator = functools.partial(
                aggregate,
                trackers=self._trackers,
                on_emitted=self._on_emitted,
                nudge=nudge,
                environment=self.environment,
                max_batch=_MAX_BATCH,
                wake=self._wake if self._lingers else None,
            )
            await tg.start(
                self._shielded,
                aggregator,
                self._ingest_rx,
                persist_tx,
                self._aggregate,
                self._fanout,
            )
            await tg.start(
                self._shielded, self._run_persister, persist_rx, totals, committed_tx, nudge
            )
            if self.sync_config is not None:
                assert self._sync_state is not None
                syncer = functools.partial(
                    sync,
                    outbox=outbox,
                    config=self.sync_config,
                    state=self._sync_state,
                    pending_count=self.unsynced_count,
                    on_marked=self._on_synced,
                    hooks=self._sync_hooks,
                )
                await tg.start(self._shielded, syncer, sync_rx)
            if self._retention_interval is not None and isinstance(self._storage, QueryStorage):
                self._retention_scope = anyio.CancelScope()
                tg.start_soon(self._run_retention, self._storage, self._retention_interval)
        except BaseException as exc:
            self._state = _State.CLOSED
            self._close_ingest()  # end-of-stream for an aggregator that did start
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                self._ingest_rx.close()  # for one that did not
            raise
        self._stack = stack
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSING
        assert self._stack is not None and self._tg is not None
        if self._retention_scope is not None:
            self._retention_scope.cancel()  # a loop without end: not part of the drain
        # Graceful stop: close the head stream and let end-of-stream cascade through the
        # actors. The body may have been cancelled: shield the drain, bounded by a deadline.
        self._close_ingest()
        scope = self._tg.cancel_scope
        scope.shield = True
        scope.deadline = anyio.current_time() + self._drain_timeout
        for actor in self._actor_scopes:
            actor.deadline = scope.deadline
        try:
            await self._stack.aclose()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._state = _State.CLOSED
            if scope.cancelled_caught or any(a.cancelled_caught for a in self._actor_scopes):
                logger.error("llmtally: shutdown deadline (%.1fs) reached", self._drain_timeout)
            # Cut off by the deadline before the persister had them (in the ingest buffer,
            # the aggregator or the persister's queue): lost too, and counted as such.
            stranded = self.unpersisted_count()
            if stranded > 0:
                self._on_persist_lost(stranded)

    async def _shielded(
        self,
        actor: Callable[..., Awaitable[None]],
        *args: object,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``actor`` shielded from outside cancellation: cancelling the body of
        ``async with`` (a timeout around the router, a cancelled task group — the body
        runs inside the actors' task group) must not reach the actors while they hold
        accepted events. ``__aexit__`` drains them, bounded by ``drain_timeout`` through
        the scope's deadline."""
        with anyio.CancelScope(shield=True) as scope:
            self._actor_scopes.append(scope)
            await actor(*args, task_status=task_status)

    async def _run_persister(
        self,
        rx: anyio.streams.memory.MemoryObjectReceiveStream[PersistBatch],
        totals: StatsDelta,
        committed_tx: MemoryObjectSendStream[int] | None = None,
        nudge: Nudge | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        await persist(
            rx,
            self._storage,
            totals,
            batch_size=self._batch_size,
            linger=self._batch_linger,
            on_committed=self._on_committed,
            on_error=self._on_persist_error,
            on_lost=self._on_persist_lost,
            committed_tx=committed_tx,
            nudge=nudge,
            task_status=task_status,
        )

    async def _run_retention(self, storage: QueryStorage, interval_s: float) -> None:
        """Expire old rows now and every ``interval_s`` (by the store's clock) until the
        store closes; a failed pass is logged and the next one tries again."""
        assert self._retention_scope is not None
        with self._retention_scope:
            while True:
                try:
                    result = await storage.expire(self._clock())
                except Exception:
                    logger.warning("llmtally: retention pass failed", exc_info=True)
                else:
                    self._stored -= result.events
                await anyio.sleep(interval_s)

    def _close_ingest(self) -> None:
        """End of stream for the aggregator (a lingering one included)."""
        self._ingest_tx.close()
        self._wake.fire()

    def _on_emitted(self, n: int) -> None:
        self._emitted += n

    def _on_committed(self, events: list[AnalyticsEvent]) -> None:
        n = len(events)
        self._persisted += n
        self._stored += n
        pending = 0
        for e in events:
            if not e.synced and type(e.payload) in (LlmRequestCompleted, LlmRequestFailed):
                pending += 1
        self._pending += pending
        outbox_drops = getattr(self._storage, "pending_dropped", 0)
        if outbox_drops != self._outbox_drops_seen:
            fresh = outbox_drops - self._outbox_drops_seen
            self._outbox_drops_seen = outbox_drops
            self._pending -= fresh
            self._dropped["outbox_full"] += fresh
        if isinstance(self._storage, MemoryStorage):
            self._stored = len(self._storage)  # a bounded history: old events fall off

    def _on_persist_error(self, exc: Exception, attempt: int) -> None:
        self._persist_errors += 1
        if attempt & (attempt - 1) == 0:  # 1, 2, 4, 8, ...: a failing disk must not flood logs
            logger.warning(
                "llmtally: writing events failed (attempt %d), retrying: %s", attempt, exc
            )

    def _on_persist_lost(self, count: int) -> None:
        self._dropped["persist_failed"] += count
        logger.error("llmtally: %d accepted events could not be written before shutdown", count)

    # --- producing ---------------------------------------------------------------------

    def _closed_drop(self) -> None:
        if self._state is _State.UNOPENED:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        self._attempted += 1
        self._dropped["closed"] += 1

    def _outbox_full(self) -> bool:
        """Whether ``max_pending_events`` is reached (events on their way to disk count)."""
        limit = self._max_pending
        if limit is None or self._pending + self._accepted - self._persisted < limit:
            return False
        self._dropped["pending_limit"] += 1
        return True

    async def _submit(self, event: AnalyticsEvent) -> AnalyticsEvent | None:
        if self._state is not _State.OPEN:
            self._closed_drop()
            return None
        self._attempted += 1
        if self._max_pending is not None and self._outbox_full():
            return None
        try:
            self._ingest_tx.send_nowait(event)
        except anyio.WouldBlock:
            if self.overflow == "drop_newest":
                self._dropped["buffer_full"] += 1
                return None
            try:
                await self._ingest_tx.send(event)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._dropped["closed"] += 1
                return None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._dropped["closed"] += 1
            return None
        self._accepted += 1
        wake = self._wake
        wake.left -= 1
        if not wake.left:
            wake.fire()  # the buffer is filling: the aggregator must stop lingering
        # Reading the depth costs about a microsecond: look every 64th event only.
        if not self._accepted & 63 and self._ingest_stats().current_buffer_used >= self._yield_at:
            await anyio.lowlevel.checkpoint()
        return event

    def record_nowait(self, event: AnalyticsEvent) -> bool:
        """Offer a pre-built event without waiting (for synchronous callers on the event
        loop's thread). Returns ``False`` when it was dropped (buffer full or store closed;
        counted). Raises ``ValidationError`` for an invalid event."""
        v.check_event(event)
        if self._state is not _State.OPEN:
            self._closed_drop()
            return False
        self._attempted += 1
        if self._max_pending is not None and self._outbox_full():
            return False
        try:
            self._ingest_tx.send_nowait(event)
        except anyio.WouldBlock:
            self._dropped["buffer_full"] += 1
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._dropped["closed"] += 1
            return False
        self._accepted += 1
        wake = self._wake
        wake.left -= 1
        if not wake.left:
            wake.fire()
        return True

    async def record(self, event: AnalyticsEvent) -> AnalyticsEvent | None:
        """Record a pre-built event. Returns it, or ``None`` when dropped (counted).

        Stored once per ``event_id``; ``stats()`` counts each call (an id recorded twice
        counts twice there): a new event needs a new id."""
        v.check_event(event)
        return await self._submit(event)

    def _new_event(
        self,
        payload: EventPayload,
        agent_id: object,
        timestamp_ms: object,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: env.Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent:
        """The event of ``payload`` with the store's environment; the envelope arguments
        are checked already (``severity=None``: the payload's default)."""
        now = self._clock()
        ts = now if timestamp_ms is None else v.check_timestamp(timestamp_ms)
        return AnalyticsEvent(
            event_id=new_event_id(now),
            timestamp_ms=ts,
            payload=payload,
            agent_id=v.check_optional_id("agent_id", agent_id),
            correlation_id=correlation_id,
            parent_event_id=parent_event_id,
            severity=severity,
            environment=self.environment,
            tags=tags,
        )

    def _usage(
        self,
        model: object,
        provider: object,
        input_tokens: object,
        output_tokens: object,
        cached_input_tokens: object,
        cache_write_input_tokens: object,
    ) -> tuple[str, str, int, int, int, int, int, Literal["priced", "unpriced"]]:
        m = v.check_id("model", model)
        p = self._infer(m) if provider is None else v.check_id("provider", provider)
        i = v.check_count("input_tokens", input_tokens)
        o = v.check_count("output_tokens", output_tokens)
        c = v.check_count("cached_input_tokens", cached_input_tokens)
        w = v.check_count("cache_write_input_tokens", cache_write_input_tokens)
        if c + w > i:
            raise ValidationError(
                "cached_input_tokens + cache_write_input_tokens must not exceed input_tokens "
                f"(the total input, cache parts included): {c} + {w} > {i}"
            )
        assert self._pricing is not None
        cost, status = self._pricing.cost(m, p, i, o, c, w)
        return m, p, i, o, c, w, v.check_cost(cost), status

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
        timestamp_ms: int | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: env.Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent | None:
        """Record a successful upstream LLM call; cost and provider are filled in.

        ``input_tokens`` is the total input, cache reads and writes included. The envelope:
        ``correlation_id``/``parent_event_id`` trace the request across services,
        ``severity`` (``None``: ``"info"``), ``tags`` a small ``str → str`` map (limits
        in ``llmtally._envelope``). Returns the accepted event, or ``None`` when it was
        dropped (buffer full or store closed; counted). Raises ``ValidationError`` for
        invalid arguments (nothing recorded).
        """
        pricing = self._pricing
        if pricing is None:
            self._closed_drop()
            return None
        # The hot path: one inline check of the common case (plain str/int/float values
        # in range). Anything else goes through the checks that explain what is wrong.
        if (
            type(model) is str
            and 0 < len(model) <= _MAX_ID
            and model.isascii()
            and type(input_tokens) is int
            and type(output_tokens) is int
            and type(cached_input_tokens) is int
            and type(cache_write_input_tokens) is int
            and cached_input_tokens >= 0
            and cache_write_input_tokens >= 0
            and cached_input_tokens + cache_write_input_tokens <= input_tokens <= _MAX_COUNT
            and 0 <= output_tokens <= _MAX_COUNT
            and (
                duration_ms is None
                or (type(duration_ms) is float and 0.0 <= duration_ms <= _MAX_MS)
            )
            and (ttft_ms is None or (type(ttft_ms) is float and 0.0 <= ttft_ms <= _MAX_MS))
            and (
                agent_id is None
                or (type(agent_id) is str and 0 < len(agent_id) <= _MAX_ID and agent_id.isascii())
            )
            and (
                provider_id is None
                or (
                    type(provider_id) is str
                    and 0 < len(provider_id) <= _MAX_ID
                    and provider_id.isascii()
                )
            )
            and timestamp_ms is None
            and (
                correlation_id is None or (type(correlation_id) is str and _is_ref(correlation_id))
            )
            and parent_event_id is None
            and severity is None
            and tags is None
        ):
            if provider is None:
                p = self._provider_of.get(model)
                if p is None:
                    p = self._infer(model)
            else:
                p = v.check_id("provider", provider)
            cost, status = pricing.cost(
                model, p, input_tokens, output_tokens, cached_input_tokens, cache_write_input_tokens
            )
            if cost > _MAX_COUNT:
                v.check_cost(cost)  # raises
            now = self._clock()
            event = AnalyticsEvent(
                event_id=new_event_id(now),
                timestamp_ms=now,
                payload=LlmRequestCompleted(
                    model=model,
                    provider=p,
                    provider_id=provider_id,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cached_input_tokens=cached_input_tokens,
                    cache_write_input_tokens=cache_write_input_tokens,
                    cost_nanos=cost,
                    pricing_status=status,
                    duration_ms=duration_ms,
                    ttft_ms=ttft_ms,
                ),
                agent_id=agent_id,
                correlation_id=correlation_id,
                environment=self.environment,
            )
            return await self._submit(event)
        return await self._submit(
            self._request_event(
                model,
                provider=provider,
                agent_id=agent_id,
                provider_id=provider_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_input_tokens,
                cache_write_input_tokens=cache_write_input_tokens,
                duration_ms=duration_ms,
                ttft_ms=ttft_ms,
                timestamp_ms=timestamp_ms,
                correlation_id=correlation_id,
                parent_event_id=parent_event_id,
                severity=severity,
                tags=tags,
            )
        )

    def _infer(self, model: str) -> str:
        """The provider of ``model`` by name, remembered in a bounded map."""
        p = infer_provider(model).value
        if len(self._provider_of) >= 4_096:
            self._provider_of.clear()
        self._provider_of[model] = p
        return p

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
        timestamp_ms: int | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: env.Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent | None:
        """Record a failed upstream LLM call (tokens: what was consumed anyway).

        ``error_message`` is truncated to 2,000 characters; ``severity`` ``None`` means
        ``"error"`` (the envelope as in ``record_llm_completed``). Returns the accepted
        event or ``None`` when dropped; raises ``ValidationError`` for invalid arguments.
        """
        if self._pricing is None:
            self._closed_drop()
            return None
        return await self._submit(
            self._request_event(
                model,
                provider=provider,
                agent_id=agent_id,
                provider_id=provider_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_input_tokens,
                cache_write_input_tokens=cache_write_input_tokens,
                duration_ms=duration_ms,
                ttft_ms=ttft_ms,
                error=(error_code, error_message, status_code),
                timestamp_ms=timestamp_ms,
                correlation_id=correlation_id,
                parent_event_id=parent_event_id,
                severity=severity,
                tags=tags,
            )
        )

    async def record_budget_threshold(
        self,
        threshold_percent: int,
        *,
        current_spend_micros: int,
        budget_micros: int,
        agent_id: str | None = None,
        budget_id: str | None = None,
        timestamp_ms: int | None = None,
    ) -> AnalyticsEvent | None:
        """Record that spend crossed ``threshold_percent`` of a budget (kept locally)."""
        payload = BudgetThresholdReached(
            threshold_percent=v.check_count("threshold_percent", threshold_percent),
            current_spend_micros=v.check_count("current_spend_micros", current_spend_micros),
            budget_micros=v.check_count("budget_micros", budget_micros),
            budget_id=v.check_optional_id("budget_id", budget_id),
        )
        return await self._submit(self._new_event(payload, agent_id, timestamp_ms))

    async def record_router_started(
        self, port: int | None = None, *, timestamp_ms: int | None = None
    ) -> AnalyticsEvent | None:
        """Record that the router started (kept locally)."""
        if port is not None and (type(port) is not int or not 0 <= port <= 65535):
            raise ValidationError(f"port must be an int within 0..65535, got {port!r}")
        return await self._submit(self._new_event(RouterStarted(port=port), None, timestamp_ms))

    async def record_router_stopped(
        self, *, timestamp_ms: int | None = None
    ) -> AnalyticsEvent | None:
        """Record that the router stopped; the payload carries the totals at this moment
        (after a ``flush()``, so every request recorded before counts)."""
        if self._state is _State.OPEN:
            await self.flush()
        t = self._aggregate.totals()
        payload = RouterStopped(
            total_requests=t.requests,
            failed_requests=t.failed_requests,
            total_input_tokens=t.input_tokens,
            total_output_tokens=t.output_tokens,
            total_cost_micros=nanos_to_micros(t.cost_nanos),
        )
        return await self._submit(self._new_event(payload, None, timestamp_ms))

    @property
    def pricing(self) -> PricingManager:
        """The prices this store costs events with (available once the store is open)."""
        if self._pricing is None:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        return self._pricing

    def now_ms(self) -> int:
        """The store's clock (unix milliseconds; injectable with ``clock=``)."""
        return self._clock()

    # --- streams and budgets -----------------------------------------------------------

    def track_stream(
        self,
        model: str,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        provider: Provider | str | None = None,
        endpoint: str | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> StreamTracker:
        """Measure one streamed LLM call and record it when the block ends::

            async with store.track_stream("gpt-4o", agent_id="a7") as s:
                async for chunk in upstream:
                    s.token()                       # or s.token(n) for n tokens
                s.usage(input_tokens=812, output_tokens=240)   # if the upstream says

        Leaving the block records ``llm_request_completed`` with ``duration_ms``,
        ``ttft_ms``, ``itl_mean_ms``, ``itl_p95_ms`` and ``output_tokens_per_s``; without
        ``usage()`` the counted tokens are the output, input is 0 and
        ``usage_missing=True``. An exception in the block records ``llm_request_failed``
        (``error_code`` = the exception's class name, ``"cancelled"`` for a cancellation;
        the status code of an HTTP error) and propagates. The record of a cancelled or
        failed block is shielded from the cancellation, for at most
        ``streams.RECORD_TIMEOUT_S``. ``streaming_stats()`` shows the stream as active
        while the block runs. ``correlation_id``, ``parent_event_id`` and ``tags`` go on
        the record (see ``record_llm_completed``).

        Raises ``ValidationError`` for invalid arguments (before the block runs) and
        ``StoreClosedError`` before the store is opened.
        """
        if self._pricing is None:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        m = v.check_id("model", model)
        return StreamTracker(
            self,
            model=m,
            provider=self._infer(m) if provider is None else v.check_id("provider", provider),
            agent_id=v.check_optional_id("agent_id", agent_id),
            provider_id=v.check_optional_id("provider_id", provider_id),
            endpoint=v.check_optional_id("endpoint", endpoint),
            monotonic=self._monotonic,
            correlation_id=env.check_ref("correlation_id", correlation_id),
            parent_event_id=env.check_ref("parent_event_id", parent_event_id),
            tags=env.check_tags(tags),
        )

    def _request_event(
        self,
        model: str,
        *,
        provider: Provider | str | None,
        agent_id: str | None,
        provider_id: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        cache_write_input_tokens: int,
        duration_ms: float | None,
        ttft_ms: float | None,
        error: tuple[str, str | None, int | None] | None = None,
        itl_mean_ms: float | None = None,
        itl_p95_ms: float | None = None,
        output_tokens_per_s: float | None = None,
        usage_missing: bool = False,
        endpoint: str | None = None,
        timestamp_ms: int | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
        severity: env.Severity | None = None,
        tags: dict[str, str] | None = None,
    ) -> AnalyticsEvent:
        """A validated request event with its cost (``error``: code, message, status →
        failed). For ``track_stream`` and reservations; raises ``ValidationError``."""
        if self._pricing is None:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        m, p, i, o, c, w, cost, status = self._usage(
            model,
            provider,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_input_tokens,
        )
        pid = v.check_optional_id("provider_id", provider_id)
        duration = v.check_duration("duration_ms", duration_ms)
        ttft = v.check_duration("ttft_ms", ttft_ms)
        itl_mean = v.check_duration("itl_mean_ms", itl_mean_ms)
        itl_p95 = v.check_duration("itl_p95_ms", itl_p95_ms)
        rate = v.check_duration("output_tokens_per_s", output_tokens_per_s)
        ep = v.check_optional_id("endpoint", endpoint)
        checked_error = (
            None
            if error is None
            else (
                v.check_id("error_code", error[0]),
                v.check_message(error[1]),
                v.check_status(error[2]),
            )
        )
        payload = request_payload(
            checked_error,
            model=m,
            provider=p,
            provider_id=pid,
            input_tokens=i,
            output_tokens=o,
            cached_input_tokens=c,
            cache_write_input_tokens=w,
            cost_nanos=cost,
            pricing_status=status,
            duration_ms=duration,
            ttft_ms=ttft,
            itl_mean_ms=itl_mean,
            itl_p95_ms=itl_p95,
            output_tokens_per_s=rate,
            usage_missing=bool(usage_missing),
            endpoint=ep,
        )
        return self._new_event(
            payload,
            agent_id,
            timestamp_ms,
            env.check_ref("correlation_id", correlation_id),
            env.check_ref("parent_event_id", parent_event_id),
            env.check_severity(severity),
            env.check_tags(tags),
        )

    async def _submit_tagged(self, item: TaggedEvent, *, wait: bool) -> AnalyticsEvent | None:
        """``_submit`` for a tagged event. ``wait=True`` waits for room whatever the
        overflow policy (a reserved call's record must not be lost)."""
        if self._state is not _State.OPEN:
            self._closed_drop()
            return None
        self._attempted += 1
        if self._max_pending is not None and self._outbox_full():
            return None
        try:
            self._ingest_tx.send_nowait(item)
        except anyio.WouldBlock:
            if not wait and self.overflow == "drop_newest":
                self._dropped["buffer_full"] += 1
                return None
            try:
                await self._ingest_tx.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._dropped["closed"] += 1
                return None
            except anyio.get_cancelled_exc_class():
                self._dropped["cancelled"] += 1
                raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._dropped["closed"] += 1
            return None
        self._accepted += 1
        wake = self._wake
        wake.left -= 1
        if not wake.left:
            wake.fire()
        return item.event

    def reserve(
        self,
        *,
        estimate_micros: int,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> BudgetReservation:
        """Hold ``estimate_micros`` on the matching hard budgets while a call is in flight::

            async with store.reserve(agent_id="a7", estimate_micros=20_000) as r:
                response = await upstream(...)
                await r.record_llm_completed("gpt-4o", input_tokens=..., output_tokens=...)

        Entering raises ``BudgetExceeded`` (before the call) when a matching hard budget
        has no room for the estimate, counting spend and every other hold: concurrent
        reservations can never together overshoot a hard limit. The hold is replaced by
        the real cost when the request recorded through ``r`` is aggregated (never both,
        never neither); leaving the block without recording releases it. Holds expire
        after 10 minutes. Raises ``ValidationError`` for a bad estimate.
        """
        if self._pricing is None:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        return BudgetReservation(
            self,
            estimate_micros=v.check_count("estimate_micros", estimate_micros),
            agent_id=v.check_optional_id("agent_id", agent_id),
            provider_id=v.check_optional_id("provider_id", provider_id),
            model=v.check_optional_id("model", model),
        )

    async def check_budget(
        self,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
    ) -> None:
        """Raise ``BudgetExceeded`` if a hard budget matching these dimensions is used up
        (its spend plus held reservations is at or over its limit); call it before an
        upstream call. Spend counts once aggregated (``await flush()`` to be current);
        use ``reserve`` for an exact guarantee under concurrency. Soft budgets never raise.
        """
        budgets = self._trackers.budgets
        if budgets.has_hard:
            budgets.check(
                self._clock(),
                agent_id=v.check_optional_id("agent_id", agent_id),
                provider_id=v.check_optional_id("provider_id", provider_id),
                model=v.check_optional_id("model", model),
            )

    async def add_budget(self, budget: Budget) -> None:
        """Start tracking ``budget``; its spend so far in the current period is read from
        storage (after a ``flush()``). A request aggregated while that read runs may be
        missed by the new budget. Raises ``ValidationError`` if the id is taken."""
        if not isinstance(budget, Budget):
            raise ValidationError(f"expected a Budget, got {type(budget).__name__}")
        book = self._trackers.budgets
        if budget.id in book:
            raise ValidationError(f"a budget with id {budget.id!r} exists already")
        if self._state is not _State.OPEN:
            # Not open yet: restored with the others on open. Closed: nothing to read.
            book.add(budget, now_ms=self._clock())
            return
        await self.flush()
        now = self._clock()
        spent = await current_spend(self._storage, self._aggregate, [budget], now)
        self._trackers.add_budget(budget, now, spent.get(budget.id, 0))

    def remove_budget(self, budget_id: str) -> bool:
        """Stop tracking a budget (its holds are forgotten); ``False`` if unknown."""
        return self._trackers.budgets.remove(budget_id)

    # --- reading -----------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every event accepted before this call is aggregated and persisted.

        Waits for room in a full buffer (a flush is never dropped) and, while the disk is
        failing, until the write succeeds. Returns at once on a closed store.
        """
        if self._state is _State.UNOPENED:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        if self._state is not _State.OPEN:
            return
        barrier = Barrier()
        try:
            await self._ingest_tx.send(barrier)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        self._wake.fire()  # a lingering aggregator takes the barrier now
        await barrier.done.wait()

    def stats(self) -> ComputedStats:
        """A snapshot of the statistics (current after ``await flush()``) and health."""
        return self._aggregate.snapshot(
            dropped_events=self.dropped_count(),
            dropped_by_cause=dict(self._dropped),
            unsynced_events=self._pending,
            persist_errors=self._persist_errors,
            sync_status="disabled" if self._sync_state is None else self._sync_state.status,
            sync={} if self._sync_state is None else self._sync_state.counters(),
        )

    def error_patterns(self, n: int = 20) -> ErrorPatternsSnapshot:
        """The ``n`` most frequent error patterns of failed requests (fingerprinted by
        error code, endpoint and normalized message), with totals. Current after
        ``await flush()``."""
        return self._trackers.errors.snapshot(n)

    def slo_status(
        self,
        target: float | str | Decimal | Fraction = 0.999,
        window_ms: int = HOUR_MS,
    ) -> SloStatus:
        """Availability against ``target`` (success rate) over the last ``window_ms`` (at
        most 30 days), by event time: error budget, burn rate and the multi-window
        burn-rate alerts (``fast_burn``, ``slow_burn``, ``ticket``). Raises
        ``ValidationError`` for a target outside (0, 1) or a bad window."""
        try:
            return self._trackers.slo.status(self._clock(), target, window_ms)
        except (ValueError, TypeError) as exc:
            raise ValidationError(str(exc)) from None

    def streaming_stats(self) -> StreamingSnapshot:
        """Streams: the active gauge, outcomes and completion rate, and per-model
        p50/p95/p99 of TTFT, inter-token latency, tokens/s and duration. A stream is a
        request with streaming detail or one recorded by ``track_stream``."""
        return self._trackers.streaming.snapshot()

    def budget_status(self) -> list[BudgetStatus]:
        """Every budget in its current period: spend, holds, remaining room, thresholds
        reached and an end-of-period forecast (money in micro-dollars)."""
        return self._trackers.budgets.status(self._clock())

    def observed_state(self) -> tuple[Aggregate, Trackers]:
        """The live statistics and trackers, for exporters (``llmtally.prometheus``).
        Read them on the event loop's thread and never change them."""
        return self._aggregate, self._trackers

    async def sync_now(self) -> SyncResult:
        """Flush, then sync: one round of the syncer (see ``llmtally.pipeline.sync``).

        Waits for a round in flight and for a backoff in progress (a collector's
        ``Retry-After`` is honoured), then returns the next round's ``SyncResult``. A
        failed request does not raise: it shows in ``failed`` and ``stats()``. Returns an
        all-zero result when sync is disabled or the store is closing or closed; raises
        ``StoreClosedError`` before the store is opened.
        """
        if self._state is _State.UNOPENED:
            raise StoreClosedError("use the store inside `async with EventStore(...) as store:`")
        tx = self._sync_tx
        if tx is None or self._state is not _State.OPEN:
            return SyncResult()
        await self.flush()
        request = SyncRequest()
        try:
            await tx.send(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return SyncResult()
        await request.done.wait()
        return request.result

    def _on_synced(self, changed: int) -> None:
        self._pending -= changed

    def dropped_count(self) -> int:
        """Events dropped since the store opened (all causes; see ``stats().dropped_by_cause``)."""
        return sum(self._dropped.values())

    def unsynced_count(self) -> int:
        """Request events persisted but not yet accepted by a collector."""
        return self._pending

    def unpersisted_count(self) -> int:
        """Events accepted (or emitted, like budget thresholds) and not yet written: in
        the ingest buffer or on their way through the aggregator and the persister. 0
        after ``await flush()``. Every accepted event is written, counted here, or
        dropped (``stats().dropped_by_cause["persist_failed"]``)."""
        return self._accepted + self._emitted - self._persisted - self._dropped["persist_failed"]

    def __len__(self) -> int:
        """Events held: stored plus accepted and not yet written."""
        return self._stored + self.unpersisted_count()

    def is_empty(self) -> bool:
        """``len(store) == 0``."""
        return len(self) == 0

    @property
    def storage(self) -> EventStorage:
        """The store's storage, for the query functions of ``llmtally.query`` (events,
        aggregate, timeseries, export…; SQLite and memory storages answer them). Read
        through it; writing is the pipeline's job. Open while the store is."""
        return self._storage

    def subscribe(self, capacity: int | None = None) -> AbstractAsyncContextManager[Subscription]:
        """A live view: ``async with store.subscribe() as events: async for ev in events``.

        Sees events accepted after it starts. A slow subscriber loses events (counted in
        its ``dropped``) and never slows the pipeline. Iteration ends when the store closes.
        """
        return self._fanout.subscribe(capacity)

    async def snapshot_events(self, limit: int | None = None) -> list[AnalyticsEvent]:
        """Stored events, oldest first (after a flush); non-destructive."""
        await self.flush()
        return await self._storage.snapshot(limit)

    async def drain_all(self) -> list[AnalyticsEvent]:
        """Remove and return every stored event (after a flush). Stats are kept."""
        await self.flush()
        events = await self._storage.drain()
        self._stored -= len(events)
        self._pending = await self._storage.count_pending()
        return events

    async def unsynced_events(self, limit: int = 10_000) -> list[AnalyticsEvent]:
        """Up to ``limit`` request events not yet synced, oldest first (after a flush)."""
        await self.flush()
        return await self._storage.pending(limit)

    async def mark_synced(self, event_ids: Sequence[str]) -> int:
        """Mark events as synced; returns how many were pending."""
        changed = await self._storage.mark(list(event_ids), SYNCED)
        self._pending -= changed
        return changed

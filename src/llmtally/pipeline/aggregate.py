"""The aggregator actor: the single owner of the running statistics; it feeds the trackers.

It takes everything waiting in the ingest stream at once (``receive_nowait`` until empty,
up to ``max_batch``), folds the batch into a ``StatsDelta``, applies it to the
``Aggregate``, feeds the ``Trackers`` (errors, SLO, streaming, budgets), offers the events
to live subscribers, logs them, and hands the batch and its delta to the persister.
Awaiting only when the stream is empty (or the persister is behind) keeps a hop at a
fraction of a microsecond per event.

Lingering (``wake``, an ``IngestWake``): events that trickle in one per event-loop
iteration (an HTTP client awaiting each upstream call) would each make a batch of one,
and a batch's fixed cost (the wake-up, the delta, the trackers, the hand-over to the
persister) is some tens of microseconds. So when the aggregator wakes for an item and
finds fewer than ``LINGER_BELOW`` waiting (and no flush barrier), it waits up to
``wake.linger`` seconds for more before it counts them: one timer per batch, none while
the stream is idle. The linger ends early when ``wake.threshold`` more items arrive (the
buffer is filling: a fraction of its capacity, so the aggregator runs before it could
overflow), when a ``flush()`` barrier arrives, and at end of stream — the producers fire
the wake. Events that arrive together (a burst, many concurrent requests) make a batch
big enough by themselves and are counted at once, as before. While events keep coming,
the aggregator waits for the next batch the same way right after counting one (a single
timer and wake-up per batch); after a linger nothing came to, a lone event or a flush, it
waits idle again (no timer, no CPU until the next item).

Besides events and ``Barrier``s the ingest stream carries ``TaggedEvent``s: an event
with what only its producer knows — that it is a stream (``EventStore.track_stream``;
counted as one whatever its fields) and the budget ``Reservation`` it settles (recorded
inside ``EventStore.reserve``). The aggregator adds the event's spend and releases the
reservation's hold in the same synchronous step, so at every moment a reserved call is
counted once: by its hold, then by its spend.

Budget thresholds crossed by a batch become ``budget_threshold_reached`` events, added to
the same batch (persisted locally, published, never synced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeAlias

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._ids import new_event_id
from ..analysis.budgets import Reservation, ThresholdCrossing
from ..analysis.stats import Aggregate, StatsDelta
from ..analysis.trackers import Trackers
from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed
from .fanout import Fanout
from .messages import Barrier, IngestWake, Nudge, PersistBatch

__all__ = [
    "IngestItem",
    "TaggedEvent",
    "aggregate",
    "crossing_event",
    "format_usd",
    "log_event",
]

logger = logging.getLogger("llmtally")

LINGER_BELOW = 8
"""The aggregator lingers after a wake-up only when fewer items than this are waiting."""


class TaggedEvent:
    """An event and what its producer knows about it (see the module docstring)."""

    __slots__ = ("event", "reservation", "stream")

    def __init__(
        self,
        event: AnalyticsEvent,
        *,
        stream: bool = False,
        reservation: Reservation | None = None,
    ) -> None:
        self.event = event
        self.stream = stream
        self.reservation = reservation


IngestItem: TypeAlias = AnalyticsEvent | Barrier | TaggedEvent
"""What the ingest stream carries."""


def crossing_event(crossing: ThresholdCrossing, environment: str | None = None) -> AnalyticsEvent:
    """The ``budget_threshold_reached`` event for a crossing (agent-scoped budgets carry
    the agent id), in ``environment`` (a warning: the default severity of its type)."""
    return AnalyticsEvent(
        event_id=new_event_id(crossing.at_ms),
        timestamp_ms=crossing.at_ms,
        payload=crossing.to_payload(),
        agent_id=crossing.scope_value if crossing.scope == "agent_id" else None,
        environment=environment,
    )


def format_usd(nanos: int) -> str:
    """Nano-dollars as a USD string with 6 decimals, rounded half up; no float involved."""
    micros = (nanos + 500) // 1000
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    return f"{sign}{micros // 1_000_000}.{micros % 1_000_000:06d}"


def log_event(event: AnalyticsEvent) -> None:
    """One INFO line per request event (like the spec's console logging)."""
    p = event.payload
    if isinstance(p, LlmRequestCompleted):
        logger.info(
            "LLM request completed model=%s input_tokens=%d output_tokens=%d cost_usd=%s",
            p.model,
            p.input_tokens,
            p.output_tokens,
            format_usd(p.cost_nanos),
        )
    elif isinstance(p, LlmRequestFailed):
        logger.info(
            "LLM request failed model=%s error_code=%s status_code=%s",
            p.model,
            p.error_code,
            p.status_code,
        )


async def aggregate(
    ingest_rx: MemoryObjectReceiveStream[IngestItem],
    persist_tx: MemoryObjectSendStream[PersistBatch],
    stats: Aggregate,
    fanout: Fanout,
    *,
    trackers: Trackers | None = None,
    max_batch: int = 2_000,
    on_batch: Callable[[list[AnalyticsEvent]], None] | None = None,
    on_emitted: Callable[[int], None] | None = None,
    nudge: Nudge | None = None,
    environment: str | None = None,
    wake: IngestWake | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until the ingest stream ends, then close ``persist_tx`` (EOF for the persister).

    ``nudge``: told of every batch queued for the persister (see ``Nudge``).
    ``environment``: the envelope's environment of the budget events it adds.
    ``wake``: linger for more items after a wake-up (see the module docstring); every
    producer of ``ingest_rx`` must then count its items on it and fire it after a
    barrier and at end of stream. ``None``: never linger.

    ``trackers=None`` turns the trackers off (benchmarks). ``on_emitted`` is told how
    many threshold events were added to a batch.
    """
    task_status.started()
    try:
        await _aggregate(
            ingest_rx,
            persist_tx,
            stats,
            fanout,
            trackers,
            max_batch,
            on_batch,
            on_emitted,
            nudge,
            environment,
            wake,
        )
    finally:
        if nudge is not None:
            nudge.event.set()  # end of stream (persist_tx is closed by now): stop lingering


async def _aggregate(
    ingest_rx: MemoryObjectReceiveStream[IngestItem],
    persist_tx: MemoryObjectSendStream[PersistBatch],
    stats: Aggregate,
    fanout: Fanout,
    trackers: Trackers | None,
    max_batch: int,
    on_batch: Callable[[list[AnalyticsEvent]], None] | None,
    on_emitted: Callable[[int], None] | None,
    nudge: Nudge | None,
    environment: str | None = None,
    wake: IngestWake | None = None,
) -> None:
    async with ingest_rx, persist_tx:
        receive_nowait = ingest_rx.receive_nowait
        end = False
        flowing = False  # the last round counted a batch: linger before going idle
        while not end:
            items: list[IngestItem] = []
            end = _take_waiting(receive_nowait, items, max_batch)
            busy = bool(items)  # taken without waiting: let other tasks run after it
            if not items and not end and (wake is None or not flowing):
                try:  # idle: no timer, no CPU until an item arrives
                    items.append(await ingest_rx.receive())
                except anyio.EndOfStream:
                    break
                end = _take_waiting(receive_nowait, items, max_batch)
            if (
                wake is not None
                and not end
                and len(items) < LINGER_BELOW
                and not any(type(i) is Barrier for i in items)
            ):
                # Linger once for more (the module docstring says what cuts it short).
                # Right after a batch this is also how the aggregator waits for the
                # next one while events keep trickling in: one timer, one wake-up.
                busy = False
                with anyio.CancelScope() as linger:
                    wake.arm(linger)
                    try:
                        await anyio.sleep(wake.linger)
                    finally:
                        wake.disarm()
                end = _take_waiting(receive_nowait, items, max_batch)
            if not items:
                flowing = False
                continue  # a linger that nothing came to (or end of stream)
            events: list[AnalyticsEvent] = []
            barriers: list[Barrier] = []
            streams: set[str] | None = None
            settles: list[Reservation] = []
            for item in items:
                if type(item) is AnalyticsEvent:
                    events.append(item)
                elif type(item) is Barrier:
                    barriers.append(item)
                else:
                    assert isinstance(item, TaggedEvent)
                    ev = item.event
                    events.append(ev)
                    if item.stream:
                        if streams is None:
                            streams = set()
                        streams.add(ev.event_id)
                    if item.reservation is not None:
                        settles.append(item.reservation)
            delta = StatsDelta().add_all(events)
            stats.apply(delta)
            if trackers is not None and events:
                try:
                    crossings = trackers.observe(events, delta, streams)
                except Exception:  # a bug there must not stop the pipeline
                    logger.exception("llmtally: the trackers could not count a batch")
                    crossings = []
                # After the spend above: a reserved call is never counted by neither.
                for reservation in settles:
                    trackers.budgets.release(reservation)
                if crossings:
                    _announce(crossings)
                    events += [crossing_event(c, environment) for c in crossings]
                    if on_emitted is not None:
                        on_emitted(len(crossings))
            if events:
                fanout.publish(events)
                if on_batch is not None:
                    on_batch(events)
                if logger.isEnabledFor(logging.INFO):
                    for ev in events:
                        log_event(ev)
            batch = PersistBatch(events, delta, barriers)
            try:
                persist_tx.send_nowait(batch)
            except anyio.WouldBlock:
                if nudge is not None:
                    nudge.event.set()  # the persister's queue is full: lingering is moot
                await persist_tx.send(batch)
            if nudge is not None:
                nudge.sent(batch)
            # Linger for the next batch only while events keep coming: not after a lone
            # event (sparse traffic: each would cost a timer more), nor after a flush (a
            # flush on a quiet store stays one plain wake-up).
            flowing = len(items) > 1 and not barriers
            if busy:
                await anyio.lowlevel.checkpoint()  # as a waiting receive() would


def _take_waiting(
    receive_nowait: Callable[[], IngestItem], items: list[IngestItem], max_batch: int
) -> bool:
    """Append what is waiting now to ``items`` (up to ``max_batch``); True at EOF."""
    append = items.append
    while len(items) < max_batch:
        try:
            append(receive_nowait())
        except anyio.WouldBlock:
            return False
        except anyio.EndOfStream:
            return True
    return False


def _announce(crossings: list[ThresholdCrossing]) -> None:
    for c in crossings:
        logger.warning(
            "llmtally: budget %r reached %d%% of its limit (%s of %s USD)",
            c.budget_id,
            c.threshold_percent,
            format_usd(c.spent_micros * 1000),
            format_usd(c.limit_micros * 1000),
        )

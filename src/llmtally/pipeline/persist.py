"""The persister actor: batches by size or time, one transaction per batch, retries forever.

A batch is written when ``batch_size`` events are waiting, when the oldest waiting event
is ``linger`` seconds old, when a ``flush()`` barrier arrives, or at end of stream.
Each write runs shielded: a cancellation cannot leave it half done. A failing write (disk
full, database locked by another process, I/O error) is reported to ``on_error`` and
retried with backoff; meanwhile nothing new is taken from the stream, so the bounded
streams upstream fill and the store counts drops instead of growing memory. Only the
shutdown deadline ends the retries: what is then unwritten is reported to ``on_lost``
(counted and logged — never silently lost).

After each commit the persister sends the number of events written to ``committed_tx``
(if given) without waiting: a coalescing wake-up for the syncer, so one that does not fit
is skipped. The stream is closed when the persister ends — end of stream for the syncer.

The persister also keeps the cumulative totals of what it wrote and saves them as a
checkpoint with a batch every ``checkpoint_every`` seconds and at end of stream; on open
the storage replays only the events after the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..analysis.stats import StatsDelta, merge_delta
from ..events import AnalyticsEvent
from ..storage.base import EventStorage
from .messages import Nudge, PersistBatch

__all__ = ["backoff_delay", "persist"]


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Delay before retry ``attempt`` (1-based): ``base`` doubling up to ``cap`` seconds."""
    return float(min(cap, base * 2.0 ** min(attempt - 1, 30)))


async def persist(
    rx: MemoryObjectReceiveStream[PersistBatch],
    storage: EventStorage,
    totals: StatsDelta,
    *,
    batch_size: int = 1_000,
    linger: float = 0.05,
    checkpoint_every: float = 5.0,
    on_committed: Callable[[list[AnalyticsEvent]], None],
    on_error: Callable[[Exception, int], None],
    on_lost: Callable[[int], None],
    retry_delay: Callable[[int], float] = backoff_delay,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    committed_tx: MemoryObjectSendStream[int] | None = None,
    nudge: Nudge | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``rx`` ends and everything received is written (or the deadline hits).

    ``totals``: the cumulative stats of what is already stored (as loaded on open); the
    persister owns and updates it. ``committed_tx``: notified after each commit (never
    waits) and closed when this returns, however it ends. ``nudge``: shared with the
    aggregator, ends a linger early (without it, a linger always runs its full length).
    """
    task_status.started()
    next_checkpoint = anyio.current_time() + checkpoint_every
    dirty = False  # events written since the last checkpoint

    async def write(events: list[AnalyticsEvent], checkpoint: bool) -> None:
        attempt = 0
        try:
            while True:
                try:
                    # Shield only the transaction: it either commits or rolls back, whole.
                    with anyio.CancelScope(shield=True):
                        await storage.write_batch(events, totals if checkpoint else None)
                    return
                except Exception as exc:  # the storage's runtime failures: retried
                    attempt += 1
                    on_error(exc, attempt)
                await sleep(retry_delay(attempt))
        except anyio.get_cancelled_exc_class():
            on_lost(len(events))
            raise

    # Closing ``committed_tx`` (after the last write) is end of stream for the syncer.
    async with rx, committed_tx if committed_tx is not None else contextlib.nullcontext():
        eof = False
        while not eof:
            try:
                first = await rx.receive()
            except anyio.EndOfStream:
                break
            batch = first
            eof = _take_queued(rx, batch, batch_size)
            if not eof and not batch.barriers and len(batch.events) < batch_size and linger > 0:
                # Linger once for more (a barrier or a full batch cuts it short), then
                # take everything queued meanwhile: one timer per write, not per event.
                woken = nudge.rearm(len(batch.events)) if nudge is not None else anyio.Event()
                with anyio.move_on_after(linger):
                    await woken.wait()
                eof = _take_queued(rx, batch, batch_size)
            events, delta, barriers = batch.events, batch.delta, batch.barriers
            if events:
                merge_delta(totals, delta)
                checkpoint = eof or anyio.current_time() >= next_checkpoint
                await write(events, checkpoint)
                if checkpoint:
                    next_checkpoint = anyio.current_time() + checkpoint_every
                dirty = not checkpoint
                on_committed(events)
                if committed_tx is not None:
                    _notify(committed_tx, len(events))
            for b in barriers:
                b.done.set()
        if dirty:
            await write([], True)


def _take_queued(
    rx: MemoryObjectReceiveStream[PersistBatch], batch: PersistBatch, batch_size: int
) -> bool:
    """Fold what is queued now into ``batch`` (up to ``batch_size`` events); True at EOF."""
    while len(batch.events) < batch_size:
        try:
            nxt = rx.receive_nowait()
        except anyio.WouldBlock:
            return False
        except anyio.EndOfStream:
            return True
        batch.events.extend(nxt.events)
        merge_delta(batch.delta, nxt.delta)
        batch.barriers.extend(nxt.barriers)
    return False


def _notify(tx: MemoryObjectSendStream[int], count: int) -> None:
    try:
        tx.send_nowait(count)
    except anyio.WouldBlock:
        pass  # a wake-up is already waiting: the syncer reads the outbox, not this count
    except anyio.BrokenResourceError:
        pass  # the syncer has ended; the rows wait in the outbox for the next start

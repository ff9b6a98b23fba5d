"""The syncer actor: sends the outbox's request events to a collector, one request at a time.

::

    persister ──committed (wake-up)──▶ ┐
    sync_now() ──SyncRequest─────────▶ ┴ sync ──POST {server_url}/api/v1/analytics/events──▶ collector
                                          │ reads PENDING rows (the outbox, never memory),
                                          ▼ marks them SYNCED or REFUSED
                                        storage

A *round* sends the outbox in rowid order, ``max_batch`` events per request, until it is
empty, a request fails, or the events pending when the round began are done. Each answer
is classified by the rules in ``retry.py``; the actor only moves data. A round runs:

- when ``batch_threshold`` events are pending (checked on each commit wake-up and at start),
- every ``sync_interval`` seconds,
- for ``sync_now()`` requests: a request waits for the round in flight, then gets the next
  round's ``SyncResult``,
- after a failed request, when its backoff has elapsed. While backing off nothing above
  starts a round early: ``sync_now()`` waits for the backoff too.

When the wake-up stream ends (the persister has written everything) the actor makes one
last round, bounded by ``shutdown_timeout`` and without waiting for a backoff, and ends.
What could not be sent stays pending in storage for the next start; event ids never
change, so a collector stores a retried event once.

Nothing here raises into the store while running: HTTP failures follow the rules; a
failing outbox (database locked, I/O error) is logged, counted (``storage_errors``) and
retried with backoff. Logs never contain the token.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, fields
from typing import Final, Literal, TypeAlias

import anyio
import httpx2
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from .._config import SyncConfig
from .._exceptions import ConfigurationError
from ..events import AnalyticsEvent, IngestResponse, WireBatch, to_wire
from ..storage.base import EventStorage
from ..storage.rows import REFUSED, SYNCED
from .retry import Action, Backoff, Failure, Outcome, backoff_delay, decide

__all__ = [
    "INBOX_CAPACITY",
    "INGEST_PATH",
    "SyncHooks",
    "SyncMessage",
    "SyncRequest",
    "SyncResult",
    "SyncState",
    "SyncStatus",
    "ingest_url",
    "outbox_for",
    "sync",
]

logger = logging.getLogger("llmtally")

INGEST_PATH: Final = "/api/v1/analytics/events"
INBOX_CAPACITY: Final = 64
"""Bound of the syncer's inbox (commit wake-ups and ``sync_now`` requests)."""

_MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024  # a collector's answer is far smaller
_MAX_DETAIL_CHARS: Final = 200  # of an error body, in a log line
_HEADERS: Final = {"Content-Type": "application/json"}

_encode: Final = msgspec.json.Encoder().encode
_decode_answer: Final = msgspec.json.Decoder(IngestResponse).decode

SyncStatus: TypeAlias = Literal["idle", "ok", "retrying", "config_error"]


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one sync round did (``await store.sync_now()``).

    ``sent``: events the round posted (each once, however often a 413 split it).
    ``accepted``, ``duplicates``: as the collector answered. ``rejected``: events the
    collector listed as invalid in a 2xx answer; ``dropped``: events of batches it refused
    (other 4xx, 501, or a single event still too large) — both are marked refused and
    never retried. ``failed``: events left pending by a failed request, retried after a
    backoff. With a consistent collector
    ``sent == accepted + duplicates + rejected + dropped + failed``.
    """

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0


class SyncRequest:
    """A ``sync_now()`` call waiting for the next round: ``done`` is set with ``result``."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result = SyncResult()

    def resolve(self, result: SyncResult) -> None:
        self.result = result
        self.done.set()


SyncMessage: TypeAlias = int | SyncRequest
"""What the syncer receives: a commit wake-up (events written) or a ``sync_now`` call."""


def _no_marks(changed: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class SyncHooks:
    """The syncer's effects, replaceable in tests (like httpcore's mock backend).

    ``sleep``: waits out a backoff (the ``sync_interval`` timer runs on anyio's clock).
    ``wall_clock``: unix seconds, to read a ``Retry-After`` HTTP-date. ``random``: jitter
    in ``[0, 1)``. ``transport``: the HTTP transport (``None``: the network).
    """

    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    wall_clock: Callable[[], float] = time.time
    random: Callable[[], float] = random.random
    transport: httpx2.AsyncBaseTransport | None = None


@dataclass(slots=True)
class SyncState:
    """Status and counters of a syncer: written by the actor only, read by ``stats()``.

    ``status``: ``"idle"`` until a request is answered, then ``"ok"`` (the last request
    was answered), ``"retrying"`` (the last request failed; backing off) or
    ``"config_error"`` (401/403/404, a redirect or not a collector: check ``server_url``
    and ``ic_token``; backing off the maximum). Counters are totals since the store
    opened: events ``sent``, ``accepted``, ``duplicates``, ``rejected``, ``dropped`` and
    ``failed`` (per round, as in ``SyncResult``); ``requests`` made; ``failed_attempts``
    (requests answered by a retry or configuration rule), of which ``timeouts``,
    ``connection_errors`` and ``config_errors``; ``splits`` (413s); ``storage_errors``
    (the outbox could not be read or marked).
    """

    status: SyncStatus = "idle"
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0
    requests: int = 0
    failed_attempts: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    config_errors: int = 0
    splits: int = 0
    storage_errors: int = 0

    def counters(self) -> dict[str, int]:
        """Every counter by name (a fresh dict)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "status"}


@dataclass(slots=True)
class _Tally:
    """One round's counts; becomes its ``SyncResult``."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0

    def result(self) -> SyncResult:
        return SyncResult(
            sent=self.sent,
            accepted=self.accepted,
            duplicates=self.duplicates,
            rejected=self.rejected,
            failed=self.failed,
            dropped=self.dropped,
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: Outcome
    response: IngestResponse | None = None
    retry_after: str | None = None
    detail: str = ""


def ingest_url(server_url: str) -> httpx2.URL:
    """``{server_url}/api/v1/analytics/events``. Raises ``ConfigurationError`` if invalid."""
    try:
        url = httpx2.URL(server_url.rstrip("/") + INGEST_PATH)
    except httpx2.InvalidURL as exc:
        raise ConfigurationError(f"invalid sync server_url: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("sync server_url must be an http(s) URL with a host")
    return url


def outbox_for(storage: EventStorage) -> EventStorage:
    """The storage the syncer reads and marks the outbox through: the store's own.

    Every backend serialises its operations (SQLite: one connection behind an
    ``anyio.Lock``), so the syncer's marks never interleave with the persister's
    ``BEGIN … COMMIT``, and one connection means no ``SQLITE_BUSY`` between the two.
    """
    return storage


async def sync(
    rx: MemoryObjectReceiveStream[SyncMessage],
    outbox: EventStorage,
    config: SyncConfig,
    state: SyncState,
    *,
    pending_count: Callable[[], int],
    on_marked: Callable[[int], None] = _no_marks,
    hooks: SyncHooks | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``rx`` ends, then make one last round and return (see the module doc).

    ``outbox``: open storage to read pending events from and mark. ``pending_count``: how
    many events are pending now (cheap; checked against ``batch_threshold``).
    ``on_marked(n)``: ``n`` pending events were just marked synced or refused. Raises
    ``ConfigurationError`` before starting if ``config.server_url`` is not a usable URL.
    """
    hooks = hooks or SyncHooks()
    async with rx:
        url = ingest_url(config.server_url)
        async with httpx2.AsyncClient(
            timeout=config.timeout,
            headers={"Authorization": f"Bearer {config.ic_token}"},
            transport=hooks.transport,
            follow_redirects=False,
        ) as client:
            task_status.started()
            session = _Session(config, url, client, outbox, state, hooks, on_marked)
            inbox = _Inbox(rx)
            try:
                await _serve(inbox, session, config, pending_count)
            finally:
                inbox.resolve(SyncResult())  # only if cut short: normally nothing waits
                inbox.poll()
                inbox.resolve(SyncResult())


async def _serve(
    inbox: _Inbox, session: _Session, config: SyncConfig, pending_count: Callable[[], int]
) -> None:
    next_due = anyio.current_time() + config.sync_interval
    backlog = False  # the last round stopped at its budget: more may be pending
    while not inbox.eof:
        if session.delay is not None:
            await inbox.wait_sleeping(session.hooks.sleep, session.delay)
            session.delay = None
        else:
            now = anyio.current_time()
            if not (
                inbox.waiting
                or backlog
                or now >= next_due
                or (inbox.woken and pending_count() >= config.batch_threshold)
            ):
                await inbox.wait(next_due - now)
                continue
        if inbox.poll():  # sync_now() calls that arrived meanwhile join this round
            break
        inbox.woken = False
        result, backlog = await session.run_round()
        next_due = anyio.current_time() + config.sync_interval
        inbox.resolve(result)
    result = SyncResult()
    if config.shutdown_timeout > 0:
        with anyio.move_on_after(config.shutdown_timeout):
            result, _ = await session.run_round()
    inbox.resolve(result)


class _Inbox:
    """The receiving end, plus what it has collected: waiting requests, a wake-up, EOF."""

    def __init__(self, rx: MemoryObjectReceiveStream[SyncMessage]) -> None:
        self.rx = rx
        self.waiting: list[SyncRequest] = []
        self.woken = True  # at start, rows from an earlier run may already be pending
        self.eof = False

    def _take(self, item: SyncMessage) -> None:
        if isinstance(item, SyncRequest):
            self.waiting.append(item)
        else:
            self.woken = True

    def poll(self) -> bool:
        """Take everything already buffered, without waiting; returns whether at EOF."""
        while not self.eof:
            try:
                self._take(self.rx.receive_nowait())
            except anyio.WouldBlock:
                break
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                self.eof = True
        return self.eof

    async def wait(self, seconds: float) -> None:
        """Take one message, or return after ``seconds`` (anyio's clock)."""
        with anyio.move_on_after(seconds):
            try:
                self._take(await self.rx.receive())
            except anyio.EndOfStream:
                self.eof = True

    async def wait_sleeping(self, sleep: Callable[[float], Awaitable[None]], delay: float) -> None:
        """``await sleep(delay)``, collecting messages meanwhile; returns early at EOF."""
        async with anyio.create_task_group() as tg:

            async def listen() -> None:
                try:
                    while True:
                        # Cancelling a receive never loses a message (anyio#146), and
                        # ``_take`` runs before the next checkpoint.
                        self._take(await self.rx.receive())
                except anyio.EndOfStream:
                    self.eof = True
                    tg.cancel_scope.cancel()

            tg.start_soon(listen)
            await sleep(delay)
            tg.cancel_scope.cancel()

    def resolve(self, result: SyncResult) -> None:
        for request in self.waiting:
            request.resolve(result)
        self.waiting.clear()


class _Session:
    """One syncer's HTTP client, outbox and retry state; ``run_round`` is a round."""

    def __init__(
        self,
        config: SyncConfig,
        url: httpx2.URL,
        client: httpx2.AsyncClient,
        outbox: EventStorage,
        state: SyncState,
        hooks: SyncHooks,
        on_marked: Callable[[int], None],
    ) -> None:
        self.config = config
        self.url = url
        self.where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        self.client = client
        self.outbox = outbox
        self.state = state
        self.hooks = hooks
        self.on_marked = on_marked
        self.policy = Backoff(config.min_backoff, config.max_backoff, config.max_retry_after)
        self.limit = config.max_batch  # lowered to what a collector took after a 413
        self.failures = 0  # failed requests (or rounds) in a row
        self.delay: float | None = None  # set by a failure: wait this long, then retry

    async def run_round(self) -> tuple[SyncResult, bool]:
        """One round; returns its result and whether more may be pending (a backlog)."""
        tally = _Tally()
        backlog = False
        try:
            backlog = await self._round(tally)
        except Exception:  # the outbox failed (locked, I/O): counted, retried
            self.failures += 1
            self.delay = backoff_delay(self.failures, self.hooks.random(), self.policy)
            self.state.storage_errors += 1
            self.state.status = "retrying"
            if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, ...: no log flood
                logger.exception(
                    "llmtally: sync could not use the outbox (attempt %d), retrying in %.1fs",
                    self.failures,
                    self.delay,
                )
        finally:
            # Also when the round is cut short (the shutdown round's timeout): what it
            # marked before is counted.
            state = self.state
            state.sent += tally.sent
            state.accepted += tally.accepted
            state.duplicates += tally.duplicates
            state.rejected += tally.rejected
            state.dropped += tally.dropped
            state.failed += tally.failed
        return tally.result(), backlog

    async def _round(self, tally: _Tally) -> bool:
        budget = await self.outbox.count_pending()
        if budget <= 0:
            return False
        while budget > 0:
            batch = await self.outbox.pending(min(self.limit, budget))
            if not batch:
                return False
            budget -= len(batch)
            tally.sent += len(batch)
            if not await self._send(batch, tally):
                return False
        return True

    async def _send(self, batch: list[AnalyticsEvent], tally: _Tally) -> bool:
        """Post ``batch`` (split on 413); ``False`` after a failure (``delay`` is set)."""
        parts = [batch]  # a stack: at most log2(max_batch) parts wait at a time
        while parts:
            part = parts.pop()
            try:
                answer = await self._post(part)
            except BaseException:  # cancelled mid-request: these stay pending
                tally.failed += len(part) + sum(len(p) for p in parts)
                raise
            decision = decide(
                answer.outcome,
                attempt=self.failures + 1,
                jitter=self.hooks.random(),
                policy=self.policy,
                retry_after=answer.retry_after,
                now=self.hooks.wall_clock(),
            )
            action = decision.action
            if action is Action.SYNCED:
                assert answer.response is not None
                self.failures = 0
                self.state.status = "ok"
                await self._settle(part, answer.response, tally)
            elif action is Action.SPLIT:
                self.state.splits += 1
                if len(part) == 1:
                    await self._drop(part, tally, "HTTP 413 for a single event")
                else:
                    half = (len(part) + 1) // 2
                    self.limit = min(self.limit, half)
                    parts.append(part[half:])
                    parts.append(part[:half])
            elif action is Action.DROP:
                self.failures = 0
                self.state.status = "ok"
                await self._drop(part, tally, answer.detail)
            else:
                self.failures += 1
                self.delay = decision.delay
                tally.failed += len(part) + sum(len(p) for p in parts)
                self._failed(action, answer, tally.failed)
                return False
        return True

    async def _post(self, events: Sequence[AnalyticsEvent]) -> _Answer:
        body = _encode(WireBatch([to_wire(e) for e in events]))
        self.state.requests += 1
        answer = _Answer(Failure.TIMEOUT, detail=f"no answer within {self.config.timeout}s")
        # httpx's timeout bounds each read and write; this bounds the whole exchange.
        with anyio.move_on_after(self.config.timeout):
            answer = await self._exchange(body)
        return answer

    async def _exchange(self, body: bytes) -> _Answer:
        try:
            async with self.client.stream(
                "POST", self.url, content=body, headers=_HEADERS
            ) as response:
                status = response.status_code
                limit = _MAX_ANSWER_BYTES if 200 <= status < 300 else _MAX_DETAIL_CHARS
                content = await _read_at_most(response, limit)
        except httpx2.TimeoutException as exc:
            return _Answer(Failure.TIMEOUT, detail=_describe(exc))
        except httpx2.ConnectError as exc:
            return _Answer(Failure.CONNECT, detail=_describe(exc))
        except httpx2.NetworkError as exc:
            return _Answer(Failure.NETWORK, detail=_describe(exc))
        except httpx2.HTTPError as exc:  # the peer closed early, bad HTTP, a proxy failed
            return _Answer(Failure.PROTOCOL, detail=_describe(exc))
        if 200 <= status < 300:
            try:
                return _Answer(status, _decode_answer(content))
            except msgspec.DecodeError:
                return _Answer(
                    Failure.BAD_RESPONSE, detail=f"HTTP {status} that is not a collector's answer"
                )
        text = content.decode("utf-8", "replace")[:_MAX_DETAIL_CHARS]
        text = text.replace(self.config.ic_token, "***")
        return _Answer(
            status, retry_after=response.headers.get("retry-after"), detail=f"HTTP {status} {text}"
        )

    async def _mark(self, event_ids: list[str], state: int) -> int:
        # Shielded: a cancelled shutdown round must not leave the transaction half done.
        with anyio.CancelScope(shield=True):
            changed = await self.outbox.mark(event_ids, state)
        self.on_marked(changed)
        return changed

    async def _settle(
        self, part: list[AnalyticsEvent], response: IngestResponse, tally: _Tally
    ) -> None:
        ids = {e.event_id for e in part}
        refused = {r.event_id for r in response.rejected if r.event_id in ids}
        await self._mark([e.event_id for e in part if e.event_id not in refused], SYNCED)
        if refused:
            await self._mark(sorted(refused), REFUSED)
        tally.accepted += response.accepted
        tally.duplicates += response.duplicates
        tally.rejected += len(response.rejected)
        if response.rejected:
            first = response.rejected[0]
            logger.warning(
                "llmtally: the collector at %s rejected %d of %d events, not retried "
                "(first: %s: %.200s)",
                self.where,
                len(response.rejected),
                len(part),
                first.event_id,
                first.error,
            )

    async def _drop(self, part: list[AnalyticsEvent], tally: _Tally, detail: str) -> None:
        await self._mark([e.event_id for e in part], REFUSED)
        tally.dropped += len(part)
        logger.warning(
            "llmtally: the collector at %s refused a batch of %d events, dropped: %s",
            self.where,
            len(part),
            detail,
        )

    def _failed(self, action: Action, answer: _Answer, pending: int) -> None:
        state = self.state
        state.failed_attempts += 1
        if answer.outcome is Failure.TIMEOUT:
            state.timeouts += 1
        elif answer.outcome in (Failure.CONNECT, Failure.NETWORK, Failure.PROTOCOL):
            state.connection_errors += 1
        if action is Action.CONFIG_ERROR:
            state.config_errors += 1
            state.status = "config_error"
            logger.error(
                "llmtally: the collector at %s refused the sync (%s): check server_url and "
                "ic_token; %d events stay pending, next attempt in %.0fs",
                self.where,
                answer.detail,
                pending,
                self.delay,
            )
            return
        state.status = "retrying"
        if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, ...: a long outage logs little
            logger.warning(
                "llmtally: sync to %s failed (%s), attempt %d; %d events stay pending, "
                "retrying in %.1fs",
                self.where,
                answer.detail,
                self.failures,
                pending,
                self.delay,
            )


async def _read_at_most(response: httpx2.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (a longer body is cut; the caller decides)."""
    chunks: list[bytes] = []
    size = 0
    async with aclosing(response.aiter_bytes()) as body:
        async for chunk in body:
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return b"".join(chunks)[:limit]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

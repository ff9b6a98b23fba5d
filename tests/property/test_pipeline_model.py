"""A model-based test of the whole pipeline: store → aggregator → persister → SQLite →
syncer → a real HTTP collector on loopback, driven through random sequences of steps.

Steps: record; stall and unstall persistence (writes wait at a gate in front of the real
``SqliteStorage``), an I/O error after a commit; script the collector's next answers
(2xx, 400, 413, 429, 500, a hang, store-then-drop-the-connection); let the syncer's
backoff end and run a round; advance the store's clock (also the syncer's wall clock);
crash (the actors are cancelled wherever they are: no drain, no last sync — a stalled
disk never comes back); shut down gracefully and restart on the same file.

After every step the accounts must balance (see ``PipelineModel.check``):

- every call returned an event or ``None``: ``None``s = ``buffer_full`` + ``closed`` drops;
- accepted = persisted + ``persist_failed`` drops + ``unpersisted_count()``;
- persisted request rows = synced + refused by the collector + pending, and pending rows
  = ``unsynced_count()``; the syncer's counters agree with the rows it moved;
- ids stored by the collector ⊆ ids recorded; every row marked synced is at the collector;
  the database holds recorded ids only, each once;
- a crash loses at most what was not yet persisted; stats equal the database's totals
  after every restart.

The store lives in an anyio blocking portal (its own event loop thread); each step is a
portal call, so the checks run between steps with the pipeline quiescent: writes are
either flushed or held at the gate, and the syncer runs only inside the ``sync`` step
(huge interval and threshold; its backoff sleeps wait for the model).
A real ``SIGKILL`` of a router process is covered by ``tests/pipeline/test_crash_recovery.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import shutil
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from llmtally import EventStore, SyncConfig, SyncHooks
from llmtally.pipeline.sync import SyncRequest
from llmtally.storage import SqliteStorage
from llmtally.storage.rows import PENDING, REFUSED, SYNCED
from tests.pipeline.fake_collector import FakeCollector, Reply

from . import profiles
from .harness import FaultyStorage, GatedSleep

TOKEN = "model-token-3c9d"
MODELS = ["gpt-4o-mini", "claude-3-5-sonnet", "in-house-7b"]
STEP_TIMEOUT_S = 30.0

REPLIES = {
    "ok": Reply.ok,
    "http400": lambda: Reply.status_code(400, body=b'{"error":"bad"}'),
    "http413": lambda: Reply.status_code(413),
    "http429": lambda: Reply.status_code(429),
    "http500": lambda: Reply.status_code(500),
    "store_then_drop": Reply.store_then_drop,
}


@dataclass
class Incarnation:
    """One open store on the database file, and what the model saw it do."""

    store: EventStore
    storage: FaultyStorage
    cm: Any  # the portal's wrapper of ``async with store``
    states_at_open: Counter[int]
    accepted: set[str] = field(default_factory=set)
    nones: int = 0
    open: bool = True


class PipelineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="llmtally-model-"))
        self.db = self.dir / "analytics.db"
        self.now_ms = 1_700_000_000_000
        self.recorded: set[str] = set()  # every id a call returned, over all incarnations
        self.lost: set[str] = set()  # accepted, then lost to a crash or a dead disk
        self.hangs = 0
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.fake: FakeCollector = self.portal.call(FakeCollector)
        self._fake_cm = self.portal.wrap_async_context_manager(self.fake)
        self._fake_cm.__enter__()
        self.sleep: GatedSleep = self.portal.call(GatedSleep)
        self.inc = self._open()

    # --- plumbing ----------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` (async or not) on the store's event loop, bounded."""

        async def bounded() -> Any:
            with anyio.fail_after(STEP_TIMEOUT_S):
                result = fn(*args)
                return await result if hasattr(result, "__await__") else result

        return self.portal.call(bounded)

    def _open(self) -> Incarnation:
        def build() -> tuple[FaultyStorage, EventStore]:
            storage = FaultyStorage(SqliteStorage(self.db))
            config = SyncConfig(
                self.fake.url,
                TOKEN,
                sync_interval=3_600.0,  # rounds run when the model says
                batch_threshold=1_000_000,
                max_batch=5,
                timeout=0.3,  # what a hang costs
                shutdown_timeout=0.3,
            )
            hooks = SyncHooks(
                sleep=self.sleep, random=lambda: 0.5, wall_clock=lambda: self.now_ms / 1000
            )
            store = EventStore(
                storage=storage,  # type: ignore[arg-type]
                capacity=8,
                batch_size=4,
                batch_linger=0.0,
                drain_timeout=0.1,  # with shutdown_timeout: what a dead disk costs at shutdown
                clock=lambda: self.now_ms,
                sync=config,
                sync_hooks=hooks,
            )
            return storage, store

        storage, store = self.portal.call(build)
        cm = self.portal.wrap_async_context_manager(store)
        cm.__enter__()
        return Incarnation(store, storage, cm, Counter(self._rows().values()))

    def _rows(self) -> dict[str, int]:
        """``event_id -> sync_state`` of every stored row (read beside the store: WAL)."""
        if not self.db.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT event_id, sync_state FROM events").fetchall()
        finally:
            conn.close()
        ids = dict(rows)
        assert len(ids) == len(rows), "an event id is stored twice"
        return ids

    def _totals(self) -> tuple[int, ...]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return tuple(
                conn.execute(
                    "SELECT count(*), coalesce(sum(event_type = 'llm_request_failed'), 0), "
                    "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                    "coalesce(sum(cost_nanos), 0) FROM events "
                    "WHERE event_type IN ('llm_request_completed', 'llm_request_failed')"
                ).fetchone()
            )
        finally:
            conn.close()

    def _counters(self) -> dict[str, Any]:
        """The store's accounts, read in one step on its event loop (consistent)."""
        store = self.inc.store

        def read() -> dict[str, Any]:
            s = store.stats()
            return {
                "dropped": dict(s.dropped_by_cause),
                "unpersisted": store.unpersisted_count(),
                "unsynced": store.unsynced_count(),
                "sync": dict(s.sync),
                "totals": (
                    s.total_requests,
                    s.failed_requests,
                    s.total_input_tokens,
                    s.total_output_tokens,
                    s.total_cost_nanos,
                ),
                "collector": set(self.fake.stored),
            }

        return self.portal.call(read)

    def _settle_persistence(self) -> None:
        storage = self.inc.storage
        if self.inc.open and not storage.stalled and not storage.aborted:
            self._call(self.inc.store.flush)

    # --- the checks --------------------------------------------------------------------

    @invariant()
    def accounts_balance(self) -> None:
        self._settle_persistence()
        self.check()

    def check(self) -> None:
        inc = self.inc
        c = self._counters()
        rows = self._rows()
        dropped: dict[str, int] = c["dropped"]
        assert set(dropped) <= {"buffer_full", "closed", "persist_failed"}, dropped
        # Every call returned an event or None; every None is a counted drop.
        assert inc.nones == dropped.get("buffer_full", 0) + dropped.get("closed", 0)
        # Accepted = persisted + dropped on the way to disk + still on the way.
        persisted = inc.accepted & rows.keys()
        assert len(inc.accepted) == (
            len(persisted) + dropped.get("persist_failed", 0) + c["unpersisted"]
        ), (len(inc.accepted), len(persisted), dropped, c["unpersisted"])
        # The database holds recorded events only; the collector too.
        assert rows.keys() <= self.recorded
        assert c["collector"] <= self.recorded
        assert not (self.lost & rows.keys())
        # Persisted = synced + refused + pending, as the syncer and the store count them.
        states = Counter(rows.values())
        assert states.keys() <= {PENDING, SYNCED, REFUSED}
        assert states[PENDING] == c["unsynced"]
        assert {i for i, s in rows.items() if s == SYNCED} <= c["collector"]
        sync = c["sync"]
        assert states[SYNCED] - inc.states_at_open[SYNCED] == sync["accepted"] + sync["duplicates"]
        assert states[REFUSED] - inc.states_at_open[REFUSED] == sync["dropped"] + sync["rejected"]
        assert (
            sync["sent"]
            == (sync["accepted"] + sync["duplicates"] + sync["rejected"] + sync["dropped"])
            + sync["failed"]
        ), sync
        # The stats equal the database's totals once everything is written.
        if inc.open and c["unpersisted"] == 0 and not inc.storage.aborted:
            assert c["totals"] == self._totals()

    # --- steps -------------------------------------------------------------------------

    @rule(
        n=st.integers(1, 6),
        failed=st.booleans(),
        model=st.sampled_from(MODELS),
        tokens=st.integers(0, 10**6),
        agent=st.sampled_from([None, "agent-1", "agent-2"]),
    )
    def record(self, n: int, failed: bool, model: str, tokens: int, agent: str | None) -> None:
        store = self.inc.store

        async def go() -> list[Any]:
            out = []
            for i in range(n):
                if failed:
                    ev = await store.record_llm_failed(
                        model, error_code="rate_limited", status_code=429, agent_id=agent
                    )
                else:
                    ev = await store.record_llm_completed(
                        model, input_tokens=tokens + i, output_tokens=i, agent_id=agent
                    )
                out.append(ev)
            return out

        for ev in self._call(go):
            if ev is None:
                self.inc.nones += 1
            else:
                assert ev.event_id not in self.recorded
                self.inc.accepted.add(ev.event_id)
                self.recorded.add(ev.event_id)

    @precondition(lambda self: not self.inc.storage.stalled)
    @rule()
    def stall_disk(self) -> None:
        self._call(self.inc.storage.stall)
        self._call(self.inc.storage.quiesce)

    @precondition(lambda self: self.inc.storage.stalled)
    @rule()
    def unstall_disk(self) -> None:
        self._call(self.inc.storage.unstall)

    @precondition(lambda self: not self.inc.storage.stalled)
    @rule()
    def io_error_after_commit(self) -> None:
        self.inc.storage.fail_after_commit = 1  # the persister retries: a no-op rewrite

    @rule(kind=st.sampled_from(sorted(REPLIES)), times=st.integers(1, 3))
    def collector_answers(self, kind: str, times: int) -> None:
        self._call(self.fake.script.extend, [REPLIES[kind]() for _ in range(times)])

    @precondition(lambda self: self.hangs < 1)
    @rule()
    def collector_hangs_once(self) -> None:
        self.hangs += 1
        self._call(self.fake.script.append, Reply.hang())

    @rule(ms=st.integers(-5_000, 86_400_000))
    def advance_clock(self, ms: int) -> None:
        self.now_ms = max(0, self.now_ms + ms)

    @precondition(lambda self: not self.inc.storage.stalled)
    @rule()
    def sync(self) -> None:
        """The syncer's backoff (if any) ends, then one round runs (``sync_now``)."""
        store, sleep = self.inc.store, self.sleep

        async def go() -> None:
            if sleep.waiting:
                # What ``sync_now()`` sends, but without waiting for the backoff: queued
                # before the backoff ends, the request joins the retry round and is
                # answered when that round ends — however it ends.
                request = SyncRequest()
                assert store._sync_tx is not None
                await store._sync_tx.send(request)
                sleep.release()
                await request.done.wait()
                if sleep.waiting or request.result.failed:
                    return  # it failed again: backing off
            await store.sync_now()

        self._call(go)

    @rule()
    def crash(self) -> None:
        """The process dies: actors cancelled where they are; a stalled disk is lost."""
        inc = self.inc
        before = self._counters()
        persisted = inc.accepted & self._rows().keys()

        def die() -> None:
            if inc.storage.stalled:
                inc.storage.abort()
            inc.store._tg.cancel_scope.cancel()  # no drain, no last sync round

        self._call(die)
        # The cancellation reaches the task that holds ``async with store`` too.
        with contextlib.suppress(concurrent.futures.CancelledError):
            inc.cm.__exit__(None, None, None)
        inc.open = False
        rows = self._rows()
        assert persisted <= rows.keys()  # what was written survives
        lost = inc.accepted - rows.keys()
        assert len(lost) <= before["unpersisted"] + before["dropped"].get("persist_failed", 0)
        self.lost |= lost
        self.inc = self._open()

    @rule()
    def shutdown_and_restart(self) -> None:
        inc = self.inc
        dead_disk = inc.storage.stalled
        if dead_disk:
            self._call(inc.storage.abort)  # the disk never comes back: counted, not hung
        inc.cm.__exit__(None, None, None)
        inc.open = False
        call = functools.partial(inc.store.record_llm_completed, "gpt-4o-mini", input_tokens=1)
        assert self._call(call) is None  # after close: dropped, counted
        inc.nones += 1
        c = self._counters()
        assert c["unpersisted"] == 0
        if not dead_disk:
            assert c["dropped"].get("persist_failed", 0) == 0
        self.check()
        self.lost |= inc.accepted - self._rows().keys()
        self.inc = self._open()

    def teardown(self) -> None:
        try:
            if getattr(self, "inc", None) is not None and self.inc.open:
                if self.inc.storage.stalled:
                    self._call(self.inc.storage.abort)
                self.inc.cm.__exit__(None, None, None)
            self._fake_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)


def test_the_pipeline_keeps_its_accounts_through_faults_crashes_and_restarts() -> None:
    run_state_machine_as_test(PipelineModel, settings=profiles.machine(examples=12, steps=25))

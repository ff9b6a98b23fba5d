"""SQLite storage via aiosqlite: WAL mode, one transaction per batch, versioned migrations.

All I/O runs on aiosqlite's own thread; nothing here blocks the event loop. The
connection is in autocommit mode and every write is an explicit ``BEGIN IMMEDIATE`` …
``COMMIT``, so a batch and its stats checkpoint land together or not at all.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal

import aiosqlite
import anyio

from ..analysis.stats import StatsDelta, decode_series, encode_series
from ..events import AnalyticsEvent
from .base import IngestResult
from .rows import COLUMNS, PENDING, SYNCED, event_to_row, row_to_event

__all__ = ["MIGRATIONS", "SqliteStorage"]

_COLS: Final = ", ".join(COLUMNS)
_SAVE_CHECKPOINT: Final = (
    "INSERT INTO stats_checkpoint (id, last_event_rowid, series) "
    "VALUES (1, (SELECT coalesce(max(id), 0) FROM events), ?) "
    "ON CONFLICT (id) DO UPDATE SET last_event_rowid = excluded.last_event_rowid, "
    "series = excluded.series"
)
_ROW: Final = "(" + ", ".join("?" * len(COLUMNS)) + ")"
_INSERT: Final = f"INSERT OR IGNORE INTO events ({_COLS}) VALUES {_ROW}"
# Many rows per statement: Python's sqlite3 takes the GIL back after every statement
# step, so fewer, larger statements insert far faster when other threads are busy.
_ROWS_PER_STATEMENT: Final = 50
_INSERT_MANY: Final = f"INSERT OR IGNORE INTO events ({_COLS}) VALUES " + ", ".join(
    [_ROW] * _ROWS_PER_STATEMENT
)
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: events (the outbox is the partial index on pending rows) and the stats checkpoint:
    # totals as of ``last_event_rowid``; later rows are replayed on open. AUTOINCREMENT
    # keeps rowids from being reused after a drain, so the checkpoint's boundary holds.
    f"""
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        agent_id TEXT,
        provider_id TEXT,
        provider TEXT,
        model TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_input_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0,
        pricing_status TEXT,
        duration_ms REAL,
        ttft_ms REAL,
        error_code TEXT,
        error_message TEXT,
        status_code INTEGER,
        sync_state INTEGER NOT NULL DEFAULT {PENDING},
        extra BLOB
    );
    CREATE INDEX events_timestamp ON events (timestamp_ms);
    CREATE INDEX events_pending ON events (id) WHERE sync_state = {PENDING};
    CREATE TABLE stats_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_rowid INTEGER NOT NULL,
        series BLOB NOT NULL
    );
    """,
)

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class SqliteStorage:
    """Events in one SQLite file (WAL). See ``llmtally.storage.base`` for the contract.

    ``synchronous``: ``"NORMAL"`` (default) survives a process crash; a power loss may lose
    the last commits. ``"FULL"`` survives power loss at some cost in write rate.
    ``busy_timeout_ms`` bounds how long a write waits on another process's lock before it
    fails (the persister then retries). One connection serves every caller: an
    ``anyio.Lock`` serialises operations so transactions never interleave.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = 5_000,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (for tests and fault injection)."""
        if self._db is None:
            raise RuntimeError("SqliteStorage is not open")
        return self._db

    async def open(self) -> None:
        """Open (creating the file and its parent folder) and migrate."""
        parent = self.path.parent
        if not await anyio.Path(parent).exists():
            await anyio.Path(parent).mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {self.synchronous}")
            await db.execute("PRAGMA temp_store = MEMORY")
            self._db = db
            async with self._transaction():
                await self._migrate(db)
        except BaseException:
            self._db = None
            await db.close()
            raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` under the lock; ``ROLLBACK`` on any error."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with anyio.CancelScope(shield=True):
                        await db.execute("ROLLBACK")
                raise

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT max(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {current}, newer than this llmtally "
                f"({len(MIGRATIONS)}): upgrade llmtally"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    async def close(self) -> None:
        # Shielded (like httpcore's aclose): a cancelled caller must still release the
        # connection and its thread; closing waits only for the operation in progress.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    await db.close()

    async def schema_version(self) -> int:
        """The applied schema version."""
        return await self._scalar("SELECT max(version) FROM schema_version")

    @staticmethod
    async def _insert(db: aiosqlite.Connection, rows: list[tuple[Any, ...]]) -> None:
        n = _ROWS_PER_STATEMENT
        full = len(rows) // n * n
        if full:
            await db.executemany(
                _INSERT_MANY,
                [tuple(v for r in rows[j : j + n] for v in r) for j in range(0, full, n)],
            )
        if full < len(rows):
            await db.executemany(_INSERT, rows[full:])

    async def write_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> None:
        """Insert ``events``; with ``checkpoint`` (the cumulative totals of every event
        written so far, these included) also save it, in the same transaction."""
        rows = [event_to_row(e) for e in events]
        async with self._transaction() as db:
            if rows:
                await self._insert(db, rows)
            if checkpoint is not None:
                await db.execute(_SAVE_CHECKPOINT, (encode_series(checkpoint),))

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        inserted: list[AnalyticsEvent] = []
        async with self._transaction() as db:
            existing: set[str] = set()
            ids = [e.event_id for e in events]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT event_id FROM events WHERE event_id IN ({marks})"
                async with db.execute(sql, chunk) as cur:
                    existing.update(r[0] for r in await cur.fetchall())
            for e in events:
                if e.event_id not in existing:
                    existing.add(e.event_id)  # a repeat within the batch is a duplicate too
                    inserted.append(e)
            if inserted:
                await self._insert(db, [event_to_row(e, SYNCED) for e in inserted])
        return IngestResult(inserted=inserted, duplicates=len(events) - len(inserted))

    async def load_totals(self) -> StatsDelta:
        """The checkpoint, plus every event stored after it (replayed)."""
        async with self._lock:
            db = self.db
            async with db.execute(
                "SELECT last_event_rowid, series FROM stats_checkpoint WHERE id = 1"
            ) as cur:
                row = await cur.fetchone()
            last_rowid, totals = (row[0], decode_series(row[1])) if row else (0, StatsDelta())
            async with db.execute(
                f"SELECT {_COLS} FROM events WHERE id > ? AND event_type IN "
                "('llm_request_completed', 'llm_request_failed') ORDER BY id",
                (last_rowid,),
            ) as cur:
                while batch := await cur.fetchmany(5_000):
                    for r in batch:
                        totals.add(row_to_event(r))
        return totals

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[AnalyticsEvent]:
        async with self._lock, self.db.execute(sql, params) as cur:
            return [row_to_event(r) for r in await cur.fetchall()]

    async def pending(self, limit: int) -> list[AnalyticsEvent]:
        return await self._select(
            f"SELECT {_COLS} FROM events WHERE sync_state = {PENDING} ORDER BY id LIMIT ?",
            (limit,),
        )

    async def mark(self, event_ids: Sequence[str], state: int) -> int:
        changed = 0
        async with self._transaction() as db:
            for i in range(0, len(event_ids), 500):
                chunk = list(event_ids[i : i + 500])
                cur = await db.execute(
                    f"UPDATE events SET sync_state = ? WHERE event_id IN "
                    f"({','.join('?' * len(chunk))}) AND sync_state != ?",
                    (state, *chunk, state),
                )
                changed += cur.rowcount
                await cur.close()
        return changed

    async def _scalar(self, sql: str) -> int:
        async with self._lock, self.db.execute(sql) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def count_pending(self) -> int:
        return await self._scalar(f"SELECT count(*) FROM events WHERE sync_state = {PENDING}")

    async def count_events(self) -> int:
        return await self._scalar("SELECT count(*) FROM events")

    async def snapshot(self, limit: int | None = None) -> list[AnalyticsEvent]:
        if limit is None:
            return await self._select(f"SELECT {_COLS} FROM events ORDER BY id")
        return await self._select(f"SELECT {_COLS} FROM events ORDER BY id LIMIT ?", (limit,))

    async def drain(self) -> list[AnalyticsEvent]:
        async with self._transaction() as db:
            async with db.execute(f"SELECT {_COLS} FROM events ORDER BY id") as cur:
                events = [row_to_event(r) for r in await cur.fetchall()]
            await db.execute("DELETE FROM events")
        return events

    async def clear(self) -> None:
        async with self._transaction() as db:
            for table in ("events", "stats_checkpoint"):
                await db.execute(f"DELETE FROM {table}")

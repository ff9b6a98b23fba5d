"""SQLite storage via aiosqlite: WAL mode, one transaction per batch, versioned migrations.

All I/O runs on aiosqlite's own thread; nothing here blocks the event loop. The
connection is in autocommit mode and every write is an explicit ``BEGIN IMMEDIATE`` …
``COMMIT``, so a batch, its rollup rows and its stats checkpoint land together or not at
all. Queries (``QueryStorage``) run on a second, read-only connection opened on first use:
WAL lets them read a consistent snapshot beside the writer without holding it up.

A corrupt file (not a database, a truncated one, a malformed image) is refused at open
by default; with ``on_corrupt="move_aside"`` (what ``EventStore`` uses: an embedded
store must keep its router running) it is renamed with a UTC timestamp suffix — its
``-wal`` and ``-shm`` files too — logged at WARNING, counted in ``moved_aside``, and a
fresh database is created in its place.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import aiosqlite
import anyio
import anyio.lowlevel

from ..analysis.stats import StatsDelta, decode_series, encode_series
from ..events import AnalyticsEvent
from ._sql import (
    EVENT_SELECT,
    REQUEST_SELECT,
    REQUEST_TYPES,
    Params,
    events_where,
    keyset,
    qmark,
    sqlite_tag,
)
from .base import (
    DEFAULT_EXPIRE_CHUNK,
    DEFAULT_RAW_TTL_MS,
    DEFAULT_ROLLUP_TTL_MS,
    Cursor,
    EventFilter,
    ExpireResult,
    IngestResult,
    PreparedBatch,
    RequestRow,
    RollupRow,
    StorageInfo,
)
from .rollups import (
    DIMENSIONS,
    HOUR_MS,
    MINUTE_MS,
    ROLLUP_COLUMNS,
    rollup_events,
)
from .rows import COLUMNS, PENDING, SYNCED, endpoint_of, event_to_row, row_to_event
from .sqlite_write import ingest_events, upsert_rollups, write_rows
from .writer_process import WriterProcess

__all__ = ["MIGRATIONS", "CorruptDatabaseError", "SqliteStorage", "Writer"]

_T = TypeVar("_T")


async def _on_connection_thread(db: aiosqlite.Connection, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(conn, *args)`` on ``db``'s own thread, where all its statements run, in one
    hop instead of one per statement. (aiosqlite's queue; it has no public hook for it.)"""
    result: _T = await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
    return result


_COLS: Final = ", ".join(COLUMNS)
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
    # 2: keyset pagination on (timestamp_ms, event_id), which also serves every time range
    # (so the old index goes); rollup rows per (period, facet, start, value), see
    # ``rollups.py``. Events stored before this version are rolled up on upgrade.
    """
    CREATE INDEX events_time_id ON events (timestamp_ms, event_id);
    DROP INDEX events_timestamp;
    CREATE TABLE rollups (
        period_ms INTEGER NOT NULL,
        dim TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        value TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        failed_requests INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_input_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0,
        unpriced_requests INTEGER NOT NULL DEFAULT 0,
        unpriced_input_tokens INTEGER NOT NULL DEFAULT 0,
        unpriced_output_tokens INTEGER NOT NULL DEFAULT 0,
        duration_count INTEGER NOT NULL DEFAULT 0,
        duration_sum REAL NOT NULL DEFAULT 0,
        duration_min REAL,
        duration_max REAL,
        ttft_count INTEGER NOT NULL DEFAULT 0,
        ttft_sum REAL NOT NULL DEFAULT 0,
        ttft_min REAL,
        ttft_max REAL,
        sketches BLOB,
        mix BLOB,
        PRIMARY KEY (period_ms, dim, start_ms, value)
    ) WITHOUT ROWID;
    """,
    # 3: the envelope (``rows.ENVELOPE_COLUMNS``); rows stored before read back with the
    # defaults (NULL is a default, see ``rows``). Adding columns rewrites nothing. The partial index
    # serves ``/analytics/correlate`` and costs nothing for events without a correlation.
    """
    ALTER TABLE events ADD COLUMN schema_version TEXT;
    ALTER TABLE events ADD COLUMN correlation_id TEXT;
    ALTER TABLE events ADD COLUMN parent_event_id TEXT;
    ALTER TABLE events ADD COLUMN severity TEXT;
    ALTER TABLE events ADD COLUMN environment TEXT;
    ALTER TABLE events ADD COLUMN tags TEXT;
    CREATE INDEX events_correlation ON events (correlation_id, timestamp_ms, event_id)
        WHERE correlation_id IS NOT NULL;
    """,
)
_ROLLUPS_VERSION: Final = 2

_ROLLUP_STORED: Final = ", ".join(ROLLUP_COLUMNS[4:])

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
OnCorrupt = Literal["raise", "move_aside"]
Writer = Literal["thread", "process"]

logger: Final = logging.getLogger("llmtally.storage")

_MAGIC: Final = b"SQLite format 3\x00"


class CorruptDatabaseError(sqlite3.DatabaseError):
    """The file is not a sound SQLite database (garbage, truncated, malformed)."""


def _check_header(path: Path) -> None:
    """Raise ``CorruptDatabaseError`` if the file at ``path`` (if any, and not empty) does
    not start with SQLite's header or is shorter than the pages its header declares.
    Blocking: run it in a worker thread."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    if not header:
        return  # an empty file is a database yet to be created
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise CorruptDatabaseError("file is not a database (no SQLite header)")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65_536 if page_size == 1 else page_size
    pages, change, valid_for = struct.unpack(">I", header[28:32]), header[24:28], header[92:96]
    # The header's page count is meaningful only when the two counters agree (SQLite
    # file format, section 1.3.8); the file must then hold every one of those pages.
    if change == valid_for and pages[0] and size < pages[0] * page_size:
        raise CorruptDatabaseError(
            f"database file truncated: {size} bytes, header declares {pages[0] * page_size}"
        )


def _is_corruption(exc: BaseException) -> bool:
    """A database error that says the file is damaged (not a lock, not permissions)."""
    if isinstance(exc, CorruptDatabaseError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc)


def _move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm files) with a UTC timestamp suffix; returns the
    new name of the main file. Blocking: run it in a worker thread."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():  # two in one second: keep both
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def _backfill_rollups(conn: sqlite3.Connection) -> None:
    """Roll up every stored event (inside the caller's transaction)."""
    last = 0
    while rows := conn.execute(
        f"SELECT id, {_COLS} FROM events WHERE id > ? ORDER BY id LIMIT 5000", (last,)
    ).fetchall():
        last = rows[-1][0]
        upsert_rollups(conn, rollup_events(row_to_event(r[1:]) for r in rows))


class SqliteStorage:
    """Events in one SQLite file (WAL). See ``llmtally.storage.base`` for the contract.

    ``synchronous``: ``"NORMAL"`` (default) survives a process crash; a power loss may lose
    the last commits. ``"FULL"`` survives power loss at some cost in write rate.
    ``busy_timeout_ms`` bounds how long a write waits on another process's lock before it
    fails (the persister then retries). One connection serves every caller: an
    ``anyio.Lock`` serialises operations so transactions never interleave.
    ``on_corrupt``: ``"raise"`` (default) or ``"move_aside"`` a damaged file at open (see
    the module docstring); ``moved_aside`` lists the files moved so far.
    ``writer``: where batches of events are written: ``"thread"`` (default: on the
    connection's thread) or ``"process"`` (a child process, see ``writer_process``:
    SQLite's work then runs beside the event loop instead of competing with it for the
    GIL — about twice the sustained write rate on two cores; costs a process and ~0.1 s
    at open). Everything else (queries, sync marks, retention) stays on this process's
    connections either way.
    """

    durable = True
    has_rollups = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = 5_000,
        raw_ttl_ms: int | None = DEFAULT_RAW_TTL_MS,
        rollup_ttl_ms: int | None = DEFAULT_ROLLUP_TTL_MS,
        on_corrupt: OnCorrupt = "raise",
        writer: Writer = "thread",
    ) -> None:
        if writer not in ("thread", "process"):
            raise ValueError(f"writer must be 'thread' or 'process', got {writer!r}")
        self.path = Path(path)
        self._in_memory = str(self.path) == ":memory:"
        if writer == "process" and self._in_memory:
            raise ValueError("writer='process' needs a database file, not ':memory:'")
        self.writer: Writer = writer
        self._writer_process: WriterProcess | None = None
        self.on_corrupt = on_corrupt
        self.moved_aside: list[Path] = []
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.raw_ttl_ms = raw_ttl_ms
        self.rollup_ttl_ms = rollup_ttl_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = anyio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (for tests and fault injection)."""
        if self._db is None:
            raise RuntimeError("SqliteStorage is not open")
        return self._db

    async def open(self) -> None:
        """Open (creating the file and its parent folder) and migrate. Raises
        ``CorruptDatabaseError`` (a ``sqlite3.DatabaseError``) for a damaged file unless
        ``on_corrupt="move_aside"``."""
        parent = self.path.parent
        if not await anyio.Path(parent).exists():
            await anyio.Path(parent).mkdir(parents=True, exist_ok=True)
        try:
            await self._open()
        except Exception as exc:
            if not _is_corruption(exc) or self._in_memory:
                raise
            if self.on_corrupt != "move_aside":
                raise CorruptDatabaseError(f"{self.path} is damaged: {exc}") from exc
            moved = await anyio.to_thread.run_sync(_move_aside, self.path)
            self.moved_aside.append(moved)
            logger.warning(
                "llmtally: database %s is damaged (%s); moved it to %s and started a fresh one",
                self.path,
                exc,
                moved,
            )
            await self._open()
        if self.writer == "process":
            self._writer_process = WriterProcess(
                self.path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms
            )
            try:
                await self._writer_process.start()
            except BaseException:
                await self.close()
                raise

    async def _open(self) -> None:
        if not self._in_memory:
            await anyio.to_thread.run_sync(_check_header, self.path)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        if not (hasattr(db, "_execute") and hasattr(db, "_conn")):  # see _on_connection_thread
            await db.close()
            raise RuntimeError(
                f"aiosqlite {getattr(aiosqlite, '__version__', '?')} lacks the connection-thread "
                "hook llmtally writes through: install aiosqlite>=0.20,<0.23"
            )
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {self.synchronous}")
            await db.execute("PRAGMA temp_store = MEMORY")
            self._db = db
            async with self._transaction():
                await self._migrate(db)
            # Reads every page of the events table's smallest index: a damaged one shows
            # now, not in the middle of the router's traffic.
            await self._scalar("SELECT count(*) FROM events")
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
        if 0 < current < _ROLLUPS_VERSION:
            # After every migration (same transaction): rows are read in today's layout.
            await self._backfill_rollups(db)

    @staticmethod
    async def _backfill_rollups(db: aiosqlite.Connection) -> None:
        """Roll up the events an older llmtally stored (part of the upgrade transaction)."""
        await _on_connection_thread(db, _backfill_rollups)

    async def close(self) -> None:
        # Shielded (like httpcore's aclose): a cancelled caller must still release the
        # connection and its thread; closing waits only for the operation in progress.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                writer, self._writer_process = self._writer_process, None
                if writer is not None:
                    await writer.aclose()
            async with self._reader_lock:
                reader, self._reader = self._reader, None
                if reader is not None:
                    await reader.close()
            async with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    await db.close()

    async def schema_version(self) -> int:
        """The applied schema version."""
        return await self._scalar("SELECT max(version) FROM schema_version")

    async def write_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> None:
        """Insert ``events`` and add the new ones to the rollups; with ``checkpoint`` (the
        cumulative totals of every event written so far, these included) also save it,
        all in one transaction (``sqlite_write.write_rows``). Events already stored are
        neither inserted nor rolled up again, so retrying a batch whose commit outcome is
        unknown is safe. With ``writer="process"`` the child process writes it."""
        await self.write_prepared(self.prepare_batch(events, checkpoint))

    def prepare_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> PreparedBatch:
        """Rows, rollups and the encoded checkpoint — for the writer process, the whole
        request frame, rows and checkpoint only (the child rolls up) — built in the
        caller's thread, beside a write in progress."""
        blob = None if checkpoint is None else encode_series(checkpoint)
        rows = [event_to_row(e) for e in events]
        if self.writer == "process":  # the child rolls the rows up: its share of the work
            return PreparedBatch(events, blob, WriterProcess.encode_write(rows, blob))
        return PreparedBatch(events, blob, (rows, rollup_events(events)))

    async def write_prepared(self, batch: PreparedBatch) -> None:
        """One transaction (``sqlite_write.write_rows``) on the connection's thread, or
        in the writer process."""
        async with self._lock:
            if self.writer == "thread":
                rows, deltas = batch.work
                await _on_connection_thread(self.db, write_rows, rows, deltas, batch.checkpoint)
                return
            if self._writer_process is None:
                raise RuntimeError("SqliteStorage is not open")
            await self._writer_process.write(batch.work)

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        """Store the events whose id is new (as synced) and add them to the rollups, in
        one transaction (``sqlite_write.ingest_events``); a repeat within ``events``
        counts once. With ``writer="process"`` the child process deduplicates, inserts
        and rolls up (``WriterProcess.ingest``): this process only builds the rows.
        A busy database raises ``sqlite3.OperationalError`` (thread) or ``WriterError``
        of kind ``"OperationalError"`` (process)."""
        writer = self._writer_process
        if writer is None:
            async with self._lock:
                new = await _on_connection_thread(self.db, ingest_events, events)
        else:
            rows = [event_to_row(e, SYNCED) for e in events]
            async with self._lock:
                new = await writer.ingest(rows)
        inserted = [events[i] for i in new]
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
            for table in ("events", "stats_checkpoint", "rollups"):
                await db.execute(f"DELETE FROM {table}")

    # --- queries (QueryStorage) ---------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of ``sql`` from the read-only connection (opened on first use)."""
        if self._in_memory:  # a second connection would see another database
            async with self._lock, self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        async with self._reader_lock:
            reader = self._reader
            if reader is None:
                if self._db is None:
                    raise RuntimeError("SqliteStorage is not open")
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                try:
                    await reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                    await reader.execute("PRAGMA query_only = 1")
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await reader.close()
                    raise
                self._reader = reader
            async with reader.execute(sql, params) as cur:
                return list(await cur.fetchall())

    async def query_events(
        self, flt: EventFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> list[AnalyticsEvent]:
        p = Params(qmark)
        where = events_where(p, flt, after, tag_match=sqlite_tag)
        sql = (
            f"SELECT {EVENT_SELECT} FROM events WHERE {where} "
            f"ORDER BY timestamp_ms, event_id LIMIT {p(limit)}"
        )
        return [row_to_event(r) for r in await self._read(sql, p.values)]

    async def scan_requests(
        self, start_ms: int, end_ms: int, *, after: Cursor | None = None, limit: int = 5_000
    ) -> list[RequestRow]:
        p = Params(qmark)
        sql = (
            f"SELECT {REQUEST_SELECT} FROM events WHERE {keyset(p, start_ms, end_ms, after)} "
            f"AND event_type IN {REQUEST_TYPES} ORDER BY timestamp_ms, event_id LIMIT {p(limit)}"
        )
        return [
            (*r[:2], bool(r[2]), *r[3:7], endpoint_of(r[7]), *r[8:13], bool(r[13]), *r[14:])
            for r in await self._read(sql, p.values)
        ]

    async def scan_rollups(
        self,
        period_ms: int,
        dim: str,
        start_ms: int,
        end_ms: int,
        *,
        after: Cursor | None = None,
        limit: int = 5_000,
    ) -> list[RollupRow]:
        p = Params(qmark)
        sql = (
            f"SELECT start_ms, value, {_ROLLUP_STORED} FROM rollups "
            f"WHERE period_ms = {p(period_ms)} AND dim = {p(dim)} AND "
            f"{keyset(p, start_ms, end_ms, after, 'start_ms', 'value')} "
            f"ORDER BY start_ms, value LIMIT {p(limit)}"
        )
        rows = await self._read(sql, p.values)
        return [(r[0], r[1], r[2:]) for r in rows]

    async def expire(self, now_ms: int, *, chunk_size: int = DEFAULT_EXPIRE_CHUNK) -> ExpireResult:
        """Delete expired rows, ``chunk_size`` per transaction; the write lock is released
        between chunks so that ingest never waits for more than one chunk."""
        events = rollups = 0
        if self.raw_ttl_ms is not None:
            events = await self._delete_chunks(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE timestamp_ms < ? "
                f"AND sync_state != {PENDING} ORDER BY timestamp_ms LIMIT ?)",
                [(now_ms - self.raw_ttl_ms, chunk_size)],
                chunk_size,
            )
        if self.rollup_ttl_ms is not None:
            cutoff = now_ms - self.rollup_ttl_ms
            rollups = await self._delete_chunks(
                "DELETE FROM rollups WHERE period_ms = ? AND dim = ? AND start_ms IN ("
                "SELECT start_ms FROM rollups WHERE period_ms = ? AND dim = ? AND start_ms < ? "
                "ORDER BY start_ms LIMIT ?)",
                [
                    (period, dim, period, dim, cutoff, chunk_size)
                    for period in (MINUTE_MS, HOUR_MS)
                    for dim in DIMENSIONS
                ],
                chunk_size,
            )
        return ExpireResult(events=events, rollups=rollups)

    async def _delete_chunks(
        self, sql: str, params: Iterable[tuple[Any, ...]], chunk_size: int
    ) -> int:
        deleted = 0
        for args in params:
            while True:
                async with self._transaction() as db:
                    cur = await db.execute(sql, args)
                    n = cur.rowcount
                    await cur.close()
                deleted += n
                if n < chunk_size:
                    break
                await anyio.lowlevel.checkpoint()  # let a waiting writer in
        return deleted

    async def info(self) -> StorageInfo:
        return StorageInfo(
            backend_type="sqlite",
            ttl_seconds=None if self.raw_ttl_ms is None else self.raw_ttl_ms // 1000,
            rollup_ttl_seconds=None if self.rollup_ttl_ms is None else self.rollup_ttl_ms // 1000,
        )

"""PostgreSQL storage via an asyncpg pool: what many stateless collectors share.

Needs the ``postgres`` extra. Same interface, contracts and rollups as ``SqliteStorage``;
what differs is how concurrent writers stay correct:

- A batch is copied (binary ``COPY``) into a per-connection temporary table, then
  ``INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING RETURNING event_id`` stores the
  new ones: two collectors receiving the same retried batch store each event once, and
  only the one whose insert won rolls it up.
- Rollup rows are created-or-locked by one ``INSERT … ON CONFLICT DO UPDATE … RETURNING``
  in key order (so two writers never lock the same rows in opposite orders), merged in
  Python and written back, in the same transaction as the events.
- ``lock_timeout`` bounds every lock wait (``busy_timeout_ms``); a timeout, deadlock or
  serialisation failure raises asyncpg's error, whose SQLSTATE the collector maps to 503.
- Migrations run under a transaction-scoped advisory lock, so collectors starting
  together apply each version once.

``schema``: the tables live in this schema (it must exist); ``None`` uses the server's
``search_path``. The stats checkpoint assumes one writer of checkpoints (an embedded
store); collectors never write one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import anyio
import asyncpg  # type: ignore[import-untyped]

from ..analysis.stats import StatsDelta, decode_series, encode_series
from ..events import AnalyticsEvent
from ._sql import (
    EVENT_SELECT,
    REQUEST_SELECT,
    REQUEST_TYPES,
    Params,
    dollar,
    events_where,
    keyset,
    postgres_tag,
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
    Rollup,
    RollupKey,
    rollup_events,
    rollup_from_row,
    rollup_to_row,
)
from .rows import COLUMNS, PENDING, SYNCED, endpoint_of, event_to_row, row_to_event

__all__ = ["MIGRATIONS", "PostgresStorage"]

_COLS: Final = ", ".join(COLUMNS)
_MIGRATION_LOCK: Final = 0x6C6C6D74616C6C79  # "llmtally"

_EVENT_COLUMNS_DDL: Final = """
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    agent_id TEXT,
    provider_id TEXT,
    provider TEXT,
    model TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    pricing_status TEXT,
    duration_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    error_code TEXT,
    error_message TEXT,
    status_code INTEGER,
    sync_state SMALLINT NOT NULL DEFAULT 0,
    extra BYTEA
"""
_ENVELOPE_COLUMNS_DDL: Final = """
    schema_version TEXT,
    correlation_id TEXT,
    parent_event_id TEXT,
    severity TEXT,
    environment TEXT,
    tags JSONB
"""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: events (outbox = partial index on pending rows; keyset pages on (timestamp_ms,
    # event_id)), the stats checkpoint, and the rollups (see ``rollups.py``).
    f"""
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        {_EVENT_COLUMNS_DDL},
        UNIQUE (event_id)
    );
    CREATE INDEX events_time_id ON events (timestamp_ms, event_id);
    CREATE INDEX events_pending ON events (id) WHERE sync_state = {PENDING};
    CREATE TABLE stats_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_rowid BIGINT NOT NULL,
        series BYTEA NOT NULL
    );
    CREATE TABLE rollups (
        period_ms BIGINT NOT NULL,
        dim TEXT NOT NULL,
        start_ms BIGINT NOT NULL,
        value TEXT NOT NULL,
        requests BIGINT NOT NULL DEFAULT 0,
        failed_requests BIGINT NOT NULL DEFAULT 0,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cached_input_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_input_tokens BIGINT NOT NULL DEFAULT 0,
        cost_nanos BIGINT NOT NULL DEFAULT 0,
        unpriced_requests BIGINT NOT NULL DEFAULT 0,
        unpriced_input_tokens BIGINT NOT NULL DEFAULT 0,
        unpriced_output_tokens BIGINT NOT NULL DEFAULT 0,
        duration_count BIGINT NOT NULL DEFAULT 0,
        duration_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
        duration_min DOUBLE PRECISION,
        duration_max DOUBLE PRECISION,
        ttft_count BIGINT NOT NULL DEFAULT 0,
        ttft_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
        ttft_min DOUBLE PRECISION,
        ttft_max DOUBLE PRECISION,
        sketches BYTEA,
        mix BYTEA,
        PRIMARY KEY (period_ms, dim, start_ms, value)
    );
    """,
    # 2: the envelope (``rows.ENVELOPE_COLUMNS``); rows stored before read back with the
    # defaults (NULL is a default, see ``rows``). Nothing is rewritten; a collector still
    # running the previous version keeps inserting (it names its columns). The partial
    # index serves ``/analytics/correlate`` and costs nothing for events without one.
    """
    ALTER TABLE events
        ADD COLUMN schema_version TEXT,
        ADD COLUMN correlation_id TEXT,
        ADD COLUMN parent_event_id TEXT,
        ADD COLUMN severity TEXT,
        ADD COLUMN environment TEXT,
        ADD COLUMN tags JSONB;
    CREATE INDEX events_correlation ON events (correlation_id, timestamp_ms, event_id)
        WHERE correlation_id IS NOT NULL;
    """,
)

# The staging table of one connection: rows vanish at the end of every transaction.
_CREATE_INCOMING: Final = (
    f"CREATE TEMP TABLE incoming (ord INTEGER NOT NULL, {_EVENT_COLUMNS_DDL}, "
    f"{_ENVELOPE_COLUMNS_DDL}) ON COMMIT DELETE ROWS"
)
_INSERT_FROM_INCOMING: Final = (
    f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM incoming ORDER BY ord "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_SAVE_CHECKPOINT: Final = (
    "INSERT INTO stats_checkpoint (id, last_event_rowid, series) "
    "VALUES (1, (SELECT coalesce(max(id), 0) FROM events), $1) "
    "ON CONFLICT (id) DO UPDATE SET last_event_rowid = excluded.last_event_rowid, "
    "series = excluded.series"
)
_ROLLUP_STORED: Final = ", ".join(ROLLUP_COLUMNS[4:])
_LOCK_ROLLUPS: Final = (
    "INSERT INTO rollups (period_ms, dim, start_ms, value) "
    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) "
    "ORDER BY 1, 2, 3, 4 "
    "ON CONFLICT (period_ms, dim, start_ms, value) DO UPDATE SET requests = rollups.requests "
    f"RETURNING period_ms, dim, start_ms, value, {_ROLLUP_STORED}"
)
_ROLLUP_TYPES: Final = {
    "period_ms": "bigint",
    "dim": "text",
    "start_ms": "bigint",
    "value": "text",
    "duration_sum": "float8",
    "duration_min": "float8",
    "duration_max": "float8",
    "ttft_sum": "float8",
    "ttft_min": "float8",
    "ttft_max": "float8",
    "sketches": "bytea",
    "mix": "bytea",
}
# Every touched row in one statement: one array per column (``unnest`` zips them).
_UPDATE_ROLLUPS: Final = (
    "UPDATE rollups AS r SET "
    + ", ".join(f"{c} = u.{c}" for c in ROLLUP_COLUMNS[4:])
    + " FROM unnest("
    + ", ".join(
        f"${i}::{_ROLLUP_TYPES.get(c, 'bigint')}[]" for i, c in enumerate(ROLLUP_COLUMNS, start=1)
    )
    + f") AS u({', '.join(ROLLUP_COLUMNS)}) WHERE r.period_ms = u.period_ms AND r.dim = u.dim "
    "AND r.start_ms = u.start_ms AND r.value = u.value"
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE_INCOMING)


def _event(row: Sequence[Any]) -> AnalyticsEvent:
    return row_to_event((str(row[0]), *row[1:]))


class PostgresStorage:
    """Events in PostgreSQL, shared by any number of collectors. See
    ``llmtally.storage.base`` for the contract and the module docstring for concurrency.

    ``busy_timeout_ms`` becomes ``lock_timeout``; ``command_timeout`` (seconds) bounds a
    statement on the client side. Pool size: ``min_size`` to ``max_size`` connections.
    """

    durable = True
    has_rollups = True
    concurrent_writes = True
    """Writes may run side by side (each on its own pooled connection): the collector
    need not serialise them."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        busy_timeout_ms: int = 5_000,
        command_timeout: float = 60.0,
        raw_ttl_ms: int | None = DEFAULT_RAW_TTL_MS,
        rollup_ttl_ms: int | None = DEFAULT_ROLLUP_TTL_MS,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.busy_timeout_ms = busy_timeout_ms
        self.command_timeout = command_timeout
        self.raw_ttl_ms = raw_ttl_ms
        self.rollup_ttl_ms = rollup_ttl_ms
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:  # never show the DSN: it may hold a password
        return f"PostgresStorage(schema={self.schema!r})"

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool (for tests)."""
        if self._pool is None:
            raise RuntimeError("PostgresStorage is not open")
        return self._pool

    async def open(self) -> None:
        """Connect and migrate. Raises asyncpg/OS errors for a bad URL or server, and
        ``RuntimeError`` when the schema is newer than this llmtally."""
        settings = {"lock_timeout": str(int(self.busy_timeout_ms))}
        if self.schema is not None:
            settings["search_path"] = self.schema
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            command_timeout=self.command_timeout,
            server_settings=settings,
            init=_init_connection,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await self._migrate(conn)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await pool.close()
            raise
        self._pool = pool

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"the database has schema version {current}, newer than this llmtally "
                f"({len(MIGRATIONS)}): upgrade llmtally"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def close(self) -> None:
        """Close the pool, waiting for connections in use (shielded, like SQLite's)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await pool.close()

    async def schema_version(self) -> int:
        """The applied schema version."""
        return int(await self.pool.fetchval("SELECT max(version) FROM schema_version"))

    # --- writes -----------------------------------------------------------------------

    @staticmethod
    async def _insert(
        conn: asyncpg.Connection, events: Sequence[AnalyticsEvent], state: int | None
    ) -> list[AnalyticsEvent]:
        """Insert ``events`` whose id is new; returns those, in batch order."""
        if not events:
            return []
        await conn.copy_records_to_table(
            "incoming",
            records=[(i, *event_to_row(e, state)) for i, e in enumerate(events)],
            columns=("ord", *COLUMNS),
        )
        returned = await conn.fetch(_INSERT_FROM_INCOMING)
        if len(returned) == len(events):
            return list(events)  # every id new (so none repeated within the batch)
        stored = {str(r[0]) for r in returned}
        new: list[AnalyticsEvent] = []
        for e in events:
            event_id = e.event_id.lower()
            if event_id in stored:
                stored.discard(event_id)  # a repeat within the batch is a duplicate
                new.append(e)
        return new

    @staticmethod
    async def _upsert_rollups(conn: asyncpg.Connection, deltas: dict[RollupKey, Rollup]) -> None:
        if not deltas:
            return
        keys = sorted(deltas)
        rows = await conn.fetch(
            _LOCK_ROLLUPS,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
        )
        updates = []
        for row in rows:
            key = (row[0], row[1], row[2], row[3])
            merged = rollup_from_row(tuple(row)[4:])
            merged.merge(deltas[key])
            updates.append((*key, *rollup_to_row(merged, percentiles=key[0] == HOUR_MS)))
        await conn.execute(_UPDATE_ROLLUPS, *map(list, zip(*updates, strict=True)))

    async def write_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> None:
        """Insert the new ``events``, roll them up and save ``checkpoint``, in one
        transaction. Already stored ids are skipped (a retry is safe)."""
        await self.write_prepared(self.prepare_batch(events, checkpoint))

    def prepare_batch(
        self, events: Sequence[AnalyticsEvent], checkpoint: StatsDelta | None = None
    ) -> PreparedBatch:
        """Encodes the checkpoint; the rows and rollups depend on which ids are new."""
        return PreparedBatch(events, None if checkpoint is None else encode_series(checkpoint))

    async def write_prepared(self, batch: PreparedBatch) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            new = await self._insert(conn, batch.events, None)
            await self._upsert_rollups(conn, rollup_events(new))
            if batch.checkpoint is not None:
                await conn.execute(_SAVE_CHECKPOINT, batch.checkpoint)

    async def ingest(self, events: Sequence[AnalyticsEvent]) -> IngestResult:
        """Store the events whose id is new (as synced) and roll them up."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await self._insert(conn, events, SYNCED)
            await self._upsert_rollups(conn, rollup_events(inserted))
        return IngestResult(inserted=inserted, duplicates=len(events) - len(inserted))

    async def load_totals(self) -> StatsDelta:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            row = await conn.fetchrow(
                "SELECT last_event_rowid, series FROM stats_checkpoint WHERE id = 1"
            )
            last, totals = (row[0], decode_series(row[1])) if row else (0, StatsDelta())
            cursor = conn.cursor(
                f"SELECT {_COLS} FROM events WHERE id > $1 AND event_type IN {REQUEST_TYPES} "
                "ORDER BY id",
                last,
                prefetch=5_000,
            )
            async for r in cursor:
                totals.add(_event(r))
        return totals

    async def pending(self, limit: int) -> list[AnalyticsEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_COLS} FROM events WHERE sync_state = {PENDING} ORDER BY id LIMIT $1",
            limit,
        )
        return [_event(r) for r in rows]

    async def mark(self, event_ids: Sequence[str], state: int) -> int:
        result = await self.pool.execute(
            "UPDATE events SET sync_state = $1 WHERE event_id = ANY($2::uuid[]) "
            "AND sync_state != $1",
            state,
            list(event_ids),
        )
        return int(result.rsplit(" ", 1)[-1])

    async def count_pending(self) -> int:
        return int(
            await self.pool.fetchval(f"SELECT count(*) FROM events WHERE sync_state = {PENDING}")
        )

    async def count_events(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM events"))

    async def snapshot(self, limit: int | None = None) -> list[AnalyticsEvent]:
        rows = await self.pool.fetch(f"SELECT {_COLS} FROM events ORDER BY id LIMIT $1", limit)
        return [_event(r) for r in rows]

    async def drain(self) -> list[AnalyticsEvent]:
        rows = await self.pool.fetch(f"DELETE FROM events RETURNING id, {_COLS}")
        return [_event(r[1:]) for r in sorted(rows, key=lambda r: r[0])]

    async def clear(self) -> None:
        await self.pool.execute("TRUNCATE events, stats_checkpoint, rollups")

    # --- queries (QueryStorage) ---------------------------------------------------------

    async def query_events(
        self, flt: EventFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> list[AnalyticsEvent]:
        p = Params(dollar)
        where = events_where(p, flt, after, key_cast="::uuid", tag_match=postgres_tag)
        sql = (
            f"SELECT {EVENT_SELECT} FROM events WHERE {where} "
            f"ORDER BY timestamp_ms, event_id LIMIT {p(limit)}"
        )
        return [_event(r) for r in await self.pool.fetch(sql, *p.values)]

    async def scan_requests(
        self, start_ms: int, end_ms: int, *, after: Cursor | None = None, limit: int = 5_000
    ) -> list[RequestRow]:
        p = Params(dollar)
        where = keyset(p, start_ms, end_ms, after, key_cast="::uuid")
        sql = (
            f"SELECT {REQUEST_SELECT} FROM events WHERE {where} "
            f"AND event_type IN {REQUEST_TYPES} ORDER BY timestamp_ms, event_id LIMIT {p(limit)}"
        )
        return [
            (r[0], str(r[1]), *r[2:7], endpoint_of(r[7]), *r[8:])
            for r in await self.pool.fetch(sql, *p.values)
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
        p = Params(dollar)
        sql = (
            f"SELECT start_ms, value, {_ROLLUP_STORED} FROM rollups "
            f"WHERE period_ms = {p(period_ms)} AND dim = {p(dim)} AND "
            f"{keyset(p, start_ms, end_ms, after, 'start_ms', 'value')} "
            f"ORDER BY start_ms, value LIMIT {p(limit)}"
        )
        rows = await self.pool.fetch(sql, *p.values)
        return [(r[0], r[1], tuple(r)[2:]) for r in rows]

    async def expire(self, now_ms: int, *, chunk_size: int = DEFAULT_EXPIRE_CHUNK) -> ExpireResult:
        """Delete expired rows, ``chunk_size`` per statement (each its own transaction);
        rows another collector is writing or expiring right now are skipped, not waited
        for."""
        events = rollups = 0
        if self.raw_ttl_ms is not None:
            events = await self._delete_chunks(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE timestamp_ms < $1 "
                f"AND sync_state != {PENDING} ORDER BY timestamp_ms LIMIT $2 "
                "FOR UPDATE SKIP LOCKED)",
                [(now_ms - self.raw_ttl_ms, chunk_size)],
                chunk_size,
            )
        if self.rollup_ttl_ms is not None:
            cutoff = now_ms - self.rollup_ttl_ms
            rollups = await self._delete_chunks(
                "DELETE FROM rollups WHERE (period_ms, dim, start_ms, value) IN ("
                "SELECT period_ms, dim, start_ms, value FROM rollups WHERE period_ms = $1 "
                "AND dim = $2 AND start_ms < $3 ORDER BY start_ms LIMIT $4 "
                "FOR UPDATE SKIP LOCKED)",
                [(p, d, cutoff, chunk_size) for p in (MINUTE_MS, HOUR_MS) for d in DIMENSIONS],
                chunk_size,
            )
        return ExpireResult(events=events, rollups=rollups)

    async def _delete_chunks(
        self, sql: str, params: Iterable[tuple[Any, ...]], chunk_size: int
    ) -> int:
        deleted = 0
        for args in params:
            while True:
                n = int((await self.pool.execute(sql, *args)).rsplit(" ", 1)[-1])
                deleted += n
                if n < chunk_size:
                    break
        return deleted

    async def info(self) -> StorageInfo:
        return StorageInfo(
            backend_type="postgresql",
            ttl_seconds=None if self.raw_ttl_ms is None else self.raw_ttl_ms // 1000,
            rollup_ttl_seconds=None if self.rollup_ttl_ms is None else self.rollup_ttl_ms // 1000,
        )

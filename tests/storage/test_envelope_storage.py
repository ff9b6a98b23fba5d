"""The envelope in storage: stored and filtered alike on SQLite and PostgreSQL, and
databases written before it (built with that release's DDL) upgrade and read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from llmtally.events import AnalyticsEvent
from llmtally.query import events
from llmtally.storage.base import EventFilter, QueryStorage
from llmtally.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from llmtally.storage.postgres import PostgresStorage
from llmtally.storage.rows import COLUMNS, ENVELOPE_COLUMNS, event_to_row
from llmtally.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from llmtally.storage.sqlite import SqliteStorage

from . import pg, pre_envelope_schema
from .factory import T0, lifecycle, request

ALL = (0, 2**62)


def _tagged(
    ts: int, tags: dict[str, str] | None, correlation_id: str | None = None, **kw: object
) -> AnalyticsEvent:
    return msgspec.structs.replace(
        request(ts, **kw),  # type: ignore[arg-type]
        correlation_id=correlation_id,
        parent_event_id=None if correlation_id is None else "parent-1",
        severity="warning",
        environment="prod",
        tags=tags,
    )


async def _ids(storage: QueryStorage, **flt: object) -> list[str]:
    found = await storage.query_events(EventFilter(start_ms=ALL[0], end_ms=ALL[1], **flt))  # type: ignore[arg-type]
    return [e.event_id for e in found]


async def test_the_envelope_is_stored_and_filtered(storage: QueryStorage) -> None:
    a = _tagged(T0 + 1, {"team": "search", "tier": "gold"}, "req-1")
    b = _tagged(T0 + 2, {"team": "search", "tier": "free"}, "req-1", failed=True)
    c = _tagged(T0 + 3, {"team": "ads", "a.b/c-d": 'x:"y" é'}, "req-2")
    d = _tagged(T0 + 4, None)
    await storage.write_batch([a, b, d])
    await storage.ingest([c])
    by_id = {e.event_id: e for e in await storage.snapshot()}
    assert by_id[a.event_id] == a
    assert by_id[b.event_id] == b
    assert by_id[c.event_id] == msgspec.structs.replace(c, synced=True)
    assert by_id[d.event_id] == d

    assert await _ids(storage, correlation_id="req-1") == [a.event_id, b.event_id]
    assert await _ids(storage, correlation_id="nope") == []
    assert await _ids(storage, tags=(("team", "search"),)) == [a.event_id, b.event_id]
    assert await _ids(storage, tags=(("team", "search"), ("tier", "gold"))) == [a.event_id]
    assert await _ids(storage, tags=(("team", "search"), ("tier", "none"))) == []
    assert await _ids(storage, tags=(("a.b/c-d", 'x:"y" é'),)) == [c.event_id]
    assert await _ids(storage, tags=(("team", "ads"),), correlation_id="req-1") == []
    assert await _ids(storage, tags=(("missing", ""),)) == []


async def _read_back_old_events(s: QueryStorage, old: list[AnalyticsEvent]) -> None:
    assert await s.snapshot() == old  # every envelope field at its default
    page = await events(s, *ALL, limit=10)
    assert [(r.schema_version, r.severity, r.tags, r.correlation_id) for r in page.events] == [
        ("1.0.0", "info", {}, None),
        ("1.0.0", "error", {}, None),
        ("1.0.0", "info", {}, None),
    ]
    new = _tagged(T0 + 10, {"team": "search"}, "req-9")
    await s.write_batch([new])
    assert await _ids(s, tags=(("team", "search"),)) == [new.event_id]
    assert await _ids(s, correlation_id="req-9") == [new.event_id]
    totals = await s.load_totals()
    assert sum(t.requests for t in totals.series.values()) == 3  # two old requests + new


def _old_events() -> list[AnalyticsEvent]:
    return [
        request(T0 + 1, endpoint="/v1/chat/completions", itl_mean_ms=3.0),
        request(T0 + 2, failed=True),
        lifecycle(T0 + 3),
    ]


async def test_a_pre_envelope_sqlite_file_upgrades_and_reads_back(tmp_path: Path) -> None:
    old_columns = pre_envelope_schema.COLUMNS
    assert (*old_columns, *ENVELOPE_COLUMNS) == COLUMNS
    path = tmp_path / "old.db"
    old = _old_events()
    db = sqlite3.connect(path)
    db.executescript(pre_envelope_schema.SQLITE_DDL)
    db.executemany(
        f"INSERT INTO events ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
        [event_to_row(e)[: len(old_columns)] for e in old],
    )
    db.commit()
    db.close()
    s = SqliteStorage(path)
    await s.open()
    try:
        assert (
            await s.schema_version() == len(SQLITE_MIGRATIONS) > pre_envelope_schema.SQLITE_VERSION
        )
        await _read_back_old_events(s, old)
    finally:
        await s.close()


async def test_a_pre_envelope_postgres_schema_upgrades_and_reads_back() -> None:
    old_columns = pre_envelope_schema.COLUMNS
    old = _old_events()
    async with pg.fresh_schema() as schema:
        conn = await pg.connect()
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(pre_envelope_schema.POSTGRES_DDL)
            marks = ", ".join(f"${i}" for i in range(1, len(old_columns) + 1))
            await conn.executemany(
                f"INSERT INTO events ({', '.join(old_columns)}) VALUES ({marks})",
                [event_to_row(e)[: len(old_columns)] for e in old],
            )
        finally:
            await conn.close()
        s = PostgresStorage(pg.PG_URL, schema=schema, max_size=2)
        await s.open()
        try:
            assert (
                await s.schema_version()
                == len(PG_MIGRATIONS)
                > pre_envelope_schema.POSTGRES_VERSION
            )
            await _read_back_old_events(s, old)
        finally:
            await s.close()

"""Batches of events into SQLite, synchronously: the write transactions of both writers.

``write_rows`` (an embedded store's batch) is ``BEGIN IMMEDIATE``; insert the rows, many per
statement; add the new ones to the rollups (read-merge-write of the rollup rows they
touch); save the stats checkpoint; ``COMMIT`` — or ``ROLLBACK`` on any error, so a batch,
its rollups and its checkpoint land together or not at all. Rows whose ``event_id`` is
stored already (a retried batch whose commit outcome was unknown) are neither inserted
nor rolled up again.

``ingest_rows`` / ``ingest_events`` (the collector's ``SqliteStorage.ingest``) are the
same transaction without a checkpoint, deduplicating first: they look up which ids are
stored already, insert the others (a repeat within the batch counts once), roll up only
those, and answer with the indices of the rows they inserted.

Plain ``sqlite3`` on purpose: ``SqliteStorage`` runs it on its connection's own thread in
one hop (``writer="thread"``), and the writer process (``writer_process``) runs the very
same function on its own connection (``writer="process"``). Nothing here touches the
event loop.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, Final

from ..events import AnalyticsEvent
from .rollups import (
    HOUR_MS,
    ROLLUP_COLUMNS,
    Rollup,
    RollupKey,
    rollup_events,
    rollup_from_row,
    rollup_rows,
    rollup_to_row,
)
from .rows import COLUMNS, ENVELOPE_COLUMNS, SYNCED, event_to_row

__all__ = [
    "INSERT",
    "ROLLUP_COLS",
    "Row",
    "SAVE_CHECKPOINT",
    "existing_ids",
    "ingest_events",
    "ingest_rows",
    "insert_rows",
    "upsert_rollups",
    "write_rows",
]

if sys.version_info < (3, 12):
    # CPython 3.11's sqlite3 looks for an adapter for every ``None`` it binds and, finding
    # none, raises and clears an AttributeError (``PrepareProtocol.__adapt__``): ~200 ns
    # per NULL, and an event row has about ten (2 us per event, a tenth of the collector's
    # CPU). A registered adapter is found first; this one, an empty dict's ``get`` (C),
    # maps ``None`` to ``None``, so what is stored is unchanged. Process-wide, like any
    # sqlite3 adapter, so an application's own ``None`` adapter is left in place; 3.12
    # looks the attribute up without raising and needs none.
    _no_nulls: dict[None, None] = {}
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _no_nulls.get)

Row = Sequence[Any]
"""An ``events`` row in ``rows.COLUMNS`` order (a tuple, or a list after msgpack)."""

# Many rows per statement: Python's sqlite3 takes the GIL back after every statement
# step, so fewer, larger statements insert far faster when other threads are busy.
_ROWS_PER_STATEMENT: Final = 50


class _Shape:
    """An ``INSERT`` of some of the columns: those left out take their default (NULL).

    Binding a ``None`` costs CPython's sqlite3 an adapter lookup (~1,000 instructions,
    twice that without the ``None`` adapter above); a typical request row has ten
    ``None`` among its 26 values, so binding only the rest cuts the insert's CPU by about
    a fifth and stores the very same row."""

    __slots__ = ("applies", "many", "one", "values")

    def __init__(self, left_out: tuple[str, ...]) -> None:
        kept = [c for c in COLUMNS if c not in left_out]
        self.applies: Callable[[Row], bool]
        self.values: Callable[[Row], tuple[Any, ...]]
        if left_out:
            nones = (None,) * len(left_out)
            absent = itemgetter(*(COLUMNS.index(c) for c in left_out))
            self.applies = lambda row: absent(row) == nones
            self.values = itemgetter(*(COLUMNS.index(c) for c in kept))
        else:
            self.applies = lambda row: True
            self.values = tuple
        marks = "(" + ", ".join("?" * len(kept)) + ")"
        head = f"INSERT OR IGNORE INTO events ({', '.join(kept)}) VALUES "
        self.one = head + marks
        self.many = head + ", ".join([marks] * _ROWS_PER_STATEMENT)


_ERROR: Final = ("error_code", "error_message", "status_code")
# Tried in order, leanest first; the last, every column, applies to any row. A failed
# request or one with streaming detail (``extra``) among plain ones binds a few NULLs
# more, never the envelope's six.
_SHAPES: Final = (
    _Shape((*_ERROR, *ENVELOPE_COLUMNS, "extra")),
    _Shape((*ENVELOPE_COLUMNS, "extra")),
    _Shape((*_ERROR, *ENVELOPE_COLUMNS)),
    _Shape(ENVELOPE_COLUMNS),
    _Shape(()),
)
INSERT: Final = _SHAPES[-1].one
SAVE_CHECKPOINT: Final = (
    "INSERT INTO stats_checkpoint (id, last_event_rowid, series) "
    "VALUES (1, (SELECT coalesce(max(id), 0) FROM events), ?) "
    "ON CONFLICT (id) DO UPDATE SET last_event_rowid = excluded.last_event_rowid, "
    "series = excluded.series"
)
ROLLUP_COLS: Final = ", ".join(ROLLUP_COLUMNS)
_UPSERT_ROLLUP: Final = (
    f"INSERT OR REPLACE INTO rollups ({ROLLUP_COLS}) "
    f"VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
)
_KEYS_PER_SELECT: Final = 200
_KEY_MATCH: Final = "(period_ms = ? AND dim = ? AND start_ms = ? AND value = ?)"
_IDS_PER_SELECT: Final = 500


def insert_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """``INSERT OR IGNORE`` the rows, in order (inside the caller's transaction): 50 rows
    per statement, then the rest one by one; each statement binds only the columns its
    rows have values in (the leanest ``_Shape`` that fits all of them)."""
    n = _ROWS_PER_STATEMENT
    full = len(rows) // n * n
    chunks = (rows[j : j + n] for j in range(0, full, n))
    # Consecutive chunks of one shape go in one executemany, in order.
    for shape, group in groupby(chunks, key=_fitting):
        values = shape.values
        conn.executemany(shape.many, [tuple(chain.from_iterable(map(values, c))) for c in group])
    if full < len(rows):
        rest = rows[full:]
        shape = _fitting(rest)
        conn.executemany(shape.one, map(shape.values, rest))


def _fitting(rows: Sequence[Row]) -> _Shape:
    """The leanest shape whose left-out columns are NULL in every one of ``rows``."""
    return next(s for s in _SHAPES if all(map(s.applies, rows)))


def existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are stored already."""
    existing: set[str] = set()
    for i in range(0, len(ids), _IDS_PER_SELECT):
        chunk = ids[i : i + _IDS_PER_SELECT]
        marks = ",".join("?" * len(chunk))
        cur = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        existing.update(r[0] for r in cur.fetchall())
    return existing


def upsert_rollups(conn: sqlite3.Connection, deltas: dict[RollupKey, Rollup]) -> None:
    """Read-merge-write of the rollup rows ``deltas`` touch (inside the caller's
    ``BEGIN IMMEDIATE``, so no other writer can interleave). ``deltas`` is left as it
    was (a batch whose transaction failed is retried with the same deltas)."""
    if not deltas:
        return
    deltas = dict(deltas)  # stored rows replace entries below; the Rollups are not mutated
    keys = list(deltas)
    for i in range(0, len(keys), _KEYS_PER_SELECT):
        chunk = keys[i : i + _KEYS_PER_SELECT]
        sql = f"SELECT {ROLLUP_COLS} FROM rollups WHERE " + " OR ".join([_KEY_MATCH] * len(chunk))
        for row in conn.execute(sql, [v for k in chunk for v in k]).fetchall():
            key = (row[0], row[1], row[2], row[3])
            stored = rollup_from_row(row[4:])
            stored.merge(deltas[key])
            deltas[key] = stored
    conn.executemany(
        _UPSERT_ROLLUP,
        [(*k, *rollup_to_row(r, percentiles=k[0] == HOUR_MS)) for k, r in deltas.items()],
    )


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_rows(
    conn: sqlite3.Connection,
    rows: Sequence[Row],
    deltas: dict[RollupKey, Rollup],
    checkpoint: bytes | None,
) -> None:
    """Write one batch in one transaction (see the module docstring).

    ``deltas``: the rollups of ``rows`` (``rollup_events`` of their events); recomputed
    from the rows that are new when some were stored already. ``checkpoint``: the
    encoded cumulative totals (``encode_series``) to save with the batch, or ``None``.
    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    with _immediate(conn):
        if rows:
            before = conn.total_changes
            conn.execute("SAVEPOINT batch")
            insert_rows(conn, rows)
            if conn.total_changes - before != len(rows):
                # Some ids were stored already (a retry): redo with only the new ones.
                conn.execute("ROLLBACK TO batch")
                new = [rows[i] for i in _new_indices(conn, rows)]
                insert_rows(conn, new)
                deltas = rollup_rows(new)
            conn.execute("RELEASE batch")
            upsert_rollups(conn, deltas)
        if checkpoint is not None:
            conn.execute(SAVE_CHECKPOINT, (checkpoint,))


def ingest_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> list[int]:
    """Store the rows whose ``event_id`` is new and add them to the rollups, in one
    transaction; returns their indices in ``rows``, ascending (see the module
    docstring). The rollups are built here, from the new rows themselves
    (``rollup_rows``)."""
    return _ingest(conn, rows, lambda new: rollup_rows(rows[i] for i in new))


def ingest_events(conn: sqlite3.Connection, events: Sequence[AnalyticsEvent]) -> list[int]:
    """``ingest_rows`` of ``events`` as synced rows; the rollups are built from the
    events themselves (no row decoding)."""
    rows = [event_to_row(e, SYNCED) for e in events]
    return _ingest(conn, rows, lambda new: rollup_events(events[i] for i in new))


def _ingest(
    conn: sqlite3.Connection,
    rows: Sequence[Row],
    rollups_of: Callable[[list[int]], dict[RollupKey, Rollup]],
) -> list[int]:
    with _immediate(conn):
        new = _new_indices(conn, rows)
        if new:
            insert_rows(conn, rows if len(new) == len(rows) else [rows[i] for i in new])
            upsert_rollups(conn, rollups_of(new))
    return new


def _new_indices(conn: sqlite3.Connection, rows: Sequence[Row]) -> list[int]:
    """Indices of the rows whose id is neither stored nor carried by an earlier row."""
    ids = [r[0] for r in rows]
    existing = existing_ids(conn, ids)
    if not existing and len(set(ids)) == len(ids):
        return list(range(len(ids)))  # the common case: every row is new
    new: list[int] = []
    for i, event_id in enumerate(ids):
        if event_id not in existing:
            existing.add(event_id)  # a repeat within the batch is a duplicate too
            new.append(i)
    return new

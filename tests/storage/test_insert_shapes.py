"""``insert_rows`` binds only the columns a statement's rows have values in: the stored rows
must be the very rows given, in their order, whatever mix of shapes a batch holds."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmtally.events import AnalyticsEvent
from llmtally.storage.rows import COLUMNS, event_to_row
from llmtally.storage.sqlite import MIGRATIONS
from llmtally.storage.sqlite_write import insert_rows

from .factory import T0, lifecycle, request


def _with_envelope(event: AnalyticsEvent) -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=event.event_id,
        timestamp_ms=event.timestamp_ms,
        payload=event.payload,
        agent_id=event.agent_id,
        correlation_id="c-1",
        environment="prod",
        tags={"team": "search"},
    )


def _mixed_events(n: int, seed: int) -> list[AnalyticsEvent]:
    """Plain, with streaming detail (``extra``), failed, with an envelope, lifecycle."""
    rng = random.Random(seed)
    makers = [
        lambda t: request(t),
        lambda t: request(t, endpoint="/v1/chat/completions"),
        lambda t: request(t, failed=True),
        lambda t: _with_envelope(request(t)),
        lambda t: lifecycle(t),
    ]
    # Runs of one shape and single rows between them, as a real batch has.
    events: list[AnalyticsEvent] = []
    while len(events) < n:
        make = rng.choice(makers)
        events.extend(make(T0 + len(events)) for _ in range(rng.choice([1, 1, 3, 60])))
    return events[:n]


def _stored(
    path: Path, rows: list[tuple[object, ...]] | list[list[object]]
) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS:
        conn.executescript(migration)
    conn.execute("BEGIN IMMEDIATE")
    insert_rows(conn, rows)
    conn.execute("COMMIT")
    stored = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return stored


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("as_lists", [False, True], ids=["tuples", "lists (after msgpack)"])
def test_every_shape_is_stored_as_given_and_in_order(
    tmp_path: Path, seed: int, as_lists: bool
) -> None:
    rows = [event_to_row(e) for e in _mixed_events(400, seed)]
    given: list[tuple[object, ...]] | list[list[object]] = (
        [list(r) for r in rows] if as_lists else rows
    )
    assert _stored(tmp_path / "s.db", given) == rows


def test_a_batch_of_one_shape_takes_the_many_rows_statement(tmp_path: Path) -> None:
    rows = [event_to_row(request(T0 + i)) for i in range(123)]  # 2 x 50 and 23 one by one
    assert _stored(tmp_path / "s.db", rows) == rows


def test_a_repeated_id_is_ignored_in_every_shape(tmp_path: Path) -> None:
    first = event_to_row(request(T0))
    again = event_to_row(_with_envelope(request(T0)))
    again = (first[0], *again[1:])
    other = event_to_row(request(T0, failed=True))
    assert _stored(tmp_path / "s.db", [first, again, other]) == [first, other]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the None adapter is for 3.11 only")
def test_an_applications_own_none_adapter_is_left_in_place() -> None:
    program = (
        "import sqlite3\n"
        "mine = lambda _: 'n/a'\n"
        "sqlite3.register_adapter(type(None), mine)\n"
        "import llmtally.storage.sqlite_write\n"
        "assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is mine\n"
        "print(sqlite3.connect(':memory:').execute('SELECT ?', (None,)).fetchone()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert out.stdout == "n/a\n"

"""``export``: every event of a range as CSV, JSON or JSON Lines, streamed in bytes chunks.

Constant memory: events are read in keyset pages of ``page_size`` and each page becomes
one chunk. CSV cells that a spreadsheet would take for a formula (starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) are prefixed with ``'`` (OWASP's CSV
injection advice); JSON and JSON Lines are left exact.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Final

import msgspec

from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, nanos_to_micros
from ..storage.base import Cursor, EventFilter, QueryStorage
from ._types import FORMATS, QueryError
from .events import check_range, record_of

__all__ = ["CSV_COLUMNS", "export", "neutralise"]

CSV_COLUMNS: Final = (
    # Routiium's columns, for those llmtally events have ...
    "id",
    "timestamp",
    "endpoint",
    "model",
    "status_code",
    "success",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "backend",
    # ... and llmtally's
    "timestamp_ms",
    "event_type",
    "agent_id",
    "provider_id",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cost_micros",
    "pricing_status",
    "ttft_ms",
    "error_code",
    "error_message",
)
"""The CSV header. Routiium's ``method``, ``stream`` and ``upstream_mode`` have no llmtally
counterpart and are left out; ``backend`` is the provider."""

_FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
_encode_lines: Final = msgspec.json.Encoder().encode_lines


def neutralise(cell: str) -> str:
    """``cell`` made inert for spreadsheets: prefixed with ``'`` when it starts like a
    formula (``= + - @``, tab, carriage return)."""
    return "'" + cell if cell.startswith(_FORMULA_PREFIXES) else cell


_FORMULA_FIRST: Final = "=+-@\t\r"
_EMPTY: Final = (None,) * 8  # the request-only cells of a lifecycle or budget event


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value[0] in _FORMULA_FIRST else value


def _csv_row(e: AnalyticsEvent) -> tuple[object, ...]:
    """The CSV cells of ``e`` (``csv`` writes ``None`` as an empty cell, numbers as
    ``str()``); built straight from the event, this is the export's hot loop."""
    p = e.payload
    ts = e.timestamp_ms
    if isinstance(p, LlmRequestCompleted | LlmRequestFailed):
        failed = isinstance(p, LlmRequestFailed)
        return (
            _text(e.event_id),
            ts // 1000,
            _text(p.endpoint),
            _text(p.model),
            p.status_code if isinstance(p, LlmRequestFailed) else None,
            "false" if failed else "true",
            p.duration_ms,
            p.input_tokens,
            p.output_tokens,
            _text(p.provider),
            ts,
            "llm_request_failed" if failed else "llm_request_completed",
            _text(e.agent_id),
            _text(p.provider_id),
            p.cached_input_tokens,
            p.cache_write_input_tokens,
            nanos_to_micros(p.cost_nanos),
            p.pricing_status,
            p.ttft_ms,
            _text(p.error_code) if isinstance(p, LlmRequestFailed) else None,
            _text(p.error_message) if isinstance(p, LlmRequestFailed) else None,
        )
    return (_text(e.event_id), ts // 1000, *_EMPTY, ts, e.event_type, _text(e.agent_id), *_EMPTY)


def export(
    storage: QueryStorage,
    start_ms: int,
    end_ms: int,
    format: str = "json",
    *,
    page_size: int = 1_000,
    model: str | None = None,
    provider: str | None = None,
    agent_id: str | None = None,
) -> AsyncIterator[bytes]:
    """The events of ``[start_ms, end_ms)`` (only those of ``model``, ``provider``,
    ``agent_id`` where given), oldest first, encoded as ``format``:

    - ``csv``: a header line (``CSV_COLUMNS``), then one line per event;
    - ``json``: one JSON array of ``EventRecord`` objects;
    - ``jsonl``: one ``EventRecord`` object per line.

    Arguments are checked now, not on first iteration: raises ``QueryError`` for an
    unknown ``format`` or ``end`` before ``start``. Storage errors raise while iterating.
    """
    check_range(start_ms, end_ms)
    if format not in FORMATS:
        raise QueryError("format", f"must be one of {', '.join(FORMATS)}")
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    flt = EventFilter(
        start_ms=start_ms, end_ms=end_ms, model=model, provider=provider, agent_id=agent_id
    )
    return _export(storage, flt, format, page_size)


async def _export(
    storage: QueryStorage, flt: EventFilter, format: str, page_size: int
) -> AsyncIterator[bytes]:
    if format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        yield buf.getvalue().encode()
    elif format == "json":
        yield b"["
    first = True
    after: Cursor | None = None
    while True:
        page = await storage.query_events(flt, after=after, limit=page_size)
        if not page:
            break
        if format == "csv":
            buf = io.StringIO()
            csv.writer(buf).writerows(map(_csv_row, page))
            yield buf.getvalue().encode()
        elif format == "json":
            chunk = _encode_lines(list(map(record_of, page)))[:-1].replace(b"\n", b",\n")
            yield (b"\n" if first else b",\n") + chunk
        else:
            yield _encode_lines(list(map(record_of, page)))
        first = False
        if len(page) < page_size:
            break
        after = (page[-1].timestamp_ms, page[-1].event_id)
    if format == "json":
        yield b"]\n" if first else b"\n]\n"

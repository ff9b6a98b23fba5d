"""``export``: CSV (injection-safe), JSON and JSON Lines, streamed page by page."""

from __future__ import annotations

import csv
import io
import json

import pytest

from llmtally.query import CSV_COLUMNS, QueryError, export, neutralise
from llmtally.storage import MemoryStorage
from llmtally.storage.base import QueryStorage

from ..storage.factory import T0, lifecycle, random_requests, request


async def _collect(storage: QueryStorage, fmt: str, page_size: int = 1_000) -> list[bytes]:
    return [chunk async for chunk in export(storage, T0, T0 + 3_600_000, fmt, page_size=page_size)]


async def test_csv_has_the_columns_and_neutralises_formulas(storage: QueryStorage) -> None:
    hostile = request(T0 + 1, failed=True, agent_id='=HYPERLINK("http://x")', endpoint="@SUM(A1)")
    await storage.write_batch([request(T0), hostile, lifecycle(T0 + 2)])
    text = b"".join(await _collect(storage, "csv")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == 3
    assert rows[1]["agent_id"] == '\'=HYPERLINK("http://x")'
    assert rows[1]["endpoint"] == "'@SUM(A1)"
    assert (rows[1]["success"], rows[1]["status_code"], rows[1]["backend"]) == (
        "false",
        "429",
        "openai",
    )
    assert rows[0]["cost_micros"] == "1"
    assert rows[2]["event_type"] == "router_started"


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        pytest.param("=1+1", "'=1+1", id="equals"),
        pytest.param("+1", "'+1", id="plus"),
        pytest.param("-1", "'-1", id="minus"),
        pytest.param("@x", "'@x", id="at"),
        pytest.param("\tx", "'\tx", id="tab"),
        pytest.param("\rx", "'\rx", id="cr"),
        pytest.param("gpt-4o", "gpt-4o", id="plain"),
        pytest.param("", "", id="empty"),
    ],
)
def test_neutralise(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


async def test_json_and_jsonl_stream_one_chunk_per_page(storage: QueryStorage) -> None:
    stored = random_requests(25, seed=41, start_ms=T0, span_ms=600_000)
    await storage.ingest(stored)
    want = [e.event_id for e in sorted(stored, key=lambda e: (e.timestamp_ms, e.event_id))]
    chunks = await _collect(storage, "json", page_size=10)
    assert len(chunks) == 5  # "[", three pages, "]"
    assert [r["event_id"] for r in json.loads(b"".join(chunks))] == want
    lines = b"".join(await _collect(storage, "jsonl", page_size=10)).decode().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == want


async def test_empty_exports_are_valid() -> None:
    m = MemoryStorage()
    assert json.loads(b"".join(await _collect(m, "json"))) == []
    assert b"".join(await _collect(m, "jsonl")) == b""
    assert b"".join(await _collect(m, "csv")).decode().splitlines() == [",".join(CSV_COLUMNS)]


def test_bad_arguments_raise_at_the_call() -> None:
    with pytest.raises(QueryError) as info:
        export(MemoryStorage(), 0, 10, "xml")
    assert info.value.parameter == "format"
    with pytest.raises(QueryError) as info:
        export(MemoryStorage(), 10, 0, "csv")
    assert info.value.parameter == "end"

"""``record_of``: every field of a request event lands in its flat record."""

from __future__ import annotations

import msgspec

from llmtally.events import LlmRequestFailed, severity_of
from llmtally.query.events import record_of

from ..storage.factory import T0, random_requests, request


def test_every_field_of_completed_and_failed_requests() -> None:
    events = random_requests(60, seed=7, start_ms=T0, span_ms=3_600_000)
    streamed = request(
        T0,
        failed=True,
        itl_mean_ms=3.5,
        itl_p95_ms=9.0,
        output_tokens_per_s=42.0,
        usage_missing=True,
    )
    events.append(
        msgspec.structs.replace(
            streamed, correlation_id="req-1", environment="staging", tags={"team": "a"}
        )
    )
    assert any(isinstance(e.payload, LlmRequestFailed) for e in events[:-1])
    for e in events:
        record = msgspec.structs.asdict(record_of(e))
        p = msgspec.structs.asdict(e.payload)
        failed = isinstance(e.payload, LlmRequestFailed)
        for name in ("error_code", "error_message", "status_code"):
            assert record[name] == (p[name] if failed else None)
            p.pop(name, None)
        assert {k: record[k] for k in p} == p
        assert record["cost_micros"] == e.payload.cost_micros  # type: ignore[union-attr]
        assert (record["event_id"], record["timestamp_ms"], record["success"]) == (
            e.event_id,
            e.timestamp_ms,
            not failed,
        )
        assert (record["agent_id"], record["schema_version"], record["severity"]) == (
            e.agent_id,
            e.schema_version,
            severity_of(e),
        )
        assert (record["correlation_id"], record["environment"], record["tags"]) == (
            e.correlation_id,
            e.environment,
            e.tags or {},
        )

"""Recording the envelope: every builder fills it in (the fast path too), bad values raise
``ValidationError`` and record nothing, and it survives the trip through SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from llmtally import (
    AnalyticsEvent,
    Budget,
    ConfigurationError,
    EventStore,
    LlmRequestCompleted,
    ValidationError,
)
from llmtally._ids import new_event_id
from llmtally.events import SCHEMA_VERSION, severity_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_defaults_on_the_fast_path_and_the_slow_path(db_path: Path) -> None:
    async with EventStore(db_path) as store:
        fast = await store.record_llm_completed("gpt-4o", input_tokens=1, output_tokens=1)
        slow = await store.record_llm_completed("gpt-4o", input_tokens=1, timestamp_ms=5)
        failed = await store.record_llm_failed("gpt-4o", error_code="rate_limited")
        started = await store.record_router_started(port=80)
        budget = await store.record_budget_threshold(80, current_spend_micros=8, budget_micros=10)
        for ev in (fast, slow, failed, started, budget):
            assert ev is not None
            assert ev.schema_version == SCHEMA_VERSION
            assert ev.correlation_id is ev.parent_event_id is ev.tags is ev.environment is None
            assert ev.severity is None  # stored as NULL: the default of its type
        levels = [severity_of(e) for e in (fast, slow, failed, started, budget)]  # type: ignore[arg-type]
        assert levels == ["info", "info", "error", "info", "warning"]
        assert await store.snapshot_events() == [fast, slow, failed, started, budget]
    db = sqlite3.connect(db_path)  # defaults cost nothing to store: NULLs
    rows = db.execute("SELECT schema_version, severity, tags FROM events").fetchall()
    db.close()
    assert rows == [(None, None, None)] * 5


async def test_the_envelope_is_recorded_and_read_back_from_sqlite(db_path: Path) -> None:
    async with EventStore(db_path, environment="staging") as store:
        fast = await store.record_llm_completed(
            "gpt-4o", input_tokens=3, output_tokens=1, agent_id="a", correlation_id=TRACE
        )
        full = await store.record_llm_completed(
            "gpt-4o",
            input_tokens=3,
            correlation_id=TRACE,
            parent_event_id=fast.event_id if fast else None,
            severity="debug",
            tags={"team": "search", "tier": "gold"},
        )
        failed = await store.record_llm_failed(
            "gpt-4o",
            error_code="timeout",
            correlation_id=TRACE,
            severity="critical",
            tags={"team": "search"},
        )
    assert fast is not None and full is not None and failed is not None
    assert (fast.correlation_id, fast.severity, fast.environment) == (TRACE, None, "staging")
    assert full.parent_event_id == fast.event_id
    assert (full.severity, full.tags) == ("debug", {"team": "search", "tier": "gold"})
    assert (failed.severity, failed.tags) == ("critical", {"team": "search"})
    async with EventStore(db_path) as reopened:  # what was persisted, read back
        assert await reopened.snapshot_events() == [fast, full, failed]


async def test_environment_comes_from_the_argument_else_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMTALLY_ENVIRONMENT", "prod")
    assert EventStore().environment == "prod"
    assert EventStore(environment="dev").environment == "dev"
    async with EventStore() as store:
        ev = await store.record_llm_completed("gpt-4o")
        assert ev is not None and ev.environment == "prod"
    monkeypatch.setenv("LLMTALLY_ENVIRONMENT", "")
    assert EventStore().environment is None
    monkeypatch.setenv("LLMTALLY_ENVIRONMENT", "not valid!")
    with pytest.raises(ConfigurationError, match="LLMTALLY_ENVIRONMENT"):
        EventStore()
    with pytest.raises(ValidationError, match="environment"):
        EventStore(environment="x" * 65)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"correlation_id": "has space"}, "correlation_id", id="correlation"),
        pytest.param({"correlation_id": 7}, "correlation_id", id="correlation-type"),
        pytest.param({"parent_event_id": "x" * 129}, "parent_event_id", id="parent"),
        pytest.param({"severity": "fatal"}, "severity", id="severity"),
        pytest.param({"tags": {f"k{i}": "v" for i in range(17)}}, "limit is 16", id="17-tags"),
        pytest.param({"tags": {"bad key": "v"}}, "tag key", id="tag-key"),
        pytest.param({"tags": {"k": "v" * 257}}, "limit is 256", id="tag-value"),
    ],
)
async def test_bad_envelope_arguments_raise_and_record_nothing(
    kwargs: dict[str, object], match: str
) -> None:
    async with EventStore() as store:
        with pytest.raises(ValidationError, match=match):
            await store.record_llm_completed("gpt-4o", input_tokens=1, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=match):
            await store.record_llm_failed("gpt-4o", error_code="e", **kwargs)  # type: ignore[arg-type]
        await store.flush()
        assert store.stats().total_requests == 0
        assert len(store) == 0


def _prebuilt(**envelope: object) -> AnalyticsEvent:
    payload = LlmRequestCompleted(model="gpt-4o", provider="openai")
    return AnalyticsEvent(
        event_id=new_event_id(),
        timestamp_ms=1_000,
        payload=payload,
        **envelope,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("envelope", "match"),
    [
        pytest.param({"schema_version": "2.0.0"}, "schema_version", id="major-2"),
        pytest.param({"correlation_id": ""}, "must not be empty", id="empty-correlation"),
        pytest.param({"parent_event_id": "a b"}, "parent_event_id", id="parent"),
        pytest.param({"severity": "loud"}, "severity", id="severity"),
        pytest.param({"environment": ""}, "must not be empty", id="empty-environment"),
        pytest.param({"tags": {"k": "\x00"}}, "control character", id="tag"),
    ],
)
async def test_a_prebuilt_event_with_a_bad_envelope_is_refused(
    envelope: dict[str, object], match: str
) -> None:
    async with EventStore() as store:
        bad = _prebuilt(**envelope)
        with pytest.raises(ValidationError, match=match):
            store.record_nowait(bad)
        with pytest.raises(ValidationError, match=match):
            await store.record(bad)
        good = _prebuilt(correlation_id="c-1", tags={"k": "v"}, schema_version="1.3.0")
        assert store.record_nowait(good)
        assert await store.snapshot_events() == [good]


async def test_streams_and_reservations_carry_the_envelope() -> None:
    async with EventStore(
        environment="prod", budgets=[Budget(id="b", limit_micros=10**9, kind="hard")]
    ) as store:
        async with store.track_stream(
            "gpt-4o", correlation_id=TRACE, parent_event_id="p-1", tags={"k": "v"}
        ) as s:
            s.token()
        async with store.reserve(estimate_micros=10) as r:
            reserved = await r.record_llm_failed(
                "gpt-4o", error_code="e", correlation_id=TRACE, severity="warning"
            )
        with pytest.raises(ValidationError, match="tag key"):
            store.track_stream("gpt-4o", tags={"": "v"})
    streamed = s.event
    assert streamed is not None and reserved is not None
    assert (streamed.correlation_id, streamed.parent_event_id) == (TRACE, "p-1")
    assert (streamed.tags, streamed.severity, streamed.environment) == ({"k": "v"}, None, "prod")
    assert (reserved.correlation_id, reserved.severity) == (TRACE, "warning")


async def test_a_budget_threshold_event_is_a_warning_in_the_store_environment() -> None:
    async with EventStore(environment="prod", budgets=[Budget(id="b", limit_micros=1)]) as store:
        await store.record_llm_completed("gpt-4o", input_tokens=1_000_000)
        events = await store.snapshot_events()
    crossings = [e for e in events if e.event_type == "budget_threshold_reached"]
    assert crossings
    assert {(severity_of(e), e.environment) for e in crossings} == {("warning", "prod")}


async def test_the_recorded_tags_are_a_copy(db_path: Path) -> None:
    tags = {"team": "search"}
    async with EventStore(db_path) as store:
        ev = await store.record_llm_completed("gpt-4o", tags=tags)
        tags["team"] = "changed"
        assert ev is not None and ev.tags == {"team": "search"}
        stored = await store.snapshot_events()
    assert msgspec.structs.asdict(stored[0])["tags"] == {"team": "search"}

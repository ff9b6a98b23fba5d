"""The event model: lossless JSON, the Protocol 012 wire form field by field, UUIDv7 ids."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally._ids import new_event_id, timestamp_ms_of
from llmtally.events import (
    AnalyticsEvent,
    BudgetThresholdReached,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    RouterStopped,
    WireEvent,
    decode_event,
    decode_events,
    decode_wire_event,
    encode_event,
    encode_events,
    from_wire,
    nanos_to_micros,
    to_wire,
)

WIRE_FIELDS = {
    "event_id",
    "event_type",
    "timestamp_ms",
    "agent_id",
    "provider_id",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_micros",
    "pricing_status",
    "duration_ms",
    "ttft_ms",
    "error_code",
    "error_message",
    "status_code",
}


def _event(payload: object, agent_id: str | None = "agent-7") -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=new_event_id(), timestamp_ms=1_700_000_000_123, payload=payload, agent_id=agent_id
    )  # type: ignore[arg-type]


COMPLETED = LlmRequestCompleted(
    model="gpt-4o-mini",
    provider="openai",
    provider_id="key-1",
    input_tokens=11,
    output_tokens=1,
    cached_input_tokens=3,
    cost_nanos=2_250,
    duration_ms=812.5,
    ttft_ms=95.0,
)
FAILED = LlmRequestFailed(
    model="claude-3-5-sonnet",
    provider="anthropic",
    error_code="rate_limited",
    error_message="429 Too Many Requests",
    status_code=429,
)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(COMPLETED, id="completed"),
        pytest.param(FAILED, id="failed"),
        pytest.param(
            BudgetThresholdReached(
                threshold_percent=80, current_spend_micros=8_000_000, budget_micros=10_000_000
            ),
            id="budget",
        ),
        pytest.param(RouterStarted(port=8080), id="started"),
        pytest.param(RouterStopped(total_requests=3, total_cost_micros=7), id="stopped"),
    ],
)
def test_json_round_trip_is_lossless(payload: object) -> None:
    event = _event(payload)
    data = encode_event(event)
    assert decode_event(data) == event
    assert decode_events(encode_events([event, event])) == [event, event]
    assert msgspec.json.decode(data)["payload"]["event_type"] == event.event_type


def test_wire_form_of_a_completed_request_field_by_field() -> None:
    event = _event(COMPLETED)
    wire = msgspec.json.decode(msgspec.json.encode(to_wire(event)))
    assert WIRE_FIELDS - {"error_code", "error_message", "status_code"} <= set(wire)
    assert wire["event_id"] == event.event_id
    assert wire["event_type"] == "llm_request_completed"
    assert wire["timestamp_ms"] == 1_700_000_000_123
    assert wire["agent_id"] == "agent-7"
    assert wire["provider_id"] == "key-1"
    assert wire["provider"] == "openai"
    assert wire["model"] == "gpt-4o-mini"
    assert wire["input_tokens"] == 11
    assert wire["output_tokens"] == 1
    assert wire["cached_input_tokens"] == 3
    assert wire["cost_micros"] == 2  # 2,250 nano-dollars = 2.25 micros → 2
    assert wire["cost_nanos"] == 2_250  # the exact extension
    assert wire["pricing_status"] == "priced"
    assert wire["duration_ms"] == 812.5
    assert wire["ttft_ms"] == 95.0
    assert "error_code" not in wire


def test_wire_form_of_a_failed_request() -> None:
    event = _event(FAILED, agent_id=None)
    wire = msgspec.json.decode(msgspec.json.encode(to_wire(event)))
    assert wire["event_type"] == "llm_request_failed"
    assert wire["agent_id"] is None
    assert wire["provider_id"] is None
    assert wire["error_code"] == "rate_limited"
    assert wire["error_message"] == "429 Too Many Requests"
    assert wire["status_code"] == 429
    assert "duration_ms" not in wire  # optional fields are omitted when absent


@pytest.mark.parametrize(
    "payload",
    [
        RouterStarted(port=1),
        RouterStopped(total_requests=0),
        BudgetThresholdReached(threshold_percent=50, current_spend_micros=1, budget_micros=2),
    ],
)
def test_lifecycle_and_budget_events_have_no_wire_form(payload: object) -> None:
    with pytest.raises(ValueError, match="not synced"):
        to_wire(_event(payload))


def test_from_wire_inverts_to_wire() -> None:
    for payload in (COMPLETED, FAILED):
        event = _event(payload)
        raw = msgspec.json.encode(to_wire(event))
        assert from_wire(decode_wire_event(raw)) == msgspec.structs.replace(event, synced=True)


def test_wire_decoding_ignores_unknown_fields_and_validates() -> None:
    wire = msgspec.to_builtins(to_wire(_event(COMPLETED)))
    wire["prompt"] = "secret user text"
    decoded = decode_wire_event(msgspec.json.encode(wire))
    assert not hasattr(decoded, "prompt")
    for field, bad in [
        ("input_tokens", -1),
        ("event_id", "not-a-uuid"),
        ("event_id", wire["event_id"] + "\n"),  # would defeat deduplication by id
        ("model", ""),
    ]:
        broken = dict(wire, **{field: bad})
        with pytest.raises(msgspec.ValidationError):
            decode_wire_event(msgspec.json.encode(broken))


def test_a_sender_without_cost_nanos_is_taken_at_its_micros() -> None:
    wire = msgspec.to_builtins(to_wire(_event(COMPLETED)))
    del wire["cost_nanos"]
    event = from_wire(decode_wire_event(msgspec.json.encode(wire)))
    assert isinstance(event.payload, LlmRequestCompleted)
    assert event.payload.cost_nanos == 2_000


@given(st.integers(min_value=0, max_value=10**15))
def test_micros_round_half_up(nanos: int) -> None:
    micros = nanos_to_micros(nanos)
    assert abs(micros * 1000 - nanos) <= 500
    assert nanos % 1000 != 500 or micros * 1000 > nanos


def test_event_ids_are_uuid7_time_ordered_and_unique() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    u = uuid.UUID(ids[0])
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert str(u) == ids[0]


def test_event_ids_stay_ordered_when_the_clock_stands_still_or_steps_back() -> None:
    ids = [new_event_id(5_000_000_000_000) for _ in range(10_000)]
    ids += [new_event_id(4_000_000_000_000) for _ in range(10)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert timestamp_ms_of(ids[0]) == 5_000_000_000_000
    assert all(isinstance(WireEvent, type) for _ in ids[:1])


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    import os

    new_event_id()  # the parent has random bits buffered
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_event_id(10**12).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    parent = new_event_id(10**12)
    assert child[-17:] != parent[-17:]  # the random tails differ

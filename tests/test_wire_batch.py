"""``decode_wire_batch`` accepts a batch exactly when ``decode_wire_event`` accepts each
of its events: its ids, schema versions and environments are checked per batch."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally._ids import new_event_id
from llmtally.events import decode_wire_batch, decode_wire_event

_encode = msgspec.json.encode


def _event(event_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "llm_request_completed",
        "timestamp_ms": 1_700_000_000_000,
        "agent_id": None,
        "provider_id": None,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_input_tokens": 0,
        "cost_micros": 1,
        "pricing_status": "priced",
        **overrides,
    }


def _each_valid(events: list[dict[str, Any]]) -> bool:
    try:
        for e in events:
            decode_wire_event(_encode(e))
    except msgspec.ValidationError:
        return False
    return True


def _agrees(events: list[dict[str, Any]]) -> bool:
    batch = decode_wire_batch(_encode({"events": events}))
    if batch is not None:
        assert [w.event_id for w in batch] == [e["event_id"] for e in events]
    return (batch is not None) == _each_valid(events)


# Characters a mutated id may take: hex digits of both cases, separators, whitespace
# (``bytes.fromhex`` skips it), and neither ASCII nor hex.
_ID_CHARS = "0123456789abcdefABCDEFgG-_ \t\n\r\x0b\x0c+é٣"


@settings(max_examples=400)
@given(
    n=st.integers(1, 6),
    target=st.integers(0, 5),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(0, 40),
            st.sampled_from(_ID_CHARS),
        ),
        max_size=3,
    ),
)
def test_ids_checked_as_each_event_checks_them(
    n: int, target: int, edits: list[tuple[str, int, str]]
) -> None:
    ids = [new_event_id() for _ in range(n)]
    chars = list(ids[target % n])
    for op, at, ch in edits:
        at = min(at, len(chars))
        if op == "insert":
            chars.insert(at, ch)
        elif chars and at < len(chars):
            if op == "set":
                chars[at] = ch
            else:
                del chars[at]
    ids[target % n] = "".join(chars)
    assert _agrees([_event(i) for i in ids])


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", id="valid"),
        pytest.param("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", id="upper"),
        pytest.param("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", id="short"),
        pytest.param("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n", id="newline"),
        pytest.param("0190a1b2c3d4-7e5f-8a9b-0c1d2e3f4a5b-", id="hyphen-moved"),
        pytest.param("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f 4a5", id="space"),
        pytest.param("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5٣", id="arabic-digit"),
    ],
)
def test_ids_one_by_one(event_id: str) -> None:
    assert _agrees([_event(new_event_id()), _event(event_id)])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema_version", "1.0.0"),
        ("schema_version", "1.12.3"),
        ("schema_version", "2.0.0"),
        ("schema_version", "1.0.0\n"),
        ("schema_version", "01.0.0"),
        ("schema_version", None),
        ("environment", "production"),
        ("environment", "prod uction"),
        ("environment", ""),
        ("environment", "x" * 65),
        ("environment", None),
    ],
)
def test_schema_version_and_environment_checked_per_distinct_value(
    field: str, value: str | None
) -> None:
    events = [
        _event(new_event_id(), **{field: "1.0.0" if field == "schema_version" else "staging"})
    ]
    events += [_event(new_event_id(), **{field: value}) for _ in range(2)]
    assert _agrees(events)

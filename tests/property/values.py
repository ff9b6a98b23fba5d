"""Hypothesis strategies for the recording API: plausible values, hostile values, and an
independent oracle of what the API documents as valid (``llmtally._validation``'s rules
restated here, not imported, so that a wrong rule there shows up as a disagreement)."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from typing import Any, Final

from hypothesis import strategies as st

from llmtally.events import (
    AnalyticsEvent,
    BudgetThresholdReached,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    RouterStopped,
)

MAX_ID: Final = 256
MAX_COUNT: Final = 2**53 - 1
MAX_MS: Final = 1e10

_serial = itertools.count(1)


def fresh_event_id() -> str:
    """A new, unique UUIDv7-shaped id (not random: strategies must not use ``random``)."""
    return f"01900000-0000-7000-8000-{next(_serial):012x}"


MODELS: Final = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "gemini-2.5-pro", "in-house-7b"]
AGENTS: Final = ["agent-1", "agent-2", "a"]
KEYS: Final = ["key-1", "key-2"]

# Strings that broke (or could break) something on the way to SQLite, JSON or a CSV.
nasty_strings = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "nul\x00inside",
            "\ud800",  # a lone surrogate: not encodable as UTF-8
            "ok\udfffok",
            "é",
            "🙂" * 3,
            "=cmd|' /C calc'!A0",
            "x" * MAX_ID,
            "x" * (MAX_ID + 1),
            "'; DROP TABLE events; --",
            "\n\r\t",
        ]
    ),
    st.text(st.characters(exclude_categories=()), max_size=300),  # surrogates included
)
weird = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, MAX_COUNT, MAX_COUNT + 1, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e10, 1e10 + 1]),
    nasty_strings,
    st.sampled_from([b"bytes", Decimal("1.5"), [1], {"a": 1}, (), object()]),
)

counts = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.sampled_from([MAX_COUNT, 2**40]),
    weird,
)
small_counts = st.integers(min_value=0, max_value=10**6)
millis = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6), weird)
models = st.one_of(st.sampled_from(MODELS), weird)
optional_ids = st.one_of(st.none(), st.sampled_from(AGENTS + KEYS), weird)


# --- the oracle -------------------------------------------------------------------------


def utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID and utf8(value)


def valid_optional_id(value: object) -> bool:
    return value is None or value == "" or valid_id(value)


def valid_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def valid_ms(value: object) -> bool:
    if value is None:
        return True
    if type(value) is bool or not isinstance(value, int | float):
        return False
    return 0.0 <= float(value) <= MAX_MS  # NaN compares False


def valid_status(value: object) -> bool:
    return value is None or (type(value) is int and 100 <= value <= 599)


def valid_message(value: object) -> bool:
    return value is None or isinstance(value, str)  # long ones are truncated, not refused


def valid_timestamp(value: object) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_COUNT)


# --- pre-built events -------------------------------------------------------------------


def _request_fields(draw: st.DrawFn) -> dict[str, Any]:
    i = draw(small_counts)
    c = draw(st.integers(0, i))
    w = draw(st.integers(0, i - c))
    return {
        "model": draw(st.sampled_from(MODELS)),
        "provider": draw(st.sampled_from(["openai", "anthropic", "google", "unknown"])),
        "provider_id": draw(st.one_of(st.none(), st.sampled_from(KEYS))),
        "input_tokens": i,
        "output_tokens": draw(small_counts),
        "cached_input_tokens": c,
        "cache_write_input_tokens": w,
        "cost_nanos": draw(st.integers(0, 10**12)),
        "pricing_status": draw(st.sampled_from(["priced", "unpriced"])),
        "duration_ms": draw(st.one_of(st.none(), st.floats(0, 1e6))),
        "ttft_ms": draw(st.one_of(st.none(), st.floats(0, 1e6))),
        "itl_mean_ms": draw(st.one_of(st.none(), st.floats(0, 1e4))),
        "itl_p95_ms": draw(st.one_of(st.none(), st.floats(0, 1e4))),
        "output_tokens_per_s": draw(st.one_of(st.none(), st.floats(0, 1e6))),
        "usage_missing": draw(st.booleans()),
        "endpoint": draw(st.one_of(st.none(), st.sampled_from(["/v1/chat/completions"]))),
    }


@st.composite
def payload_fields(draw: st.DrawFn) -> tuple[type, dict[str, Any]]:
    """A payload class and valid keyword arguments for it."""
    kind = draw(st.sampled_from(["completed", "failed", "budget", "started", "stopped"]))
    if kind == "completed":
        return LlmRequestCompleted, _request_fields(draw)
    if kind == "failed":
        fields = _request_fields(draw)
        fields["error_code"] = draw(st.sampled_from(["rate_limited", "timeout"]))
        fields["error_message"] = draw(st.one_of(st.none(), st.text(max_size=50)))
        fields["status_code"] = draw(st.one_of(st.none(), st.sampled_from([429, 500, 503])))
        return LlmRequestFailed, fields
    if kind == "budget":
        return BudgetThresholdReached, {
            "threshold_percent": draw(st.integers(1, 200)),
            "current_spend_micros": draw(small_counts),
            "budget_micros": draw(st.integers(1, 10**9)),
            "budget_id": draw(st.one_of(st.none(), st.just("b-1"))),
        }
    if kind == "started":
        return RouterStarted, {"port": draw(st.one_of(st.none(), st.integers(0, 65535)))}
    return RouterStopped, {
        "total_requests": draw(small_counts),
        "failed_requests": draw(small_counts),
        "total_input_tokens": draw(small_counts),
        "total_output_tokens": draw(small_counts),
        "total_cost_micros": draw(small_counts),
    }


@st.composite
def prebuilt_events(draw: st.DrawFn) -> tuple[AnalyticsEvent | object, bool]:
    """``(event, intact)``: a valid event, or (``intact=False``) one with one field (of
    the payload or of the envelope) replaced by a hostile value — or no event at all."""
    cls, fields = draw(payload_fields())
    envelope: dict[str, Any] = {
        "event_id": fresh_event_id(),
        "timestamp_ms": draw(st.integers(0, 2_000_000_000_000)),
        "agent_id": draw(st.one_of(st.none(), st.sampled_from(AGENTS))),
    }
    where = draw(st.sampled_from(["intact", "payload", "envelope", "not-an-event"]))
    if where == "payload":
        fields[draw(st.sampled_from(sorted(fields)))] = draw(weird)
    elif where == "envelope":
        name = draw(st.sampled_from(["event_id", "timestamp_ms", "agent_id", "payload", "synced"]))
        envelope[name] = draw(weird)
    elif where == "not-an-event":
        return draw(st.one_of(weird, st.just(cls(**fields)))), False
    envelope.setdefault("payload", cls(**fields))
    return AnalyticsEvent(**envelope), where == "intact"

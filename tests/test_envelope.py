"""The event envelope: limits and checks, defaults per event type, and the wire form
(what a collector accepts and refuses, and what an older sender's events read as)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally import ValidationError
from llmtally._envelope import (
    MAX_TAG_VALUE_LENGTH,
    MAX_TAGS,
    check_environment,
    check_ref,
    check_schema_version,
    check_severity,
    check_tags,
)
from llmtally._ids import new_event_id
from llmtally.events import (
    SCHEMA_VERSION,
    AnalyticsEvent,
    AnomalyDetected,
    BudgetThresholdReached,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    decode_event,
    decode_wire_event,
    encode_event,
    from_wire,
    severity_of,
    to_wire,
)

COMPLETED = LlmRequestCompleted(model="gpt-4o", provider="openai", input_tokens=3)
FAILED = LlmRequestFailed(model="gpt-4o", provider="openai", error_code="rate_limited")


def _event(payload: object = COMPLETED, **envelope: object) -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=new_event_id(),
        timestamp_ms=1_700_000_000_000,
        payload=payload,  # type: ignore[arg-type]
        **envelope,  # type: ignore[arg-type]
    )


def test_schema_version_is_semver_starting_at_1_0_0() -> None:
    assert SCHEMA_VERSION == "1.0.0"
    assert _event().schema_version == SCHEMA_VERSION
    for ok in ("1.0.0", "1.2.30"):
        assert check_schema_version(ok) == ok
    for bad in ("2.0.0", "1.0", "1.0.0-rc1", "01.0.0", "", None, 1):
        with pytest.raises(ValidationError, match="schema_version"):
            check_schema_version(bad)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(COMPLETED, "info", id="completed"),
        pytest.param(FAILED, "error", id="failed"),
        pytest.param(
            BudgetThresholdReached(threshold_percent=80, current_spend_micros=8, budget_micros=10),
            "warning",
            id="budget",
        ),
        pytest.param(RouterStarted(port=1), "info", id="lifecycle"),
        pytest.param(
            AnomalyDetected(
                dim="model",
                value="m",
                metric="request_rate",
                kind="spike",
                minute_ms=0,
                observed=9,
                baseline=1,
                score=5.0,
            ),
            "warning",
            id="anomaly",
        ),
    ],
)
def test_severity_defaults_by_event_type_and_an_explicit_one_wins(
    payload: object, expected: str
) -> None:
    assert severity_of(_event(payload)) == expected
    assert severity_of(_event(payload, severity="critical")) == "critical"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty-is-none"),
        pytest.param(
            "0b6a3c1e-2f4d-4c9a-9d1e-7f1a2b3c4d5e",
            "0b6a3c1e-2f4d-4c9a-9d1e-7f1a2b3c4d5e",
            id="uuid",
        ),
        pytest.param(
            "4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4736", id="trace-id"
        ),
        pytest.param("req_01H:abc/def+x=@y.z-", "req_01H:abc/def+x=@y.z-", id="punctuation"),
        pytest.param("x" * 128, "x" * 128, id="128-chars"),
    ],
)
def test_correlation_ids_that_are_accepted(value: str | None, expected: str | None) -> None:
    assert check_ref("correlation_id", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 129, id="too-long"),
        pytest.param("has space", id="space"),
        pytest.param("new\nline", id="newline"),
        pytest.param('quote"', id="quote"),
        pytest.param("é", id="non-ascii"),
        pytest.param(12, id="not-str"),
    ],
)
def test_correlation_ids_that_are_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="correlation_id"):
        check_ref("correlation_id", value)


def test_severity_environment_checks() -> None:
    assert check_severity(None) is None
    assert check_severity("warning") == "warning"
    for bad in ("WARN", "fatal", ["error"]):
        with pytest.raises(ValidationError, match="severity"):
            check_severity(bad)
    assert check_environment("") is None
    assert check_environment("eu-west/prod_2") == "eu-west/prod_2"
    for bad in ("x" * 65, "prod env", "prod\x00"):
        with pytest.raises(ValidationError, match="environment"):
            check_environment(bad)


def test_tags_limits() -> None:
    assert check_tags(None) is None
    assert check_tags({}) is None
    full = {f"k{i}": "v" * MAX_TAG_VALUE_LENGTH for i in range(MAX_TAGS)}
    assert check_tags(full) == full
    source = {"team": "search"}
    copy = check_tags(source)
    source["team"] = "changed"
    assert copy == {"team": "search"}  # the caller's later changes do not reach the event
    assert check_tags({"a.b/c-d_e": "x:y"}) == {"a.b/c-d_e": "x:y"}
    refused = [
        ({f"k{i}": "v" for i in range(MAX_TAGS + 1)}, "limit is 16"),
        ({"k" * 65: "v"}, "tag key"),
        ({"": "v"}, "tag key"),
        ({"a:b": "v"}, "tag key"),  # ':' would make tag=key:value ambiguous
        ({"-lead": "v"}, "tag key"),
        ({"k": "v" * (MAX_TAG_VALUE_LENGTH + 1)}, "limit is 256"),
        ({"k": "nul\x00"}, "control character"),
        ({"k": 1}, "str value"),
        ({1: "v"}, "tag key"),
        (["k", "v"], "mapping"),
    ]
    for tags, match in refused:
        with pytest.raises(ValidationError, match=match):
            check_tags(tags)


def test_json_round_trip_keeps_the_envelope() -> None:
    ev = _event(
        FAILED,
        correlation_id="req-1",
        parent_event_id="span-9",
        severity="critical",
        environment="staging",
        tags={"team": "search", "tier": "gold"},
    )
    assert decode_event(encode_event(ev)) == ev


def test_an_event_stored_as_json_before_the_envelope_decodes_with_defaults() -> None:
    old = (
        b'{"event_id":"01a20773-25a9-70c8-8545-402839be20c3","timestamp_ms":1,'
        b'"payload":{"event_type":"llm_request_failed","model":"m","provider":"p",'
        b'"error_code":"e"},"agent_id":null,"synced":false}'
    )
    ev = decode_event(old)
    assert (ev.schema_version, ev.correlation_id, ev.parent_event_id) == ("1.0.0", None, None)
    assert (ev.severity, ev.environment, ev.tags) == (None, None, None)
    assert severity_of(ev) == "error"


def test_the_wire_carries_the_envelope_and_reads_it_back() -> None:
    ev = _event(
        COMPLETED,
        correlation_id="req-1",
        parent_event_id="0b6a3c1e-2f4d-4c9a-9d1e-7f1a2b3c4d5e",
        severity="debug",
        environment="prod",
        tags={"team": "search"},
    )
    raw = msgspec.json.decode(msgspec.json.encode(to_wire(ev)))
    assert raw["schema_version"] == "1.0.0"
    assert raw["correlation_id"] == "req-1"
    assert raw["parent_event_id"] == "0b6a3c1e-2f4d-4c9a-9d1e-7f1a2b3c4d5e"
    assert (raw["severity"], raw["environment"], raw["tags"]) == (
        "debug",
        "prod",
        {"team": "search"},
    )
    back = from_wire(decode_wire_event(msgspec.json.encode(raw)))
    assert back == msgspec.structs.replace(ev, synced=True)


def test_the_wire_omits_what_is_not_set_but_always_names_its_version() -> None:
    raw = msgspec.json.decode(msgspec.json.encode(to_wire(_event(COMPLETED))))
    assert raw["schema_version"] == "1.0.0"
    for name in ("correlation_id", "parent_event_id", "severity", "environment", "tags"):
        assert name not in raw


def _wire(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_id": new_event_id(),
        "event_type": "llm_request_failed",
        "timestamp_ms": 1,
        "agent_id": None,
        "provider_id": None,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cost_micros": 0,
        "pricing_status": "priced",
        "error_code": "e",
    }
    base.update(fields)
    return msgspec.json.encode(base)


def test_an_older_sender_without_envelope_reads_as_1_0_0_with_default_severity() -> None:
    ev = from_wire(decode_wire_event(_wire()))
    assert ev.schema_version == "1.0.0"
    assert ev.correlation_id is ev.tags is ev.environment is None
    assert severity_of(ev) == "error"


def test_a_newer_minor_version_is_read_and_kept() -> None:
    ev = from_wire(decode_wire_event(_wire(schema_version="1.4.0", unknown_field=1)))
    assert ev.schema_version == "1.4.0"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        pytest.param({"schema_version": "2.0.0"}, "schema_version", id="major-2"),
        pytest.param({"schema_version": "one"}, "schema_version", id="not-semver"),
        pytest.param({"correlation_id": "a b"}, "correlation_id", id="bad-correlation"),
        pytest.param({"correlation_id": "x" * 129}, "correlation_id", id="long-correlation"),
        pytest.param({"correlation_id": ""}, "correlation_id", id="empty-correlation"),
        pytest.param({"parent_event_id": "x\n"}, "parent_event_id", id="bad-parent"),
        pytest.param({"correlation_id": "req-1\n"}, "correlation_id", id="trailing-newline"),
        pytest.param({"schema_version": "1.0.0\n"}, "schema_version", id="version-newline"),
        pytest.param({"tags": {"k\n": "v"}}, "tags", id="key-newline"),
        pytest.param({"tags": {"k": "v\n"}}, "tags", id="value-newline"),
        pytest.param({"severity": "fatal"}, "severity", id="bad-severity"),
        pytest.param({"environment": "prod env"}, "environment", id="bad-environment"),
        pytest.param({"tags": {f"k{i}": "v" for i in range(17)}}, "tags", id="17-tags"),
        pytest.param({"tags": {"a:b": "v"}}, "tags", id="bad-key"),
        pytest.param({"tags": {"k": "v" * 257}}, "tags", id="long-value"),
        pytest.param({"tags": {"k": "\u0000"}}, "tags", id="nul-value"),
        pytest.param({"tags": {"k": 1}}, "tags", id="non-str-value"),
        pytest.param({"tags": ["k"]}, "tags", id="not-a-map"),
    ],
)
def test_the_wire_decoder_refuses_an_envelope_out_of_bounds(
    fields: dict[str, object], where: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=where):
        decode_wire_event(_wire(**fields))


_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,63}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=MAX_TAG_VALUE_LENGTH)


@given(st.dictionaries(_keys, _values, max_size=MAX_TAGS))
def test_tags_the_recorder_accepts_the_collector_accepts(tags: dict[str, str]) -> None:
    checked = check_tags(tags)
    ev = _event(COMPLETED, tags=checked)
    back = from_wire(decode_wire_event(msgspec.json.encode(to_wire(ev))))
    assert (back.tags or {}) == tags

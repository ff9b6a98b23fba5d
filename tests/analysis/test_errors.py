"""Error message normalization, fingerprints, and the bounded pattern table."""

from __future__ import annotations

import re
import uuid

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtally.analysis.errors import (
    MAX_SAMPLE_CHARS,
    ErrorPattern,
    ErrorPatterns,
    fingerprint,
    normalize_message,
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "Request req_abc123 failed", "Request <id> failed", id="request-id-underscore"
        ),
        pytest.param("chatcmpl-9xQ2LmN0pZ timed out", "<id> timed out", id="openai-completion-id"),
        pytest.param(
            "msg_01XFDUDYJgAACzvnptvVoYEL overloaded", "<id> overloaded", id="anthropic-msg-id"
        ),
        pytest.param(
            "key sk-proj-abc123def456ghi rejected", "key sk-<id> rejected", id="generic-id"
        ),
        pytest.param(
            "trace 550E8400-e29b-41d4-a716-446655440000 lost", "trace <uuid> lost", id="uuid"
        ),
        pytest.param("hash deadbeefdeadbeef0123 bad", "hash <hex> bad", id="long-hex"),
        pytest.param("at 0x7f3a9c01d2 crashed", "at <hex> crashed", id="0x-hex"),
        pytest.param(
            "429 Too Many Requests, retry in 2.5s",
            "<num> Too Many Requests, retry in <num>s",
            id="numbers",
        ),
        pytest.param("1234567890123456789 rows", "<num> rows", id="long-digits-are-a-number"),
        pytest.param("api v1 for user42", "api v1 for user42", id="digits-glued-to-letters-stay"),
        pytest.param("model 'gpt-4o' not found", "model <str> not found", id="single-quotes"),
        pytest.param('param "max_tokens" invalid', "param <str> invalid", id="double-quotes"),
        pytest.param("model `o1-mini` gone", "model <str> gone", id="backticks"),
        pytest.param("can't use it, don't", "can't use it, don't", id="apostrophes-are-not-quotes"),
        pytest.param(
            '{"message": "Rate limit for gpt-4 reached"}',
            '{<str>: "Rate limit for gpt-<num> reached"}',
            id="quoted-prose-is-kept-and-normalized",
        ),
        pytest.param("  a\t\n b  ", "a b", id="whitespace-collapsed"),
        pytest.param(
            "claude-3-5-sonnet-20241022 down",
            "claude-<num>-<num>-sonnet-<num> down",
            id="model-with-date-is-not-an-id",
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_normalize_message(message: str, expected: str) -> None:
    assert normalize_message(message) == expected


_alphabet = st.sampled_from(list("abcdefxyzABCF0123456789_-.:'\"` <>\t\n/"))
_messages = st.text(_alphabet, max_size=80) | st.text(max_size=80)


@settings(max_examples=400)
@given(_messages)
def test_normalize_is_idempotent(message: str) -> None:
    once = normalize_message(message)
    assert normalize_message(once) == once


_kinds_of_variable = (
    st.integers(min_value=0, max_value=10**20).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda f: f"{f:.3f}"),
    st.uuids().map(str),
    st.text("abcdef0123456789", min_size=3, max_size=20)
    .filter(lambda s: any(c.isdigit() for c in s))
    .map(lambda s: "req_" + s),
    st.text("ABCdef0123456789", min_size=10, max_size=30)
    .filter(lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s))
    .map(lambda s: "chatcmpl-" + s),
    st.from_regex(r"[0-9a-f]{15}[a-f]{1,9}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9.-]{1,20}", fullmatch=True).map(lambda s: f"'{s}'"),
)


@given(st.data(), st.sampled_from(["Request {} failed", "upstream {}: boom", "{}"]))
def test_fingerprint_is_stable_across_variable_parts(data: st.DataObject, template: str) -> None:
    kind = data.draw(st.sampled_from(_kinds_of_variable))
    a, b = data.draw(kind), data.draw(kind)
    fa = fingerprint("rate_limited", "/v1/chat", template.format(a))
    fb = fingerprint("rate_limited", "/v1/chat", template.format(b))
    assert fa == fb


def test_fingerprint_shape_and_what_it_depends_on() -> None:
    fp = fingerprint("rate_limited", "/v1/chat", "Rate limit hit")
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    assert fp == fingerprint("rate_limited", "/v1/chat", "Rate  limit hit ")  # same pattern
    assert fp != fingerprint("timeout", "/v1/chat", "Rate limit hit")
    assert fp != fingerprint("rate_limited", "/v1/embeddings", "Rate limit hit")
    assert fp != fingerprint("rate_limited", "/v1/chat", "Quota exceeded")
    assert fingerprint("e", None, None) == fingerprint("e", "", "")
    # Fields are separated: moving text from one field to the next changes the hash.
    assert fingerprint("ab", "c", "") != fingerprint("a", "bc", "")


def test_patterns_group_and_count() -> None:
    t = ErrorPatterns()
    fp1 = t.observe(1_000, "rate_limited", "req_a1b2c3: retry in 20s", model="m1", status_code=429)
    fp2 = t.observe(2_000, "rate_limited", "req_z9y8x7: retry in 7s", model="m2", status_code=429)
    fp3 = t.observe(3_000, "rate_limited", "req_q1: retry in 1s", model="m1", status_code=503)
    assert fp1 == fp2 == fp3
    assert len(t) == 1
    p = t.get(fp1)
    assert p is not None
    assert p.count == 3
    assert (p.first_seen_ms, p.last_seen_ms) == (1_000, 3_000)
    assert p.models == {"m1": 2, "m2": 1}
    assert p.status_codes == {429: 2, 503: 1}
    assert p.message == "<id>: retry in <num>s"
    assert p.sample_message == "req_a1b2c3: retry in 20s"  # the first raw message
    assert p.endpoint is None


def test_seen_times_never_move_backwards() -> None:
    t = ErrorPatterns()
    fp = t.observe(5_000, "e", "boom", model=None, status_code=None)
    t.observe(3_000, "e", "boom", model=None, status_code=None)  # a late event
    p = t.get(fp)
    assert p is not None
    assert (p.first_seen_ms, p.last_seen_ms) == (3_000, 5_000)
    assert p.models == {}
    assert p.status_codes == {}


def test_per_pattern_memory_is_bounded() -> None:
    t = ErrorPatterns(max_models=3)
    for i in range(10):
        t.observe(i, "e", "boom", model=f"model-{chr(97 + i)}", status_code=400 + i * 10)
    t.observe(99, "e", "x" * 5_000, model="m", status_code=None)
    [boom, long] = sorted(t.top(2), key=lambda p: p.count, reverse=True)
    assert boom.models == {"model-a": 1, "model-b": 1, "model-c": 1}
    assert boom.other_models == 7
    assert len(boom.status_codes) == 10
    assert len(long.sample_message) == MAX_SAMPLE_CHARS


def test_status_codes_overflow() -> None:
    t = ErrorPatterns()
    for code in range(100, 130):
        fp = t.observe(1, "e", "boom", model=None, status_code=code)
    p = t.get(fp)
    assert p is not None
    assert len(p.status_codes) == 20
    assert p.other_status_codes == 10


def test_lru_eviction_by_last_seen() -> None:
    t = ErrorPatterns(max_patterns=2)
    a = t.observe(1, "a", "", model=None, status_code=None)
    b = t.observe(2, "b", "", model=None, status_code=None)
    t.observe(3, "a", "", model=None, status_code=None)  # a is now the most recent
    c = t.observe(4, "c", "", model=None, status_code=None)  # evicts b
    assert len(t) == 2
    assert t.evicted == 1
    assert t.get(b) is None
    assert t.get(a) is not None
    assert t.get(c) is not None
    assert t.total_errors == 4
    t.observe(5, "b", "", model=None, status_code=None)  # comes back fresh, evicts a
    assert t.get(a) is None
    pb = t.get(b)
    assert pb is not None
    assert (pb.count, pb.first_seen_ms) == (1, 5)
    assert t.evicted == 2


def test_top_orders_by_count_then_recency() -> None:
    t = ErrorPatterns()
    for _ in range(3):
        t.observe(10, "three", "", model=None, status_code=None)
    t.observe(20, "one-old", "", model=None, status_code=None)
    t.observe(30, "one-new", "", model=None, status_code=None)
    for _ in range(2):
        t.observe(5, "two", "", model=None, status_code=None)
    assert [p.error_type for p in t.top(10)] == ["three", "two", "one-new", "one-old"]
    assert [p.error_type for p in t.top(2)] == ["three", "two"]
    assert t.top(0) == []


def test_snapshot_is_a_json_ready_struct_and_clear_resets() -> None:
    t = ErrorPatterns()
    t.observe(1, "e", "boom 1", model="m", status_code=500, endpoint="/v1/chat")
    snap = t.snapshot()
    assert (snap.total_errors, snap.distinct_patterns, snap.evicted) == (1, 1, 0)
    data = msgspec.json.decode(msgspec.json.encode(snap))
    assert data["patterns"][0]["status_codes"] == {"500": 1}
    assert data["patterns"][0]["endpoint"] == "/v1/chat"
    back = msgspec.convert(data["patterns"][0], ErrorPattern, strict=False)
    assert back == snap.patterns[0]
    t.clear()
    assert len(t) == 0
    assert t.snapshot().total_errors == 0


def test_invalid_limits() -> None:
    with pytest.raises(ValueError, match="max_patterns"):
        ErrorPatterns(0)
    with pytest.raises(ValueError, match="max_models"):
        ErrorPatterns(max_models=0)


def test_event_ids_normalize() -> None:
    eid = str(uuid.uuid4())
    assert normalize_message(f"duplicate event {eid}") == "duplicate event <uuid>"

"""Fingerprints are persisted and shown to users: these are pinned, whatever the normalizer's
implementation (values computed with the multi-pass normalizer of before its cache and
combined regex)."""

from __future__ import annotations

import pytest

from llmtally.analysis.errors import (
    MESSAGE_CACHE_SIZE,
    ErrorPatterns,
    fingerprint,
    normalize_message,
)

PINNED = [
    pytest.param(
        "rate_limited",
        None,
        "429 Too Many Requests: req_0000abcd9 retry in 7s",
        "<num> Too Many Requests: <id> retry in <num>s",
        "7f8c6c0e65e9",
        id="request-id-and-numbers",
    ),
    pytest.param(
        "rate_limited",
        "/v1/chat/completions",
        "req_8fj2k1: rate limit, retry in 20s",
        "<id>: rate limit, retry in <num>s",
        "3bb2f1bd61d2",
        id="endpoint",
    ),
    pytest.param(
        "invalid_request",
        "/v1/responses",
        "Invalid value \"gpt-4o-2024-08-06\" for 'model' at `messages[3]`",
        "Invalid value <str> for <str> at <str>",
        "e330ebb44ac6",
        id="quoted",
    ),
    pytest.param(
        "server_error",
        None,
        "upstream 550e8400-e29b-41d4-a716-446655440000 failed after 2.5s (attempt 3)",
        "upstream <uuid> failed after <num>s (attempt <num>)",
        "09ca9742412c",
        id="uuid-and-decimal",
    ),
    pytest.param(
        "auth",
        None,
        "Incorrect API key provided: sk-proj-a1B2c3D4e5F6g7H8. See https://x.io/keys",
        "Incorrect API key provided: sk-<id>. See https://x.io/keys",
        "30ce087356e5",
        id="generic-id",
    ),
    pytest.param(
        "timeout",
        "/v1/messages",
        "deadline 0x7fff5fbff8a8 exceeded; trace deadbeefcafebabe1234 span_9x8y7z",
        "deadline <hex> exceeded; trace <hex> <id>",
        "1cba720f6de8",
        id="hex",
    ),
    pytest.param(
        "bad_gateway",
        None,
        '  502\tBad   Gateway\n from id-7f3kq9x0p2m4 user42 v1 can\'t "hello world" ',
        '<num> Bad Gateway from <id> user42 v1 can\'t "hello world"',
        "4f6bc3ee06ac",
        id="whitespace-prose-and-glued-digits",
    ),
    pytest.param(
        "overloaded",
        None,
        "Overloaded: chatcmpl-9xYz1AbC msg_01XabcDEF toolu_01a call_abc123 0123456789abcdef0",
        "Overloaded: <id> <id> <id> <id> <hex>",
        "582ec4cf7579",
        id="known-ids",
    ),
    pytest.param("empty", None, "", "", "f1bbc34441aa", id="empty"),
    pytest.param("none", None, None, "", "4b8df5c31cbd", id="none"),
    pytest.param(
        "unicode",
        None,
        "Fehler: Kontingent überschritten – 42 € für café_3 «quoted» 'x y' `z9`",
        "Fehler: Kontingent überschritten – <num> € für café_3 «quoted» 'x y' <str>",
        "bfc9b6ef8e47",
        id="unicode",
    ),
]


@pytest.mark.parametrize(("error_type", "endpoint", "message", "normalized", "fp"), PINNED)
def test_fingerprints_are_pinned(
    error_type: str, endpoint: str | None, message: str | None, normalized: str, fp: str
) -> None:
    assert normalize_message(message or "") == normalized
    assert fingerprint(error_type, endpoint, message) == fp
    patterns = ErrorPatterns()
    # Twice: the second observation may take a shortcut (a cache), with the same answer.
    for _ in range(2):
        fp_seen = patterns.observe(
            0, error_type, message, model=None, status_code=None, endpoint=endpoint
        )
        assert fp_seen == fp
    p = patterns.get(fp)
    assert p is not None and (p.count, p.message) == (2, normalized)


def test_a_long_message_is_fingerprinted_by_its_first_4096_characters() -> None:
    message = "quota 123 exceeded " * 250 + "req_ab12cd34"
    patterns = ErrorPatterns()
    for _ in range(2):
        assert patterns.observe(0, "long", message, model=None, status_code=None) == "95ae988325b0"
    assert fingerprint("long", None, message) == "15c411e90090"  # the whole message


def test_the_message_cache_is_bounded_and_changes_no_fingerprint() -> None:
    patterns = ErrorPatterns(max_patterns=10)
    messages = [f"upstream {i} failed: req_{i:06x}9" for i in range(MESSAGE_CACHE_SIZE + 50)]
    for m in messages + messages[:3] + messages[-3:]:  # the first ones were evicted by now
        fp = patterns.observe(0, "upstream", m, model="m", status_code=502, endpoint="/v1")
        assert fp == fingerprint("upstream", "/v1", m)
    assert len(patterns._cache) == MESSAGE_CACHE_SIZE
    assert patterns.snapshot().total_errors == len(messages) + 6


def test_the_fingerprint_memo_is_bounded_and_changes_no_fingerprint() -> None:
    # Messages that normalize alike share one hash; distinct ones fill the memo, which is
    # cleared when full.
    patterns = ErrorPatterns(max_patterns=10)
    words = ["alpha", "beta", "gamma", "delta"]
    messages = [
        f"{words[i % 4]} upstream{i // 4} failed: req_{i:06x}9"
        for i in range(MESSAGE_CACHE_SIZE + 50)
    ]
    for m in messages + messages[:3]:
        fp = patterns.observe(0, "upstream", m, model="m", status_code=502, endpoint="/v1")
        assert fp == fingerprint("upstream", "/v1", m)
    assert 0 < len(patterns._digests) <= MESSAGE_CACHE_SIZE

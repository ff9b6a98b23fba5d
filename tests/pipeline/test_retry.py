"""The sync retry rules: a table, hand-worked delays, Retry-After. No event loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally.pipeline.retry import (
    Action,
    Backoff,
    Decision,
    Failure,
    Outcome,
    backoff_delay,
    classify,
    decide,
    parse_retry_after,
)

POLICY = Backoff(min_backoff=1.0, max_backoff=30.0, max_retry_after=300.0)
NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        pytest.param(200, Action.SYNCED, id="200"),
        pytest.param(201, Action.SYNCED, id="201"),
        pytest.param(202, Action.SYNCED, id="202"),
        pytest.param(299, Action.SYNCED, id="299"),
        pytest.param(408, Action.RETRY, id="408"),
        pytest.param(429, Action.RETRY, id="429"),
        pytest.param(500, Action.RETRY, id="500"),
        pytest.param(502, Action.RETRY, id="502"),
        pytest.param(503, Action.RETRY, id="503"),
        pytest.param(504, Action.RETRY, id="504"),
        pytest.param(507, Action.RETRY, id="507-other-5xx"),
        pytest.param(413, Action.SPLIT, id="413"),
        pytest.param(401, Action.CONFIG_ERROR, id="401"),
        pytest.param(403, Action.CONFIG_ERROR, id="403"),
        pytest.param(404, Action.CONFIG_ERROR, id="404"),
        pytest.param(301, Action.CONFIG_ERROR, id="301-redirect"),
        pytest.param(308, Action.CONFIG_ERROR, id="308-redirect"),
        pytest.param(400, Action.DROP, id="400"),
        pytest.param(409, Action.DROP, id="409"),
        pytest.param(415, Action.DROP, id="415"),
        pytest.param(422, Action.DROP, id="422"),
        pytest.param(451, Action.DROP, id="451"),
        pytest.param(501, Action.DROP, id="501"),
        pytest.param(Failure.CONNECT, Action.RETRY, id="connection-refused"),
        pytest.param(Failure.TIMEOUT, Action.RETRY, id="timeout"),
        pytest.param(Failure.NETWORK, Action.RETRY, id="read-error"),
        pytest.param(Failure.PROTOCOL, Action.RETRY, id="dropped-connection"),
        pytest.param(Failure.BAD_RESPONSE, Action.CONFIG_ERROR, id="2xx-not-a-collector"),
    ],
)
def test_classify(outcome: Outcome, action: Action) -> None:
    assert classify(outcome) is action


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [
        pytest.param(1, 0.5, 1.0, id="1st-no-jitter"),
        pytest.param(2, 0.5, 2.0, id="2nd-doubles"),
        pytest.param(3, 0.5, 4.0, id="3rd"),
        pytest.param(5, 0.5, 16.0, id="5th"),
        pytest.param(6, 0.5, 30.0, id="6th-capped"),
        pytest.param(100, 0.5, 30.0, id="100th-capped"),
        pytest.param(1, 0.0, 0.5, id="jitter-minus-50pc"),
        pytest.param(3, 0.0, 2.0, id="3rd-minus-50pc"),
        pytest.param(3, 0.999, 5.996, id="3rd-plus-50pc"),
        pytest.param(5, 0.75, 20.0, id="5th-plus-25pc"),
        pytest.param(6, 0.99, 30.0, id="never-above-max"),
        pytest.param(10_000, 0.0, 15.0, id="huge-attempt-no-overflow"),
    ],
)
def test_backoff_delay(attempt: int, jitter: float, delay: float) -> None:
    assert backoff_delay(attempt, jitter, POLICY) == pytest.approx(delay)


@given(attempt=st.integers(1, 10_000), jitter=st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_stays_within_half_and_the_cap(attempt: int, jitter: float) -> None:
    delay = backoff_delay(attempt, jitter, POLICY)
    base = min(30.0, 2.0 ** min(attempt - 1, 64))
    assert 0.5 * base <= delay <= min(30.0, 1.5 * base)


def test_backoff_attempts_are_1_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(0, 0.5, POLICY)


def test_backoff_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_backoff"):
        Backoff(min_backoff=5.0, max_backoff=1.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(" 0 ", 0.0, id="zero-padded"),
        pytest.param("1.5", 1.5, id="decimal-tolerated"),
        pytest.param("Wed, 21 Oct 2015 07:28:10 GMT", 10.0, id="http-date"),
        pytest.param("Wed, 21 Oct 2015 07:33:00 -0000", 300.0, id="date-without-zone"),
        pytest.param("Wed, 21 Oct 2015 09:28:00 +0200", 0.0, id="date-with-offset-now"),
        pytest.param("Wed, 21 Oct 2015 07:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("-5", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="infinite"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("Wed, 99 Foo 2015", None, id="broken-date"),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("outcome", "attempt", "jitter", "retry_after", "decision"),
    [
        pytest.param(200, 3, 0.5, None, Decision(Action.SYNCED), id="synced-no-wait"),
        pytest.param(400, 1, 0.5, "60", Decision(Action.DROP), id="drop-no-wait"),
        pytest.param(413, 1, 0.5, None, Decision(Action.SPLIT), id="split-at-once"),
        pytest.param(503, 1, 0.5, None, Decision(Action.RETRY, 1.0), id="503-backoff"),
        pytest.param(503, 4, 0.5, None, Decision(Action.RETRY, 8.0), id="503-4th"),
        pytest.param(429, 1, 0.5, "2", Decision(Action.RETRY, 2.0), id="retry-after-above"),
        pytest.param(429, 4, 0.5, "2", Decision(Action.RETRY, 8.0), id="retry-after-below"),
        pytest.param(
            503,
            1,
            0.5,
            "Wed, 21 Oct 2015 07:29:00 GMT",
            Decision(Action.RETRY, 60.0),
            id="retry-after-date",
        ),
        pytest.param(429, 1, 0.5, "3600", Decision(Action.RETRY, 300.0), id="clamped"),
        pytest.param(429, 1, 0.5, "bogus", Decision(Action.RETRY, 1.0), id="bad-header"),
        pytest.param(401, 1, 0.5, None, Decision(Action.CONFIG_ERROR, 30.0), id="401-max"),
        pytest.param(403, 1, 0.0, None, Decision(Action.CONFIG_ERROR, 15.0), id="403-jitter"),
        pytest.param(404, 1, 0.5, "120", Decision(Action.CONFIG_ERROR, 120.0), id="404-ra"),
        pytest.param(
            Failure.TIMEOUT, 2, 0.5, None, Decision(Action.RETRY, 2.0), id="timeout-backoff"
        ),
    ],
)
def test_decide(
    outcome: Outcome, attempt: int, jitter: float, retry_after: str | None, decision: Decision
) -> None:
    got = decide(
        outcome, attempt=attempt, jitter=jitter, policy=POLICY, retry_after=retry_after, now=NOW
    )
    assert got.action is decision.action
    assert got.delay == pytest.approx(decision.delay)


def test_a_small_max_retry_after_never_shortens_the_backoff() -> None:
    policy = Backoff(min_backoff=10.0, max_backoff=30.0, max_retry_after=1.0)
    got = decide(503, attempt=1, jitter=0.5, policy=policy, retry_after="20", now=NOW)
    assert got == Decision(Action.RETRY, 10.0)

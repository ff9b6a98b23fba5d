"""Sync retry rules as data: what to do with each answer from a collector, and how long to wait.

Pure and synchronous (no I/O, no clock, no randomness of its own): the syncer actor
passes in the outcome of a request, how many requests have failed in a row, a random
number and the current wall-clock time, and gets back a ``Decision``.

An *outcome* is an HTTP status code or a ``Failure`` (no usable answer at all):

=====================================  ================  ======================================
outcome                                action            the syncer then
=====================================  ================  ======================================
2xx                                    ``SYNCED``        marks the batch synced (per-event
                                                         ``rejected`` entries: refused)
408, 429, 500, 502, 503, 504,          ``RETRY``         keeps the batch pending, backs off
other 5xx, connection errors,                            (``Retry-After`` is a minimum)
timeouts, a dropped connection
413                                    ``SPLIT``         posts each half; a single event still
                                                         refused is refused (counted)
401, 403, 404, 3xx, a 2xx that is not  ``CONFIG_ERROR``  keeps the batch pending, backs off the
a collector's answer                                     maximum, shows ``config_error``
any other 4xx, 501                     ``DROP``          marks the batch refused (counted)
=====================================  ================  ======================================

A redirect is not followed (a POST body must not be re-sent to wherever a 3xx points):
it means ``server_url`` is wrong, so it counts as a configuration error. Nothing is ever
given up on while the router runs: the rows are durable, only their order of sending is
decided here.

Delays: ``min_backoff`` doubling with each consecutive failure up to ``max_backoff``, with
±50% jitter, never above ``max_backoff``; configuration errors wait the (jittered)
maximum. A collector's ``Retry-After`` (delta-seconds or an HTTP-date) is a minimum,
clamped to ``max_retry_after``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final, TypeAlias

__all__ = [
    "FAILURE_ACTIONS",
    "STATUS_ACTIONS",
    "Action",
    "Backoff",
    "Decision",
    "Failure",
    "Outcome",
    "backoff_delay",
    "classify",
    "decide",
    "parse_retry_after",
]


class Action(enum.Enum):
    """What the syncer does with a batch after a request."""

    SYNCED = "synced"
    RETRY = "retry"
    SPLIT = "split"
    CONFIG_ERROR = "config_error"
    DROP = "drop"


class Failure(enum.Enum):
    """A request that produced no usable HTTP answer."""

    CONNECT = "connect"  # refused, unreachable, name not resolved
    TIMEOUT = "timeout"  # connect, write, read or pool timeout
    NETWORK = "network"  # a read or write failed mid-exchange
    PROTOCOL = "protocol"  # the peer closed without a (complete) answer, or spoke bad HTTP
    BAD_RESPONSE = "bad_response"  # a 2xx whose body is not a collector's answer


Outcome: TypeAlias = int | Failure
"""An HTTP status code, or why there was none."""

STATUS_ACTIONS: Final = MappingProxyType(
    {
        408: Action.RETRY,
        429: Action.RETRY,
        500: Action.RETRY,
        502: Action.RETRY,
        503: Action.RETRY,
        504: Action.RETRY,
        413: Action.SPLIT,
        401: Action.CONFIG_ERROR,
        403: Action.CONFIG_ERROR,
        404: Action.CONFIG_ERROR,
        501: Action.DROP,
    }
)
"""Statuses with their own rule; the others follow their class (see ``classify``)."""

FAILURE_ACTIONS: Final = MappingProxyType(
    {
        Failure.CONNECT: Action.RETRY,
        Failure.TIMEOUT: Action.RETRY,
        Failure.NETWORK: Action.RETRY,
        Failure.PROTOCOL: Action.RETRY,
        Failure.BAD_RESPONSE: Action.CONFIG_ERROR,
    }
)


def classify(outcome: Outcome) -> Action:
    """The action for ``outcome``: ``STATUS_ACTIONS`` first, then the status class —
    2xx synced, 3xx configuration error, 4xx drop, anything else (5xx, nonsense) retry."""
    if isinstance(outcome, Failure):
        return FAILURE_ACTIONS[outcome]
    action = STATUS_ACTIONS.get(outcome)
    if action is not None:
        return action
    if 200 <= outcome < 300:
        return Action.SYNCED
    if 300 <= outcome < 400:
        return Action.CONFIG_ERROR
    if 400 <= outcome < 500:
        return Action.DROP
    return Action.RETRY


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay settings (seconds), as in ``SyncConfig``."""

    min_backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff <= self.max_backoff or self.max_retry_after < 0:
            raise ValueError("need 0 < min_backoff <= max_backoff and max_retry_after >= 0")


def backoff_delay(attempt: int, jitter: float, policy: Backoff) -> float:
    """The delay after the ``attempt``-th failure in a row (1-based).

    ``min_backoff * 2**(attempt - 1)``, capped at ``max_backoff``, times ``0.5 + jitter``
    (``jitter`` in ``[0, 1)``: ±50%), and never above ``max_backoff``.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    base = min(policy.max_backoff, policy.min_backoff * 2.0 ** min(attempt - 1, 64))
    return _jittered(base, jitter, policy.max_backoff)


def _jittered(base: float, jitter: float, cap: float) -> float:
    return min(cap, base * (0.5 + min(max(jitter, 0.0), 1.0)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` if absent or invalid.

    ``value`` is delta-seconds (``"120"``; a decimal is tolerated) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``; ``now`` is the wall clock in unix seconds). A
    date in the past gives 0; a negative or non-finite number is invalid.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no zone information (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Decision:
    """``action`` for the batch, and ``delay`` (s) before the next request (0: at once)."""

    action: Action
    delay: float = 0.0


def decide(
    outcome: Outcome,
    *,
    attempt: int,
    jitter: float,
    policy: Backoff,
    retry_after: str | None = None,
    now: float = 0.0,
) -> Decision:
    """The action for ``outcome`` and, when it keeps the batch pending, the delay.

    ``attempt``: failures in a row including this one (1-based; ignored for outcomes
    that do not wait). ``jitter`` in ``[0, 1)``. ``retry_after``: the response's
    ``Retry-After`` header, a minimum clamped to ``policy.max_retry_after``; ``now`` the
    wall clock (unix seconds) for an HTTP-date.
    """
    action = classify(outcome)
    if action is Action.RETRY:
        delay = backoff_delay(max(attempt, 1), jitter, policy)
    elif action is Action.CONFIG_ERROR:
        delay = _jittered(policy.max_backoff, jitter, policy.max_backoff)
    else:
        return Decision(action)
    floor = parse_retry_after(retry_after, now)
    if floor is not None:
        delay = max(delay, min(floor, policy.max_retry_after))
    return Decision(action, delay)

"""Argument checks for the recording API: clear ``ValidationError``s, nothing else.

Limits (documented in the README):

- identifiers (``model``, ``agent_id``, ``provider_id``, ``provider``, ``error_code``,
  ``budget_id``): non-empty strings of at most ``MAX_ID_LENGTH`` characters — longer ones
  raise (they are keys of stats and indexes); ``""`` for an optional id means "none";
  a string that is not valid Unicode text (a lone surrogate such as ``"\ud800"``: SQLite
  and JSON take UTF-8 only) raises;
- ``error_message``: truncated to ``MAX_MESSAGE_LENGTH`` characters (an upstream's error
  text can be arbitrarily long; losing the failure would be worse than trimming it); a
  lone surrogate in it becomes U+FFFD for the same reason;
- token counts: ``int`` (not ``bool``) from 0 to 2**53-1; cache parts ≤ ``input_tokens``;
  the cost of one event at most 2**53-1 nano-dollars (about $9M);
- durations in milliseconds: finite numbers from 0 to 1e10; ``status_code`` 100–599;
- ``timestamp_ms``: an ``int`` from 0 to 2**53-1.
"""

from __future__ import annotations

import math
import re
from typing import Final

from . import _envelope as env
from ._exceptions import ValidationError
from .events import (
    AnalyticsEvent,
    BudgetThresholdReached,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    RouterStopped,
)

__all__ = [
    "MAX_COUNT",
    "MAX_ID_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "check_count",
    "check_cost",
    "check_duration",
    "check_event",
    "check_id",
    "check_message",
    "check_optional_id",
    "check_status",
    "check_text",
    "check_timestamp",
]

MAX_ID_LENGTH: Final = 256
MAX_MESSAGE_LENGTH: Final = 2_000
MAX_COUNT: Final = 2**53 - 1
MAX_DURATION_MS: Final = 1e10
MAX_TOKENS_PER_S: Final = 1e9  # the wire format's bound on output_tokens_per_s

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (no lone surrogates). O(1) for ASCII."""
    return value.isascii() or _SURROGATE.search(value) is None


def check_text(name: str, value: str) -> str:
    """``value`` if it is valid Unicode text (encodable as UTF-8), else ``ValidationError``."""
    if not _is_text(value):
        raise ValidationError(f"{name} is not valid Unicode text (it has a lone surrogate)")
    return value


def check_id(name: str, value: object) -> str:
    """A required identifier."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isascii():  # fast
        return value
    if type(value) is not str and not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{name} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    return check_text(name, str(value))


def check_optional_id(name: str, value: object) -> str | None:
    """An optional identifier; ``None`` and ``""`` mean none."""
    if value is None or value == "":
        return None
    if type(value) is str and len(value) <= MAX_ID_LENGTH and value.isascii():
        return value
    return check_id(name, value)


def check_timestamp(value: object) -> int:
    """Unix milliseconds: an ``int`` within 0..2**53-1 (exact in JSON, fits SQLite)."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise ValidationError(f"timestamp_ms must be an int within 0..{MAX_COUNT}, got {value!r}")
    return value


def check_cost(cost_nanos: int) -> int:
    """The cost of one event: at most ``MAX_COUNT`` nano-dollars (sums of many must still
    fit SQLite's 64-bit integers, and each is exact in JSON)."""
    if cost_nanos > MAX_COUNT:
        raise ValidationError(
            f"the cost of one event must not exceed {MAX_COUNT} nano-dollars, got {cost_nanos}: "
            "check the token counts"
        )
    return cost_nanos


def check_count(name: str, value: object) -> int:
    """A token (or other) count."""
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, fast
        return value
    if type(value) is not int:
        raise ValidationError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0 or value > MAX_COUNT:
        raise ValidationError(f"{name} must be within 0..{MAX_COUNT}, got {value}")
    return value


def check_duration(name: str, value: object) -> float | None:
    """An optional duration in milliseconds."""
    if type(value) is float and 0.0 <= value <= MAX_DURATION_MS:  # the common case, fast
        return value
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number of milliseconds, got {value!r}")
    v = float(value)
    if not (0.0 <= v <= MAX_DURATION_MS) or math.isnan(v):
        raise ValidationError(
            f"{name} must be finite and within 0..{MAX_DURATION_MS:g} ms, got {value!r}"
        )
    return v


def check_status(value: object) -> int | None:
    """An optional HTTP status code."""
    if value is None:
        return None
    if type(value) is not int or not 100 <= value <= 599:
        raise ValidationError(f"status_code must be an int within 100..599, got {value!r}")
    return value


def check_message(value: object) -> str | None:
    """An optional error message, truncated to ``MAX_MESSAGE_LENGTH`` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"error_message must be a str, got {type(value).__name__}")
    if len(value) > MAX_MESSAGE_LENGTH:
        value = value[: MAX_MESSAGE_LENGTH - 1] + "…"
    if not _is_text(value):  # an upstream's text, not the caller's mistake: repaired
        value = _SURROGATE.sub("\ufffd", value)
    return str(value)


_EVENT_ID: Final = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REQUEST_COUNTS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cost_nanos",
)
_REQUEST_MILLIS: Final = ("duration_ms", "ttft_ms", "itl_mean_ms", "itl_p95_ms")
_STOPPED_COUNTS: Final = (
    "total_requests",
    "failed_requests",
    "total_input_tokens",
    "total_output_tokens",
    "total_cost_micros",
)


def check_event(event: object) -> None:
    """A pre-built event (``record``, ``record_nowait``): every field of the envelope and
    the payload, as the builders would make it. msgspec Structs do not check types when
    constructed, and a value SQLite or JSON cannot hold would stall the persister or the
    outbox, so nothing is taken on trust. ``event_id`` must be a canonical lowercase
    UUID (the collector accepts nothing else). Raises ``ValidationError``."""
    if type(event) is not AnalyticsEvent:
        raise ValidationError(f"expected an AnalyticsEvent, got {type(event).__name__}")
    if not _plainly_valid(event):
        check_fields(event)


def check_fields(event: AnalyticsEvent) -> None:
    """``check_event``'s field-by-field checks (without its fast path)."""
    if type(event.event_id) is not str or not _EVENT_ID.fullmatch(event.event_id):
        raise ValidationError(f"event_id must be a lowercase UUID, got {event.event_id!r}")
    check_timestamp(event.timestamp_ms)
    check_optional_id("agent_id", event.agent_id)
    if type(event.synced) is not bool:
        raise ValidationError(f"synced must be a bool, got {event.synced!r}")
    p = event.payload
    cls = type(p)
    if cls is LlmRequestCompleted or cls is LlmRequestFailed:
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        _check_request(p)
    elif cls is BudgetThresholdReached:
        assert isinstance(p, BudgetThresholdReached)
        check_count("threshold_percent", p.threshold_percent)
        check_count("current_spend_micros", p.current_spend_micros)
        check_count("budget_micros", p.budget_micros)
        check_optional_id("budget_id", p.budget_id)
    elif cls is RouterStarted:
        assert isinstance(p, RouterStarted)
        if p.port is not None and (type(p.port) is not int or not 0 <= p.port <= 65535):
            raise ValidationError(f"port must be an int within 0..65535, got {p.port!r}")
    elif cls is RouterStopped:
        for name in _STOPPED_COUNTS:
            check_count(name, getattr(p, name))
    else:
        raise ValidationError(f"unknown payload type {cls.__name__}")
    if (  # the common case, one cheap test: the envelope at its defaults
        event.schema_version is not env.SCHEMA_VERSION
        or event.correlation_id is not None
        or event.parent_event_id is not None
        or event.severity is not None
        or event.environment is not None
        or event.tags is not None
    ):
        _check_envelope(event)


def _id_ok(v: object) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_ID_LENGTH and v.isascii()


def _ms_ok(v: object) -> bool:
    return v is None or (type(v) is float and 0.0 <= v <= MAX_DURATION_MS)


def _plainly_valid(e: AnalyticsEvent) -> bool:
    """One inline test of the shape nearly every event has (a completed request, ASCII
    ids, float durations, the envelope at its defaults but for ``environment``): ``True``
    only when every check of ``check_event`` would pass. ``False`` decides nothing: the
    field-by-field checks run and name what is wrong. (They cost ~3 µs an event, this
    ~1 µs: an integration records each request through here.)"""
    p = e.payload
    if type(p) is not LlmRequestCompleted:
        return False
    i, c, w = p.input_tokens, p.cached_input_tokens, p.cache_write_input_tokens
    o, cost, eid, ts = p.output_tokens, p.cost_nanos, e.event_id, e.timestamp_ms
    a, pid, ep, envn = e.agent_id, p.provider_id, p.endpoint, e.environment
    rate = p.output_tokens_per_s
    status: object = p.pricing_status  # typed as a Literal; a pre-built event may lie
    return (
        type(eid) is str
        and _EVENT_ID.fullmatch(eid) is not None
        and type(ts) is int
        and 0 <= ts <= MAX_COUNT
        and e.synced is False
        and _id_ok(p.model)
        and _id_ok(p.provider)
        and (a is None or _id_ok(a))
        and (pid is None or _id_ok(pid))
        and (ep is None or _id_ok(ep))
        and type(i) is int
        and type(c) is int
        and type(w) is int
        and type(o) is int
        and type(cost) is int
        and c >= 0
        and w >= 0
        and c + w <= i <= MAX_COUNT
        and 0 <= o <= MAX_COUNT
        and 0 <= cost <= MAX_COUNT
        and type(status) is str
        and status in ("priced", "unpriced")
        and _ms_ok(p.duration_ms)
        and _ms_ok(p.ttft_ms)
        and _ms_ok(p.itl_mean_ms)
        and _ms_ok(p.itl_p95_ms)
        and (rate is None or (type(rate) is float and 0.0 <= rate <= MAX_TOKENS_PER_S))
        and type(p.usage_missing) is bool
        and e.schema_version is env.SCHEMA_VERSION
        and e.correlation_id is None
        and e.parent_event_id is None
        and e.severity is None
        and e.tags is None
        and (envn is None or (type(envn) is str and env.is_environment(envn) is not None))
    )


def _check_envelope(event: AnalyticsEvent) -> None:
    if event.schema_version is not env.SCHEMA_VERSION:
        env.check_schema_version(event.schema_version)
    # Strict for a pre-built event: "" would reach storage and the wire as it is.
    for name in ("correlation_id", "parent_event_id"):
        ref = getattr(event, name)
        if ref is not None and env.check_ref(name, ref) is None:
            raise ValidationError(f"{name} must not be empty (use None)")
    if event.severity is not None:
        env.check_severity(event.severity)
    if event.environment is not None and env.check_environment(event.environment) is None:
        raise ValidationError("environment must not be empty (use None)")
    if event.tags is not None:
        env.check_tags(event.tags)


def _check_request(p: LlmRequestCompleted | LlmRequestFailed) -> None:
    check_id("model", p.model)
    check_id("provider", p.provider)
    check_optional_id("provider_id", p.provider_id)
    for name in _REQUEST_COUNTS:
        check_count(name, getattr(p, name))
    if p.cached_input_tokens + p.cache_write_input_tokens > p.input_tokens:
        raise ValidationError("cache token parts exceed input_tokens")
    if p.pricing_status not in ("priced", "unpriced"):
        raise ValidationError(
            f"pricing_status must be priced or unpriced, got {p.pricing_status!r}"
        )
    for name in _REQUEST_MILLIS:
        check_duration(name, getattr(p, name))
    rate = check_duration("output_tokens_per_s", p.output_tokens_per_s)
    if rate is not None and rate > MAX_TOKENS_PER_S:
        raise ValidationError(f"output_tokens_per_s must be at most {MAX_TOKENS_PER_S:g}")
    if type(p.usage_missing) is not bool:
        raise ValidationError(f"usage_missing must be a bool, got {p.usage_missing!r}")
    check_optional_id("endpoint", p.endpoint)
    if isinstance(p, LlmRequestFailed):
        check_id("error_code", p.error_code)
        message = p.error_message
        if message is not None and (
            type(message) is not str or len(message) > MAX_MESSAGE_LENGTH or not _is_text(message)
        ):
            raise ValidationError(
                f"error_message must be text of at most {MAX_MESSAGE_LENGTH} characters"
            )
        check_status(p.status_code)

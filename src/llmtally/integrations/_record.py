"""Turning what an integration observed into an event, and never failing because of it.

``build_event`` makes a valid ``AnalyticsEvent`` out of whatever the wire said (odd values
are clamped or dropped, never raised); ``Counters.emit`` hands it to the store without
waiting (``record_nowait``: a full buffer drops and counts, it never delays the user's
request). ``Counters.error`` counts an exception raised inside the analytics and logs it
at a bounded rate: the 1st, 2nd, 4th, 8th, ... at WARNING, the others at DEBUG.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Final

import httpx2

from .._envelope import is_ref
from .._ids import new_event_id
from .._validation import MAX_DURATION_MS, MAX_ID_LENGTH
from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, request_payload
from ..providers import Provider, infer_provider
from ._usage import Usage
from ._watch import Observed

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = [
    "Counters",
    "build_event",
    "classify_exception",
    "clean_id",
    "resolve_provider",
]

logger = logging.getLogger("llmtally.integrations")

MAX_ERROR_MESSAGE: Final = 500
UNKNOWN_MODEL: Final = "unknown"
_UNKNOWN_PROVIDER: Final = Provider.UNKNOWN.value
_NO_USAGE: Final = Usage()

_OFFICIAL_HOSTS: Final = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
}


class Counters:
    """What an integration did: events handed over, dropped by the store, and analytics
    errors swallowed (each one logged at a bounded rate)."""

    __slots__ = ("dropped", "errors", "last_error", "name", "recorded")

    def __init__(self, name: str) -> None:
        self.name = name
        self.recorded = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None

    def error(self, where: str, exc: BaseException) -> None:
        """An exception inside the analytics (never the user's request) was swallowed."""
        self.errors += 1
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"
        n = self.errors
        level = logging.WARNING if n & (n - 1) == 0 else logging.DEBUG
        logger.log(
            level,
            "llmtally %s: analytics error #%d while %s (the request is unaffected): %r",
            self.name,
            n,
            where,
            exc,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def emit(self, store: EventStore, event: AnalyticsEvent) -> None:
        """Offer ``event`` to ``store`` without waiting; never raises."""
        try:
            if store.record_nowait(event):
                self.recorded += 1
            else:
                self.dropped += 1
        except Exception as exc:
            self.error("recording an event", exc)

    def as_dict(self) -> dict[str, int]:
        """The counters, for logs and health endpoints."""
        return {"recorded": self.recorded, "dropped": self.dropped, "errors": self.errors}


def clean_id(value: object) -> str | None:
    """An identifier fit for an event: ``None`` unless a non-empty string; cut to 256."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH:  # the common case
        return value
    if type(value) is not str or not value:
        return None
    return value[:MAX_ID_LENGTH]


def _ms(value: float | None) -> float | None:
    if type(value) is float and 0.0 <= value <= MAX_DURATION_MS:  # the common case
        return value
    if value is None or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), MAX_DURATION_MS)


def _message(value: str | None) -> str | None:
    if not value:
        return None
    return value if len(value) <= MAX_ERROR_MESSAGE else value[: MAX_ERROR_MESSAGE - 1] + "…"


@functools.lru_cache(maxsize=1024)
def _provider_of_model(model: str) -> str:
    # A router calls few distinct models: remember what their names say.
    return infer_provider(model).value


def resolve_provider(model: str, url: httpx2.URL | None = None) -> str:
    """The provider serving ``model``: inferred from its name, else the official API's
    owner when ``url`` is one (``api.openai.com``, ``api.anthropic.com``,
    ``*.openai.azure.com``), else ``"unknown"``."""
    p = _provider_of_model(model)
    if p != _UNKNOWN_PROVIDER:
        return p
    if url is not None:
        h = url.host.lower()
        if h in _OFFICIAL_HOSTS:
            return _OFFICIAL_HOSTS[h]
        if h.endswith(".openai.azure.com"):
            return Provider.AZURE.value
    return Provider.UNKNOWN.value


def classify_exception(exc: BaseException, cancelled: type[BaseException]) -> str:
    """The ``error_code`` of a call that raised: ``timeout``, ``connect_error``,
    ``client_closed`` (cancelled by the caller), ``network_error`` (another transport
    error) or ``error``."""
    if isinstance(exc, (cancelled, GeneratorExit)):
        return "client_closed"
    if isinstance(exc, httpx2.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx2.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx2.TransportError):
        return "network_error"
    return "error"


def build_event(
    store: EventStore,
    *,
    model: str | None,
    provider: str,
    usage: Usage | None,
    usage_missing: bool,
    agent_id: str | None = None,
    provider_id: str | None = None,
    duration_ms: float | None = None,
    observed: Observed | None = None,  # a stream's: its TTFT, ITL and tokens/s
    endpoint: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    status_code: int | None = None,
    event_id: str | None = None,
    correlation_id: str | None = None,
    parent_event_id: str | None = None,
) -> AnalyticsEvent:
    """A completed event, or a failed one when ``error_code`` is given; cost from the
    store's prices; a new ``event_id`` unless one is given; the store's environment.
    Values the validation would refuse are clamped or dropped."""
    m = clean_id(model) or UNKNOWN_MODEL
    u = usage or _NO_USAGE
    i, o, c, w = (
        u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_input_tokens
    )  # fmt: skip
    cost, status = store.pricing.cost(m, provider, i, o, c, w)
    p = clean_id(provider) or _UNKNOWN_PROVIDER
    if error_code is None and (observed is None or not observed.stream):
        # The common case (one call per LLM request), made with only the fields it sets:
        # CPython compiles a call with 16 or more keywords into building a dict first.
        payload: LlmRequestCompleted | LlmRequestFailed = LlmRequestCompleted(
            model=m,
            provider=p,
            provider_id=clean_id(provider_id),
            input_tokens=i,
            output_tokens=o,
            cached_input_tokens=c,
            cache_write_input_tokens=w,
            cost_nanos=cost,
            pricing_status=status,
            duration_ms=_ms(duration_ms),
            usage_missing=usage_missing,
            endpoint=clean_id(endpoint),
        )
    else:
        error = (
            None
            if error_code is None
            else (
                clean_id(error_code) or "error",
                _message(error_message),
                status_code if status_code is not None and 100 <= status_code <= 599 else None,
            )
        )
        timed = observed if observed is not None and observed.stream else None
        payload = request_payload(
            error,
            model=m,
            provider=p,
            provider_id=clean_id(provider_id),
            input_tokens=i,
            output_tokens=o,
            cached_input_tokens=c,
            cache_write_input_tokens=w,
            cost_nanos=cost,
            pricing_status=status,
            duration_ms=_ms(duration_ms),
            ttft_ms=None if timed is None else _ms(timed.ttft_ms),
            itl_mean_ms=None if timed is None else _ms(timed.itl_mean_ms),
            itl_p95_ms=None if timed is None else _ms(timed.itl_p95_ms),
            output_tokens_per_s=None if timed is None else _ms(timed.tokens_per_s),
            usage_missing=usage_missing,
            endpoint=clean_id(endpoint),
        )
    now = store.now_ms()
    return AnalyticsEvent(
        event_id=event_id or new_event_id(now),
        timestamp_ms=now,
        payload=payload,
        agent_id=clean_id(agent_id),
        correlation_id=correlation_id if correlation_id and is_ref(correlation_id) else None,
        parent_event_id=parent_event_id if parent_event_id and is_ref(parent_event_id) else None,
        environment=store.environment,
    )

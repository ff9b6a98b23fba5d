"""The event model: ``AnalyticsEvent`` with a tagged payload, and the Protocol 012 wire form.

All events are frozen msgspec Structs. ``encode_event``/``decode_event`` give a lossless
JSON round trip of the internal form; ``to_wire`` is the one function that produces the
flat wire form the syncer posts to a collector, and ``from_wire`` its inverse.

The envelope (every event): ``schema_version`` (``SCHEMA_VERSION``), ``correlation_id``
and ``parent_event_id`` (tracing a request across services), ``severity``,
``environment`` and ``tags``; limits in ``llmtally._envelope``.

Money: ``cost_nanos`` is the exact cost in nano-dollars (1 USD = 1,000,000,000);
``cost_micros`` (1 USD = 1,000,000) is derived by rounding half up, and is what the wire
and the API show.
"""

from __future__ import annotations

import binascii
import re
from typing import Annotated, Final, Literal, TypeAlias, cast

import msgspec

from ._envelope import (
    ENVIRONMENT_PATTERN,
    MAX_TAG_VALUE_LENGTH,
    MAX_TAGS,
    REF_PATTERN,
    SCHEMA_VERSION,
    SCHEMA_VERSION_PATTERN,
    TAG_KEY_PATTERN,
    TAG_VALUE_PATTERN,
    Severity,
)

__all__ = [
    "SCHEMA_VERSION",
    "SYNCED_EVENT_TYPES",
    "AnalyticsEvent",
    "AnomalyDetected",
    "BudgetThresholdReached",
    "EventPayload",
    "EventType",
    "IngestRejection",
    "IngestResponse",
    "LlmRequestCompleted",
    "LlmRequestFailed",
    "PricingStatus",
    "RouterStarted",
    "RouterStopped",
    "Severity",
    "WireBatch",
    "WireEvent",
    "decode_event",
    "decode_events",
    "decode_wire_batch",
    "decode_wire_event",
    "default_severity",
    "encode_event",
    "encode_events",
    "from_wire",
    "nanos_to_micros",
    "request_payload",
    "severity_of",
    "to_wire",
]

EventType: TypeAlias = Literal[
    "llm_request_completed",
    "llm_request_failed",
    "budget_threshold_reached",
    "router_started",
    "router_stopped",
    "anomaly_detected",
]
PricingStatus: TypeAlias = Literal["priced", "unpriced"]

SYNCED_EVENT_TYPES: Final = frozenset({"llm_request_completed", "llm_request_failed"})
"""Only request events go to the collector; lifecycle and budget events stay local."""


def nanos_to_micros(nanos: int) -> int:
    """Nano-dollars to micro-dollars, rounding half up (exact integer arithmetic)."""
    return (nanos + 500) // 1000


class _LlmRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="event_type", gc=False):
    """Fields shared by completed and failed requests.

    ``input_tokens`` is the total input, cached included; ``cached_input_tokens`` (cache
    reads) and ``cache_write_input_tokens`` are parts of it.
    """

    model: str
    provider: str
    provider_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cost_nanos: int = 0
    pricing_status: PricingStatus = "priced"
    duration_ms: float | None = None
    ttft_ms: float | None = None
    # Streaming detail (``track_stream``, the httpx2 transport) and request context.
    itl_mean_ms: float | None = None
    itl_p95_ms: float | None = None
    output_tokens_per_s: float | None = None
    usage_missing: bool = False
    endpoint: str | None = None

    @property
    def cost_micros(self) -> int:
        """The cost in micro-dollars (1 USD = 1,000,000), rounded half up."""
        return nanos_to_micros(self.cost_nanos)


class LlmRequestCompleted(_LlmRequest, frozen=True, kw_only=True, tag="llm_request_completed"):
    """An upstream LLM call that succeeded."""


class LlmRequestFailed(_LlmRequest, frozen=True, kw_only=True, tag="llm_request_failed"):
    """An upstream LLM call that failed; tokens and cost are what was consumed anyway."""

    error_code: str
    error_message: str | None = None
    status_code: int | None = None


class BudgetThresholdReached(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="budget_threshold_reached",
    tag_field="event_type",
):
    """Spend crossed ``threshold_percent`` of a budget."""

    threshold_percent: int
    current_spend_micros: int
    budget_micros: int
    budget_id: str | None = None


class RouterStarted(
    msgspec.Struct, frozen=True, kw_only=True, tag="router_started", tag_field="event_type"
):
    """The router embedding the store started listening."""

    port: int | None = None


class RouterStopped(
    msgspec.Struct, frozen=True, kw_only=True, tag="router_stopped", tag_field="event_type"
):
    """The router stopped; carries the store's totals at that moment."""

    total_requests: int
    failed_requests: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost_micros: int = 0


class AnomalyDetected(
    msgspec.Struct, frozen=True, kw_only=True, tag="anomaly_detected", tag_field="event_type"
):
    """A per-minute series left its baseline (``llmtally.analysis.anomaly``): ``metric``
    (``request_rate``, ``error_rate``, ``p95_latency_ms``, ``cost_rate`` in nano-dollars
    per minute) of the ``dim`` (``model``/``provider``) ``value``, in an episode whose
    first minute starts at ``minute_ms``. ``observed`` (per minute) is over the
    ``window_minutes`` ending with that minute; ``score`` is the test's z-score (negative
    for a drop). One event per episode."""

    dim: str
    value: str
    metric: str
    kind: Literal["spike", "drop"]
    minute_ms: int
    observed: int | float
    baseline: int | float
    score: float
    window_minutes: int = 1


EventPayload: TypeAlias = (
    LlmRequestCompleted
    | LlmRequestFailed
    | BudgetThresholdReached
    | RouterStarted
    | RouterStopped
    | AnomalyDetected
)


class AnalyticsEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recorded event: the envelope and a payload.

    ``event_id`` is a UUIDv7 string fixed at record time and never regenerated, so a retried
    sync is deduplicated by the collector. ``timestamp_ms`` is unix milliseconds.

    The envelope: ``schema_version`` (what wrote it; events stored before versioning read
    back as ``"1.0.0"``); ``correlation_id`` groups the events of one request across
    services and ``parent_event_id`` names the event (or span) this one follows from;
    ``severity`` (``None``, the usual case: the event type's default — ``error`` for a
    failure, see ``severity_of``; queries always show a level); ``environment``
    (``"production"``, ``"staging"``, …); ``tags``, a small ``str → str`` map. Limits in
    ``llmtally._envelope``; events stored before the envelope read back with none of them.
    """

    event_id: str
    timestamp_ms: int
    payload: EventPayload
    agent_id: str | None = None
    synced: bool = False
    schema_version: str = SCHEMA_VERSION
    correlation_id: str | None = None
    parent_event_id: str | None = None
    severity: Severity | None = None
    environment: str | None = None
    tags: dict[str, str] | None = None

    @property
    def event_type(self) -> EventType:
        """The payload's tag, e.g. ``"llm_request_completed"``."""
        return _TYPE_OF[type(self.payload)]


def request_payload(
    error: tuple[str, str | None, int | None] | None, **fields: object
) -> LlmRequestCompleted | LlmRequestFailed:
    """A completed request, or with ``error = (error_code, error_message, status_code)`` a
    failed one, from the shared request fields (already validated by the caller)."""
    if error is None:
        return LlmRequestCompleted(**fields)  # type: ignore[arg-type]
    code, message, status_code = error
    return LlmRequestFailed(
        error_code=code,
        error_message=message,
        status_code=status_code,
        **fields,  # type: ignore[arg-type]
    )


_TYPE_OF: Final[dict[type, EventType]] = {
    LlmRequestCompleted: "llm_request_completed",
    LlmRequestFailed: "llm_request_failed",
    BudgetThresholdReached: "budget_threshold_reached",
    RouterStarted: "router_started",
    RouterStopped: "router_stopped",
    AnomalyDetected: "anomaly_detected",
}

_DEFAULT_SEVERITY: Final[dict[type, Severity]] = {
    LlmRequestCompleted: "info",
    LlmRequestFailed: "error",
    BudgetThresholdReached: "warning",
    RouterStarted: "info",
    RouterStopped: "info",
    AnomalyDetected: "warning",
}


def default_severity(payload: EventPayload) -> Severity:
    """The severity of an event that names none: ``error`` for a failed request,
    ``warning`` for a budget threshold or an anomaly, ``info`` otherwise."""
    return _DEFAULT_SEVERITY[type(payload)]


def severity_of(event: AnalyticsEvent) -> Severity:
    """The event's severity, or its type's default when it names none."""
    return event.severity or _DEFAULT_SEVERITY[type(event.payload)]


_encoder: Final = msgspec.json.Encoder()
_event_decoder: Final = msgspec.json.Decoder(AnalyticsEvent)
_events_decoder: Final = msgspec.json.Decoder(list[AnalyticsEvent])


def encode_event(event: AnalyticsEvent) -> bytes:
    """The event as JSON; ``decode_event`` gives back an equal event."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> AnalyticsEvent:
    """Inverse of ``encode_event``. Raises ``msgspec.ValidationError`` on bad input."""
    return _event_decoder.decode(data)


def encode_events(events: list[AnalyticsEvent]) -> bytes:
    """A JSON array of events."""
    return _encoder.encode(events)


def decode_events(data: bytes | str) -> list[AnalyticsEvent]:
    """Inverse of ``encode_events``."""
    return _events_decoder.decode(data)


# --- Protocol 012 wire form -------------------------------------------------------------

_UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_LENGTH: Final = 36
# ``(?!\n)``: in Python, a bare ``$`` also matches before a final newline.
_UUID_PATTERN: Final = rf"^{_UUID}(?!\n)$"
_MAX_COUNT: Final = 2**53 - 1  # exact in every JSON reader
_Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_OptName = Annotated[str, msgspec.Meta(max_length=256)] | None
_Millis = Annotated[float, msgspec.Meta(ge=0, le=1e10)] | None
_Ref = Annotated[str, msgspec.Meta(pattern=REF_PATTERN)] | None
_TagKey = Annotated[str, msgspec.Meta(pattern=TAG_KEY_PATTERN)]
_TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_VALUE_LENGTH, pattern=TAG_VALUE_PATTERN)]
_Tags = Annotated[dict[_TagKey, _TagValue], msgspec.Meta(max_length=MAX_TAGS)] | None


class WireEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event as posted to ``POST /api/v1/analytics/events`` (Protocol 012).

    Unknown fields are ignored on decode (and so never stored). Extensions beyond
    Protocol 012 are optional: ``cost_nanos`` (exact cost; ``cost_micros`` is kept for
    compatibility), ``cache_write_input_tokens``, the streaming detail (``itl_mean_ms``,
    ``itl_p95_ms``, ``output_tokens_per_s``), ``usage_missing`` and ``endpoint``.

    The envelope (schema ``1.x``): ``schema_version`` is always sent; ``correlation_id``,
    ``parent_event_id``, ``severity`` (absent: the event type's default), ``environment``
    and ``tags`` when set. A sender from before the envelope omits them all: its events
    read as ``1.0.0``. A major version other than 1 is refused.
    """

    event_id: Annotated[str, msgspec.Meta(pattern=_UUID_PATTERN)]
    event_type: Literal["llm_request_completed", "llm_request_failed"]
    timestamp_ms: Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]
    agent_id: _OptName
    provider_id: _OptName
    provider: _Name
    model: _Name
    input_tokens: _Count
    output_tokens: _Count
    cached_input_tokens: _Count
    cost_micros: _Count
    pricing_status: PricingStatus
    duration_ms: _Millis = None
    ttft_ms: _Millis = None
    error_code: _OptName = None
    error_message: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    status_code: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None
    cost_nanos: _Count | None = None
    cache_write_input_tokens: _Count = 0
    itl_mean_ms: _Millis = None
    itl_p95_ms: _Millis = None
    output_tokens_per_s: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    usage_missing: bool = False
    endpoint: _OptName = None
    schema_version: Annotated[str, msgspec.Meta(pattern=SCHEMA_VERSION_PATTERN)] | None = None
    correlation_id: _Ref = None
    parent_event_id: _Ref = None
    severity: Severity | None = None
    environment: Annotated[str, msgspec.Meta(pattern=ENVIRONMENT_PATTERN)] | None = None
    tags: _Tags = None


class WireBatch(msgspec.Struct, frozen=True):
    """The body of a sync request: ``{"events": [...]}``."""

    events: list[WireEvent]


class IngestRejection(msgspec.Struct, frozen=True):
    """One event the collector refused, and why."""

    event_id: str | None
    error: str


class IngestResponse(msgspec.Struct, frozen=True):
    """The collector's answer to a sync request."""

    accepted: int
    duplicates: int
    rejected: list[IngestRejection] = []


def to_wire(event: AnalyticsEvent) -> WireEvent:
    """The Protocol 012 form of a request event.

    Raises ``ValueError`` for lifecycle and budget events: they are never synced.
    """
    p = event.payload
    if isinstance(p, LlmRequestFailed):
        failed = True
    elif isinstance(p, LlmRequestCompleted):
        failed = False
    else:
        raise ValueError(f"{event.event_type} events are not synced")
    # At most 15 keywords per call (see ``from_wire``): the required fields and the
    # latencies first, then the rest, then a failure's error fields (11,000 instead of
    # 22,800 instructions in one call of 30 keywords; the syncer calls it per event).
    wire = WireEvent(
        event_id=event.event_id,
        event_type="llm_request_failed" if failed else "llm_request_completed",
        timestamp_ms=event.timestamp_ms,
        agent_id=event.agent_id,
        provider_id=p.provider_id,
        provider=p.provider,
        model=p.model,
        input_tokens=p.input_tokens,
        output_tokens=p.output_tokens,
        cached_input_tokens=p.cached_input_tokens,
        cost_micros=p.cost_micros,
        pricing_status=p.pricing_status,
        duration_ms=p.duration_ms,
        ttft_ms=p.ttft_ms,
        cost_nanos=p.cost_nanos,
    )
    wire = msgspec.structs.replace(
        wire,
        cache_write_input_tokens=p.cache_write_input_tokens,
        itl_mean_ms=p.itl_mean_ms,
        itl_p95_ms=p.itl_p95_ms,
        output_tokens_per_s=p.output_tokens_per_s,
        usage_missing=p.usage_missing,
        endpoint=p.endpoint,
        schema_version=event.schema_version,
        correlation_id=event.correlation_id,
        parent_event_id=event.parent_event_id,
        severity=event.severity,
        environment=event.environment,
        tags=event.tags or None,
    )
    if failed:
        assert isinstance(p, LlmRequestFailed)
        wire = msgspec.structs.replace(
            wire, error_code=p.error_code, error_message=p.error_message, status_code=p.status_code
        )
    return wire


def from_wire(wire: WireEvent, *, synced: bool = True) -> AnalyticsEvent:
    """The event a wire record describes (used by the collector).

    A sender that omits ``cost_nanos`` has its ``cost_micros`` taken as exact.
    """
    # This runs once per ingested event. Each constructor gets at most 15 keywords:
    # CPython 3.11-3.13 compile a call with more into a dict and ``f(**dict)``, which
    # costs a msgspec Struct about 4x (10,000 vs 2,200 instructions for 16). The
    # fields left out are set afterwards, only when an event has them (rarely).
    w = wire
    cost_nanos = w.cost_nanos
    if cost_nanos is None:
        cost_nanos = w.cost_micros * 1000
    payload: EventPayload
    if w.event_type == "llm_request_failed":
        payload = LlmRequestFailed(
            model=w.model,
            provider=w.provider,
            provider_id=w.provider_id,
            input_tokens=w.input_tokens,
            output_tokens=w.output_tokens,
            cached_input_tokens=w.cached_input_tokens,
            cache_write_input_tokens=w.cache_write_input_tokens,
            cost_nanos=cost_nanos,
            pricing_status=w.pricing_status,
            duration_ms=w.duration_ms,
            ttft_ms=w.ttft_ms,
            endpoint=w.endpoint,
            error_code=w.error_code or "unknown",
            error_message=w.error_message,
            status_code=w.status_code,
        )
        if (
            w.itl_mean_ms is not None
            or w.itl_p95_ms is not None
            or w.output_tokens_per_s is not None
            or w.usage_missing
        ):
            payload = msgspec.structs.replace(
                payload,
                itl_mean_ms=w.itl_mean_ms,
                itl_p95_ms=w.itl_p95_ms,
                output_tokens_per_s=w.output_tokens_per_s,
                usage_missing=w.usage_missing,
            )
    else:
        payload = LlmRequestCompleted(
            model=w.model,
            provider=w.provider,
            provider_id=w.provider_id,
            input_tokens=w.input_tokens,
            output_tokens=w.output_tokens,
            cached_input_tokens=w.cached_input_tokens,
            cache_write_input_tokens=w.cache_write_input_tokens,
            cost_nanos=cost_nanos,
            pricing_status=w.pricing_status,
            duration_ms=w.duration_ms,
            ttft_ms=w.ttft_ms,
            itl_mean_ms=w.itl_mean_ms,
            itl_p95_ms=w.itl_p95_ms,
            output_tokens_per_s=w.output_tokens_per_s,
            endpoint=w.endpoint,
        )
        if w.usage_missing:
            payload = msgspec.structs.replace(payload, usage_missing=True)
    return AnalyticsEvent(
        event_id=w.event_id.lower(),
        timestamp_ms=w.timestamp_ms,
        payload=payload,
        agent_id=w.agent_id,
        synced=synced,
        schema_version=w.schema_version or SCHEMA_VERSION,
        correlation_id=w.correlation_id,
        parent_event_id=w.parent_event_id,
        severity=w.severity,
        environment=w.environment,
        tags=w.tags,
    )


_wire_event_decoder: Final = msgspec.json.Decoder(WireEvent)


def decode_wire_event(data: bytes | str) -> WireEvent:
    """Decode and validate one wire event. Raises ``msgspec.ValidationError``/``DecodeError``."""
    return _wire_event_decoder.decode(data)


class _WireEventAnyId(WireEvent, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``WireEvent`` whose ``event_id``, ``schema_version`` and ``environment`` are
    checked afterwards, for a whole batch at once (``_batch_valid``): msgspec runs a
    ``pattern`` through Python's ``re`` per value (~3,500 instructions for a schema
    version), where a batch has one id text to check and a few distinct versions and
    environments. Untracked by the garbage collector (``gc=False``: its fields, strings,
    numbers and a ``str -> str`` dict, hold no cycle), so a decoded batch does not count
    towards a young collection."""

    event_id: str
    schema_version: str | None = None
    environment: str | None = None


class _WireBatchAnyId(msgspec.Struct, frozen=True):
    events: list[_WireEventAnyId]


_wire_batch_decoder: Final = msgspec.json.Decoder(_WireBatchAnyId)
# msgspec's ``pattern`` is ``re.search``; the same test, once per distinct value.
_schema_version_ok: Final = re.compile(SCHEMA_VERSION_PATTERN).search
_environment_ok: Final = re.compile(ENVIRONMENT_PATTERN).search
_UUID_HYPHENS: Final = (8, 13, 18, 23)  # where ``_UUID`` has its hyphens
_UUID_HEX_BYTES: Final = 16  # the bytes of its 32 hex digits


def _ids_valid(events: list[_WireEventAnyId]) -> bool:
    """Whether every ``event_id`` matches ``_UUID_PATTERN``, tested on the ids joined,
    each followed by a newline: ``n`` ids are valid when that text is ``37 * n``
    characters, with a newline at each 37th and hyphens at a UUID's hyphen positions in
    each line, and what is left once every newline and hyphen is deleted is ``32 * n``
    hex digits. Then the text has no other newline, so the joining ones are those, and
    each id is the 36 characters of its line. (C-level passes over bytes: a regex over
    the text took ~3,100 instructions per id, these ~1,000.)"""
    n = len(events)
    line = _UUID_LENGTH + 1
    joined = "\n".join([w.event_id for w in events]) + "\n"
    if len(joined) != line * n or joined[_UUID_LENGTH::line] != "\n" * n:
        return False
    hyphens = "-" * n
    if any(joined[i::line] != hyphens for i in _UUID_HYPHENS):
        return False
    try:
        digits = binascii.a2b_hex(joined.encode("ascii").translate(None, b"-\n"))
    except (UnicodeEncodeError, binascii.Error):  # not ASCII, not hex, an odd count
        return False
    return len(digits) == _UUID_HEX_BYTES * n


def _batch_valid(events: list[_WireEventAnyId]) -> bool:
    """Whether the fields ``_WireEventAnyId`` leaves unchecked hold what ``WireEvent``
    accepts, in every event."""
    if not _ids_valid(events):
        return False
    versions = {w.schema_version for w in events}
    versions.discard(None)
    if not all(_schema_version_ok(v) for v in versions):  # type: ignore[arg-type]
        return False
    environments = {w.environment for w in events}
    environments.discard(None)
    return all(_environment_ok(e) for e in environments)  # type: ignore[arg-type]


def decode_wire_batch(data: bytes | str) -> list[WireEvent] | None:
    """Every event of a ``{"events": [...]}`` body when all of them are valid wire events,
    else ``None`` (also for a body of another shape). The same acceptance as
    ``decode_wire_event`` on each event, at a fraction of its cost for a valid batch: the
    caller falls back to that, event by event, to name what it refuses."""
    try:
        events = _wire_batch_decoder.decode(data).events
    except (msgspec.DecodeError, RecursionError):
        return None
    if not _batch_valid(events):
        return None
    return cast(list[WireEvent], events)

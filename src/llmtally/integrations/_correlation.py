"""Correlation ids from HTTP headers, for the middleware (inbound) and the transport
(outbound): ``x-correlation-id``, else the W3C ``traceparent``.

``x-correlation-id: <id>`` gives the ``correlation_id`` as it is (when it fits the
envelope's limits; otherwise it is ignored, never an error). ``traceparent:
00-<trace-id>-<parent-id>-<flags>`` gives the trace id as ``correlation_id`` and the
caller's span id as ``parent_event_id``, so a request traced with OpenTelemetry lines up
with its spans. Pure functions over raw ``(name, value)`` byte pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from .._envelope import is_ref

__all__ = ["CORRELATION_HEADER", "TRACEPARENT_HEADER", "from_headers", "parse_traceparent"]

CORRELATION_HEADER: Final = b"x-correlation-id"
TRACEPARENT_HEADER: Final = b"traceparent"

_TRACEPARENT: Final = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.ASCII
).fullmatch
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """``(trace_id, parent_id)`` of a valid W3C ``traceparent``, else ``None`` (version
    ``ff``, all-zero ids and, for version 00, trailing data are invalid)."""
    m = _TRACEPARENT(value.strip().lower())
    if m is None:
        return None
    version, trace_id, parent_id, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``(correlation_id, parent_event_id)`` from raw headers (names in any case):
    ``x-correlation-id`` wins over ``traceparent``; ``(None, None)`` when neither fits."""
    traceparent: bytes | None = None
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name == CORRELATION_HEADER:
            value = raw_value.decode("latin-1").strip()
            if is_ref(value):
                return value, None
        elif name == TRACEPARENT_HEADER and traceparent is None:
            traceparent = raw_value
    if traceparent is not None:
        ids = parse_traceparent(traceparent.decode("latin-1"))
        if ids is not None:
            return ids
    return None, None

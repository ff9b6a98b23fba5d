"""Events for storage and query tests."""

from __future__ import annotations

import random
from typing import Any

from llmtally._ids import new_event_id
from llmtally.events import (
    AnalyticsEvent,
    EventPayload,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
)

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary (UTC)
MODELS = [("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-3-5-sonnet", "anthropic")]
AGENTS = ["agent-a", "agent-b", None]
KEYS = ["key-1", None]
ENDPOINTS = ["/v1/chat/completions", "/v1/responses", None]


def request(
    timestamp_ms: int,
    *,
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    failed: bool = False,
    agent_id: str | None = "agent-a",
    provider_id: str | None = "key-1",
    endpoint: str | None = None,
    duration_ms: float | None = 100.0,
    ttft_ms: float | None = 10.0,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cost_nanos: int = 1_000,
    unpriced: bool = False,
    synced: bool = False,
    **extra: Any,
) -> AnalyticsEvent:
    common: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "provider_id": provider_id,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": input_tokens // 3,
        "cost_nanos": 0 if unpriced else cost_nanos,
        "pricing_status": "unpriced" if unpriced else "priced",
        "duration_ms": duration_ms,
        "ttft_ms": ttft_ms,
        "endpoint": endpoint,
        **extra,
    }
    payload: EventPayload
    if failed:
        payload = LlmRequestFailed(
            error_code="rate_limited", error_message="429", status_code=429, **common
        )
    else:
        payload = LlmRequestCompleted(**common)
    return AnalyticsEvent(
        event_id=new_event_id(),
        timestamp_ms=timestamp_ms,
        payload=payload,
        agent_id=agent_id,
        synced=synced,
    )


def lifecycle(timestamp_ms: int) -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=new_event_id(), timestamp_ms=timestamp_ms, payload=RouterStarted(port=8080)
    )


def random_requests(n: int, *, seed: int, start_ms: int, span_ms: int) -> list[AnalyticsEvent]:
    """``n`` varied request events with timestamps in ``[start_ms, start_ms + span_ms)``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        model, provider = rng.choice(MODELS)
        out.append(
            request(
                start_ms + rng.randrange(span_ms),
                model=model,
                provider=provider,
                failed=rng.random() < 0.1,
                agent_id=rng.choice(AGENTS),
                provider_id=rng.choice(KEYS),
                endpoint=rng.choice(ENDPOINTS),
                duration_ms=rng.lognormvariate(6, 1) if rng.random() < 0.95 else None,
                ttft_ms=rng.lognormvariate(4, 0.7) if rng.random() < 0.8 else 0.0,
                input_tokens=rng.randrange(2_000),
                output_tokens=rng.randrange(500),
                cost_nanos=rng.randrange(10**7),
                unpriced=rng.random() < 0.05,
            )
        )
    return out

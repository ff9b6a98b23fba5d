"""Properties of the public recording API, checked with hypothesis against a reference model.

Every call either records an event or raises ValidationError; after flush() the stats
equal totals computed independently here; the wire form round-trips losslessly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtally import EventStore, LlmRequestCompleted, LlmRequestFailed, ValidationError
from llmtally.events import decode_wire_event, from_wire, to_wire

MODELS = ["gpt-4o-mini", "claude-3-5-sonnet", "gemini-2.5-pro", "in-house-7b"]

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
)
counts = st.one_of(st.integers(min_value=0, max_value=10**7), anything)
millis = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6), anything)


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    failed = draw(st.booleans())
    call: dict[str, Any] = {
        "failed": failed,
        "model": draw(st.one_of(st.sampled_from(MODELS), anything)),
        "input_tokens": draw(counts),
        "output_tokens": draw(counts),
        "cached_input_tokens": draw(st.one_of(st.just(0), counts)),
        "duration_ms": draw(millis),
        "ttft_ms": draw(millis),
        "agent_id": draw(st.one_of(st.none(), st.sampled_from(["a", "b"]), anything)),
    }
    if failed:
        call["error_code"] = draw(st.one_of(st.sampled_from(["timeout", "rate_limited"]), anything))
        call["status_code"] = draw(st.one_of(st.none(), st.sampled_from([429, 500]), anything))
    return call


@dataclass
class Reference:
    requests: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    cost_nanos: int = 0
    unpriced: int = 0
    by_model: dict[str, int] = field(default_factory=dict)


async def _record(store: EventStore, call: dict[str, Any]) -> Any:
    args = {k: v for k, v in call.items() if k != "failed"}
    if call["failed"]:
        return await store.record_llm_failed(**args)
    return await store.record_llm_completed(**args)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(calls(), max_size=40))
async def test_every_call_records_or_raises_and_stats_match_a_reference(
    tmp_path: Path, batch: list[dict[str, Any]]
) -> None:
    ref = Reference()
    async with EventStore(None, capacity=1_000) as store:
        for call in batch:
            try:
                ev = await _record(store, call)
            except ValidationError:
                continue
            assert ev is not None  # the buffer never fills here: nothing is dropped
            p = ev.payload
            assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
            assert isinstance(p, LlmRequestFailed) == call["failed"]
            # What was recorded is what was passed (the cost is the store's to fill in).
            assert p.model == call["model"]
            assert p.input_tokens == call["input_tokens"]
            assert p.output_tokens == call["output_tokens"]
            ref.requests += 1
            ref.failed += call["failed"]
            ref.input_tokens += call["input_tokens"]
            ref.output_tokens += call["output_tokens"]
            ref.cached += call["cached_input_tokens"]
            expected_cost, status = store.pricing.cost(
                p.model, p.provider, p.input_tokens, p.output_tokens, p.cached_input_tokens, 0
            )
            assert p.cost_nanos == expected_cost
            assert p.pricing_status == status
            ref.cost_nanos += expected_cost
            ref.unpriced += status == "unpriced"
            ref.by_model[p.model] = ref.by_model.get(p.model, 0) + 1
            wire = msgspec.json.encode(to_wire(ev))
            assert from_wire(decode_wire_event(wire)) == msgspec.structs.replace(ev, synced=True)
        await store.flush()
        s = store.stats()
        assert s.total_requests == ref.requests
        assert s.failed_requests == ref.failed
        assert s.total_input_tokens == ref.input_tokens
        assert s.total_output_tokens == ref.output_tokens
        assert s.total_cached_input_tokens == ref.cached
        assert s.total_cost_nanos == ref.cost_nanos
        assert s.unpriced_requests == ref.unpriced
        assert {k: m.requests for k, m in s.by_model.items()} == ref.by_model
        assert store.dropped_count() == 0

"""Properties of the public recording API, against hostile input and a reference model.

- Every call either records an event or raises ``llmtally.ValidationError`` — nothing
  else — exactly when the documented rules (``values.py``'s oracle) say the input is
  invalid; a refused call changes nothing.
- Whatever is accepted is persisted without a single storage error and reads back equal
  (no "poison" event can stall the persister or the outbox).
- After ``await store.flush()`` the stats equal totals computed here, per model,
  provider, agent and API key.
- Every event's JSON form and every request event's wire form round-trip losslessly.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from llmtally import (
    AnalyticsEvent,
    Budget,
    BudgetExceeded,
    EventStore,
    LlmRequestCompleted,
    LlmRequestFailed,
    ValidationError,
)
from llmtally.events import decode_event, decode_wire_event, encode_event, from_wire, to_wire

from . import profiles
from .values import (
    AGENTS,
    KEYS,
    counts,
    millis,
    models,
    nasty_strings,
    optional_ids,
    prebuilt_events,
    valid_count,
    valid_id,
    valid_message,
    valid_ms,
    valid_optional_id,
    valid_status,
    valid_timestamp,
    weird,
)

_paths = itertools.count()


def _db(tmp_path: Path) -> Path:
    # One file per example: hypothesis runs many examples in one test's tmp_path.
    return tmp_path / f"example-{next(_paths)}.db"


# --- record_llm_completed / record_llm_failed -------------------------------------------


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    failed = draw(st.booleans())
    call: dict[str, Any] = {
        "failed": failed,
        "model": draw(models),
        "input_tokens": draw(counts),
        "output_tokens": draw(counts),
        "cached_input_tokens": draw(st.one_of(st.just(0), counts)),
        "cache_write_input_tokens": draw(st.one_of(st.just(0), counts)),
        "duration_ms": draw(millis),
        "ttft_ms": draw(millis),
        "agent_id": draw(st.one_of(st.sampled_from(AGENTS), optional_ids)),
        "provider_id": draw(st.one_of(st.sampled_from(KEYS), optional_ids)),
        "provider": draw(st.one_of(st.none(), st.sampled_from(["openai", "acme"]), weird)),
        "timestamp_ms": draw(st.one_of(st.none(), st.integers(0, 2**41), weird)),
    }
    if failed:
        call["error_code"] = draw(st.one_of(st.sampled_from(["timeout", "rate_limited"]), weird))
        call["error_message"] = draw(st.one_of(st.none(), nasty_strings, weird))
        call["status_code"] = draw(st.one_of(st.none(), st.sampled_from([429, 500]), weird))
    return call


def _valid_arguments(call: dict[str, Any]) -> bool:
    """The documented rules, restated (the cost bound is checked with the price)."""
    ok = (
        valid_id(call["model"])
        and all(
            valid_count(call[k])
            for k in (
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "cache_write_input_tokens",
            )
        )
        and valid_ms(call["duration_ms"])
        and valid_ms(call["ttft_ms"])
        and valid_optional_id(call["agent_id"])
        and valid_optional_id(call["provider_id"])
        and (call["provider"] is None or valid_id(call["provider"]))
        and valid_timestamp(call["timestamp_ms"])
    )
    if ok:
        ok = call["cached_input_tokens"] + call["cache_write_input_tokens"] <= call["input_tokens"]
    if ok and call["failed"]:
        ok = (
            valid_id(call["error_code"])
            and valid_message(call["error_message"])
            and valid_status(call["status_code"])
        )
    return ok


@dataclass
class Reference:
    """Totals computed here, from what the calls returned."""

    views: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: [0] * 8))
    )
    total: list[int] = field(default_factory=lambda: [0] * 8)

    def add(self, ev: AnalyticsEvent) -> None:
        p = ev.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        row = (
            1,
            int(isinstance(p, LlmRequestFailed)),
            p.input_tokens,
            p.output_tokens,
            p.cached_input_tokens,
            p.cache_write_input_tokens,
            p.cost_nanos,
            int(p.pricing_status == "unpriced"),
        )
        slots = [self.total]
        for view, key in (
            ("by_model", p.model),
            ("by_provider", p.provider),
            ("by_agent", ev.agent_id),
            ("by_provider_id", p.provider_id),
        ):
            if key:
                slots.append(self.views[view][key])
        for slot in slots:
            for i, value in enumerate(row):
                slot[i] += value


def _counters(m: Any) -> list[int]:
    return [
        m.requests,
        m.failed_requests,
        m.input_tokens,
        m.output_tokens,
        m.cached_input_tokens,
        m.cache_write_input_tokens,
        m.cost_nanos,
        m.unpriced_requests,
    ]


def assert_stats_match(store: EventStore, ref: Reference) -> None:
    s = store.stats()
    assert [
        s.total_requests,
        s.failed_requests,
        s.total_input_tokens,
        s.total_output_tokens,
        s.total_cached_input_tokens,
        s.total_cache_write_input_tokens,
        s.total_cost_nanos,
        s.unpriced_requests,
    ] == ref.total
    for view in ("by_model", "by_provider", "by_agent", "by_provider_id"):
        got = {k: _counters(m) for k, m in getattr(s, view).items()}
        assert got == dict(ref.views[view]), view


def assert_round_trips(ev: AnalyticsEvent) -> None:
    assert decode_event(encode_event(ev)) == ev
    if isinstance(ev.payload, LlmRequestCompleted | LlmRequestFailed):
        wire = decode_wire_event(msgspec.json.encode(to_wire(ev)))  # the collector's check
        assert from_wire(wire) == msgspec.structs.replace(ev, synced=True)


async def assert_persisted_as_recorded(store: EventStore, accepted: list[AnalyticsEvent]) -> None:
    with anyio.fail_after(5):  # a poison event would make this wait forever
        stored = await store.snapshot_events()
    s = store.stats()
    assert s.persist_errors == 0
    assert store.dropped_count() == 0
    # Lifecycle and budget events are never synced: storage keeps no flag for them.
    assert stored == [
        e if _is_request(e) else msgspec.structs.replace(e, synced=False) for e in accepted
    ]
    assert store.unsynced_count() == sum(_is_request(e) and not e.synced for e in accepted)


def _is_request(event: AnalyticsEvent) -> bool:
    return isinstance(event.payload, LlmRequestCompleted | LlmRequestFailed)


async def _call(store: EventStore, call: dict[str, Any]) -> AnalyticsEvent | None:
    args = {k: v for k, v in call.items() if k != "failed"}
    if call["failed"]:
        return await store.record_llm_failed(**args)
    return await store.record_llm_completed(**args)


@profiles.calls(40)
@given(st.lists(calls(), max_size=30))
async def test_each_call_records_or_raises_and_stats_match_a_reference(
    tmp_path: Path, batch: list[dict[str, Any]]
) -> None:
    ref = Reference()
    accepted: list[AnalyticsEvent] = []
    async with EventStore(_db(tmp_path), capacity=1_000, drain_timeout=1.0) as store:
        for call in batch:
            expected = _valid_arguments(call)
            before = len(store), store.dropped_count()
            try:
                ev = await _call(store, call)
            except ValidationError:
                assert (len(store), store.dropped_count()) == before  # nothing happened
                if expected:  # only a cost beyond the documented bound may refuse it
                    p = call.get("provider") or "openai"
                    cost, _ = store.pricing.cost(
                        call["model"], str(p), call["input_tokens"], call["output_tokens"],
                        call["cached_input_tokens"], call["cache_write_input_tokens"],
                    )  # fmt: skip
                    assert cost > 2**53 - 1, call
                continue
            assert expected, call
            assert ev is not None  # the buffer never fills here
            p = ev.payload
            assert isinstance(p, LlmRequestFailed) == call["failed"]
            assert (p.model, p.input_tokens, p.output_tokens) == (
                call["model"],
                call["input_tokens"],
                call["output_tokens"],
            )
            cost, status = store.pricing.cost(
                p.model,
                p.provider,
                p.input_tokens,
                p.output_tokens,
                p.cached_input_tokens,
                p.cache_write_input_tokens,
            )
            assert (p.cost_nanos, p.pricing_status) == (cost, status)
            if call["timestamp_ms"] is not None:
                assert ev.timestamp_ms == call["timestamp_ms"]
            assert_round_trips(ev)
            ref.add(ev)
            accepted.append(ev)
        await assert_persisted_as_recorded(store, accepted)
        assert_stats_match(store, ref)


# --- record / record_nowait with pre-built events ---------------------------------------


@profiles.calls(40)
@given(st.lists(st.tuples(prebuilt_events(), st.booleans()), max_size=25))
async def test_prebuilt_events_are_recorded_whole_or_refused(
    tmp_path: Path, items: list[tuple[tuple[Any, bool], bool]]
) -> None:
    ref = Reference()
    accepted: list[AnalyticsEvent] = []
    async with EventStore(_db(tmp_path), capacity=1_000, drain_timeout=1.0) as store:
        for (event, intact), nowait in items:
            before = len(store), store.dropped_count()
            try:
                if nowait:
                    assert store.record_nowait(event) is True
                else:
                    assert await store.record(event) is event
            except ValidationError:
                assert not intact, event
                assert (len(store), store.dropped_count()) == before
                continue
            assert isinstance(event, AnalyticsEvent)
            # Accepted: then it must survive every form it takes on the way.
            assert_round_trips(event)
            accepted.append(event)
            if isinstance(event.payload, LlmRequestCompleted | LlmRequestFailed):
                ref.add(event)
        await assert_persisted_as_recorded(store, accepted)
        assert_stats_match(store, ref)


# --- track_stream -----------------------------------------------------------------------


class UpstreamError(Exception):
    def __init__(self, message: str, status_code: object) -> None:
        super().__init__(message)
        self.status_code = status_code


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "model": draw(models),
        "agent_id": draw(optional_ids),
        "endpoint": draw(st.one_of(st.none(), st.just("/v1/chat"), weird)),
        "tokens": draw(st.lists(st.one_of(st.integers(1, 50), weird), max_size=5)),
        "usage": draw(st.one_of(st.none(), st.tuples(counts, counts, counts, counts))),
        "ticks": draw(st.lists(st.integers(-(10**9), 10**10), min_size=12, max_size=12)),
        "error": draw(st.one_of(st.none(), st.tuples(st.one_of(nasty_strings, st.text()), weird))),
    }


@profiles.calls(30)
@given(st.lists(streams(), max_size=8))
async def test_track_stream_records_whatever_the_stream_did(
    tmp_path: Path, batch: list[dict[str, Any]]
) -> None:
    ref = Reference()
    accepted: list[AnalyticsEvent] = []
    now = [10**12]
    ticks: list[int] = []

    def monotonic() -> int:  # an injected clock that may jump anywhere, even backwards
        now[0] += ticks.pop() if ticks else 1_000_000
        return now[0]

    async with EventStore(
        _db(tmp_path), capacity=1_000, monotonic=monotonic, drain_timeout=1.0
    ) as store:
        for spec in batch:
            ticks[:] = spec["ticks"]
            try:
                tracker = store.track_stream(
                    spec["model"], agent_id=spec["agent_id"], endpoint=spec["endpoint"]
                )
            except ValidationError:
                assert not (
                    valid_id(spec["model"])
                    and valid_optional_id(spec["agent_id"])
                    and valid_optional_id(spec["endpoint"])
                )
                continue
            try:
                async with tracker as s:
                    for n in spec["tokens"]:
                        # A bad n, too many tokens, or the clock went backwards: refused.
                        with contextlib.suppress(ValidationError):
                            s.token(n)
                    if spec["usage"] is not None:
                        try:
                            s.usage(*spec["usage"])
                        except ValidationError:
                            i, o, c, w = spec["usage"]
                            if all(map(valid_count, spec["usage"])) and c + w <= i:
                                cost, _ = store.pricing.cost(s.model, s.provider, i, o, c, w)
                                assert cost > 2**53 - 1, spec["usage"]
                    if spec["error"] is not None:
                        raise UpstreamError(*spec["error"])
            except UpstreamError:
                assert spec["error"] is not None
            ev = tracker.event
            assert ev is not None, spec  # every stream is recorded, failed or not
            assert isinstance(ev.payload, LlmRequestFailed) == (spec["error"] is not None)
            assert_round_trips(ev)
            ref.add(ev)
            accepted.append(ev)
        await assert_persisted_as_recorded(store, accepted)
        assert_stats_match(store, ref)


# --- budgets ----------------------------------------------------------------------------


@st.composite
def budget_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "id": draw(st.one_of(st.sampled_from(["b1", "b2"]), weird)),
        "limit_micros": draw(st.one_of(st.integers(1, 10**9), weird)),
    }
    for name, plausible in (
        ("scope", st.sampled_from(["global", "agent_id", "model", "provider_id"])),
        ("scope_value", st.one_of(st.none(), st.sampled_from(AGENTS))),
        ("period", st.sampled_from(["daily", "weekly", "monthly", "total"])),
        ("kind", st.sampled_from(["soft", "hard"])),
        ("thresholds", st.one_of(st.just((50, 100)), st.lists(weird, max_size=3).map(tuple))),
        ("timezone", st.sampled_from(["UTC", "Europe/Paris"])),
    ):
        if draw(st.booleans()):
            kw[name] = draw(st.one_of(plausible, weird))
    return kw


def _make_budget(kw: dict[str, Any]) -> Budget | None:
    try:
        return Budget(**kw)
    except ValidationError:
        return None


@profiles.calls(60)
@given(
    st.lists(budget_kwargs(), max_size=4),
    st.lists(st.tuples(weird, optional_ids, models), max_size=4),
)
async def test_the_budgets_api_raises_only_its_own_errors(
    budgets: list[dict[str, Any]], asks: list[tuple[Any, Any, Any]]
) -> None:
    made = [b for b in map(_make_budget, budgets) if b is not None]
    for b in made:  # what was accepted is what the documentation allows
        assert valid_id(b.id)
        assert type(b.limit_micros) is int and 0 < b.limit_micros <= 2**53 - 1
    async with EventStore(None, capacity=100) as store:
        for b in made:
            try:
                await store.add_budget(b)
            except ValidationError:
                assert b.id in {s.budget_id for s in store.budget_status()}
        for estimate, agent, model in asks:
            with contextlib.suppress(ValidationError, BudgetExceeded):
                await store.check_budget(agent_id=agent, model=model)
            try:
                async with store.reserve(
                    estimate_micros=estimate, agent_id=agent, model=model
                ) as r:
                    await r.record_llm_completed("gpt-4o-mini", input_tokens=10)
            except ValidationError:
                assert not (
                    valid_count(estimate) and valid_optional_id(agent) and valid_optional_id(model)
                )
            except BudgetExceeded:
                pass
        await store.flush()
        status = store.budget_status()
        assert {s.budget_id for s in status} == {b.id for b in made}
        for budget_id in {b.id for b in made}:
            assert store.remove_budget(budget_id) is True
        assert store.budget_status() == []

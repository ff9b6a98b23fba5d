"""``EventStore.track_stream``: timings, usage, failures, cancellation, the active gauge."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llmtally import (
    EventStore,
    LlmRequestCompleted,
    LlmRequestFailed,
    StoreClosedError,
    ValidationError,
)
from llmtally.analysis.sketch import RELATIVE_ACCURACY

MS = 1_000_000  # ns


class FakeMonotonic:
    """An injectable monotonic clock in ns; ``advance`` moves it."""

    def __init__(self) -> None:
        self.t = 5_000 * MS

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += int(ms * MS)


class UpstreamError(Exception):
    status_code = 503


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


async def test_a_completed_stream_records_its_timings_and_usage(
    db_path: Path, mono: FakeMonotonic
) -> None:
    async with EventStore(db_path, monotonic=mono) as store:
        async with store.track_stream(
            "gpt-4o-mini", agent_id="a7", provider_id="key-1", endpoint="/v1/chat/completions"
        ) as s:
            mono.advance(120)  # TTFT
            s.token()
            for gap in (10, 30, 20):  # ITL: 10, 30, 20 ms
                mono.advance(gap)
                s.token()
            mono.advance(5)
            s.usage(input_tokens=1_000, output_tokens=4, cached_input_tokens=200)
            assert store.streaming_stats().active_streams == 1
        assert store.streaming_stats().active_streams == 0
        ev = s.event
        assert ev is not None and isinstance(ev.payload, LlmRequestCompleted)
        p = ev.payload
        assert (ev.agent_id, p.provider_id, p.provider, p.endpoint) == (
            "a7",
            "key-1",
            "openai",
            "/v1/chat/completions",
        )
        assert (p.input_tokens, p.output_tokens, p.cached_input_tokens) == (1_000, 4, 200)
        assert p.usage_missing is False
        assert p.duration_ms == pytest.approx(185.0)
        assert p.ttft_ms == pytest.approx(120.0)
        assert p.itl_mean_ms == pytest.approx(20.0)
        assert p.itl_p95_ms == pytest.approx(20.0)  # lower rank: 0.95 * (3 - 1) → the 2nd
        assert p.output_tokens_per_s == pytest.approx(50.0)
        assert p.cost_nanos > 0 and p.pricing_status == "priced"
        stored = await store.snapshot_events()
        assert stored == [ev]  # every field round-trips through SQLite
        m = store.streaming_stats().by_model["gpt-4o-mini"]
        assert (m.started, m.completed, m.active_streams) == (1, 1, 0)
        assert m.ttft_ms.p50 == pytest.approx(120.0, rel=RELATIVE_ACCURACY)
        assert m.itl_ms.p50 == pytest.approx(20.0, rel=RELATIVE_ACCURACY)
        assert m.tokens_per_s.p50 == pytest.approx(50.0, rel=RELATIVE_ACCURACY)


async def test_without_usage_the_counted_tokens_are_the_output(mono: FakeMonotonic) -> None:
    async with EventStore(monotonic=mono) as store:
        async with store.track_stream("gpt-4o-mini") as s:
            mono.advance(50)
            s.token(3)
            mono.advance(10)
            s.token(2)
        assert s.output_tokens == 5
        p = s.event.payload if s.event else None
        assert isinstance(p, LlmRequestCompleted)
        assert (p.input_tokens, p.output_tokens, p.usage_missing) == (0, 5, True)
        assert p.cost_nanos == 5 * 600  # gpt-4o-mini output: $0.60 per million tokens
        assert p.itl_mean_ms == pytest.approx(5.0)  # 10 ms for the 2 tokens after the first


async def test_an_exception_records_a_failure_and_propagates(mono: FakeMonotonic) -> None:
    async with EventStore(monotonic=mono) as store:
        with pytest.raises(UpstreamError):
            async with store.track_stream("gpt-4o", agent_id="a1") as s:
                mono.advance(80)
                s.token()
                raise UpstreamError("upstream overloaded (req_77aa0q9)")
        ev = s.event
        assert ev is not None and isinstance(ev.payload, LlmRequestFailed)
        p = ev.payload
        assert (p.error_code, p.status_code) == ("UpstreamError", 503)
        assert p.error_message == "upstream overloaded (req_77aa0q9)"
        assert (p.output_tokens, p.usage_missing, p.ttft_ms) == (1, True, pytest.approx(80.0))
        await store.flush()
        assert store.stats().failed_requests == 1
        assert store.error_patterns().patterns[0].error_type == "UpstreamError"
        m = store.streaming_stats().by_model["gpt-4o"]
        assert (m.failed, m.completion_rate, m.active_streams) == (1, 0.0, 0)


async def test_a_failure_before_the_first_token_still_counts_as_a_stream(
    mono: FakeMonotonic,
) -> None:
    async with EventStore(monotonic=mono) as store:
        with pytest.raises(ConnectionError):
            async with store.track_stream("gpt-4o"):
                raise ConnectionError("refused")
        async with store.track_stream("gpt-4o") as s:
            mono.advance(10)
            s.first_token()  # tokens counted elsewhere: only TTFT is known
        await store.flush()
        snap = store.streaming_stats()
        assert (snap.completed, snap.failed, snap.completion_rate) == (1, 1, 0.5)
        assert snap.by_model["gpt-4o"].ttft_ms.count == 1


@pytest.mark.parametrize("overflow", ["drop_newest", "block"])
async def test_cancellation_is_recorded_and_propagates(mono: FakeMonotonic, overflow: str) -> None:
    async with EventStore(monotonic=mono, overflow=overflow) as store:  # type: ignore[arg-type]
        entered = anyio.Event()
        tracker = []
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                async with store.track_stream("claude-3-5-haiku") as s:
                    tracker.append(s)
                    mono.advance(30)
                    s.token()
                    entered.set()
                    await anyio.sleep_forever()

            tg.start_soon(stream)
            await entered.wait()
            assert store.streaming_stats().active_streams == 1
            tg.cancel_scope.cancel()
        ev = tracker[0].event
        assert ev is not None and isinstance(ev.payload, LlmRequestFailed)
        assert (ev.payload.error_code, ev.payload.error_message) == ("cancelled", None)
        await store.flush()
        snap = store.streaming_stats()
        assert (snap.cancelled, snap.active_streams, snap.completion_rate) == (1, 0, 0.0)
        assert store.stats().failed_requests == 1


async def test_bad_use_raises(mono: FakeMonotonic) -> None:
    with pytest.raises(StoreClosedError):
        EventStore().track_stream("gpt-4o")
    async with EventStore(monotonic=mono) as store:
        with pytest.raises(ValidationError):
            store.track_stream("")
        with pytest.raises(ValidationError):
            store.track_stream("gpt-4o", agent_id="x" * 300)
        tracker = store.track_stream("gpt-4o")
        with pytest.raises(ValidationError):
            tracker.token()  # before the block
        async with tracker as s:
            with pytest.raises(ValidationError):
                s.token(0)
            with pytest.raises(ValidationError):
                s.usage(10, 1, cached_input_tokens=8, cache_write_input_tokens=8)
            with pytest.raises(ValidationError):
                s.usage(-1, 1)
        with pytest.raises(ValidationError):
            s.token()  # after the block
        with pytest.raises(StoreClosedError):
            async with tracker:
                pass
        assert s.event is not None  # the bad calls did not prevent the record


async def test_a_clock_that_goes_backwards_records_without_timings(mono: FakeMonotonic) -> None:
    async with EventStore(monotonic=mono) as store:
        async with store.track_stream("gpt-4o") as s:
            mono.advance(5)
            s.token()
            mono.advance(-50)  # a broken injected clock
        p = s.event.payload if s.event else None
        assert isinstance(p, LlmRequestCompleted)
        assert (p.duration_ms, p.ttft_ms, p.output_tokens) == (None, None, 1)


async def test_many_concurrent_streams_keep_the_gauge_exact() -> None:
    async with EventStore() as store:
        inside = 0
        all_in = anyio.Event()
        release = anyio.Event()

        async def one(i: int) -> None:
            nonlocal inside
            async with store.track_stream(f"m{i % 3}") as s:
                s.token()
                inside += 1
                if inside == 50:
                    all_in.set()
                await release.wait()
                s.token(2)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
            await all_in.wait()
            snap = store.streaming_stats()
            assert snap.active_streams == 50
            assert sum(m.active_streams for m in snap.by_model.values()) == 50
            release.set()
        await store.flush()
        snap = store.streaming_stats()
        assert (snap.active_streams, snap.started, snap.completed) == (0, 50, 50)
        assert snap.output_tokens == 150

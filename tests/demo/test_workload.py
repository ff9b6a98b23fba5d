"""The demo's workload plan: deterministic, and shaped as documented."""

from __future__ import annotations

from collections import Counter

from llmtally.demo.workload import AGENTS, calls, expected_spend_nanos
from llmtally.pricing import PricingManager


def test_a_seed_fixes_the_plan_and_another_seed_changes_it() -> None:
    first = list(calls(3, 200, timeout_ms=2_000))
    assert first == list(calls(3, 200, timeout_ms=2_000))
    assert first != list(calls(4, 200, timeout_ms=2_000))


def test_the_mix_has_both_apis_streams_cache_and_about_two_percent_failures() -> None:
    plan = list(calls(7, 20_000, timeout_ms=2_000))
    scenarios = Counter(c.scenario for c in plan)
    failures = sum(n for name, n in scenarios.items() if name != "ok")
    assert 0.015 < failures / len(plan) < 0.025
    assert {"429", "500", "529", "stream-error", "drop", "timeout"} <= set(scenarios)
    assert {c.path for c in plan} == {"/v1/chat/completions", "/v1/messages"}
    assert 0.4 < sum(c.stream for c in plan) / len(plan) < 0.6
    assert all(not c.stream for c in plan if c.scenario in ("drop", "timeout"))
    assert all(c.path == "/v1/messages" for c in plan if c.scenario == "529")
    assert all(c.cached_tokens <= c.input_tokens for c in plan)
    assert 0.3 < sum(c.cached_tokens > 0 for c in plan) / len(plan) < 0.5
    assert {c.agent for c in plan} == {a.name for a in AGENTS}
    late = [c for c in plan if c.scenario == "timeout"]
    assert late and all(c.headers["x-fake-latency"].endswith(",3000.0") for c in late)


def test_expected_spend_is_exact_for_small_plans_and_scaled_for_large_ones() -> None:
    pricing = PricingManager()
    exact = expected_spend_nanos(7, 400, pricing, timeout_ms=2_000)
    by_hand = {a.name: 0 for a in AGENTS}
    for c in calls(7, 400, timeout_ms=2_000):
        if c.scenario == "ok":
            by_hand[c.agent] += pricing.cost(
                c.model, None, c.input_tokens, c.output_tokens, c.cached_tokens
            )[0]
    assert exact == by_hand
    scaled = expected_spend_nanos(7, 800, pricing, timeout_ms=2_000, sample=400)
    assert scaled == {name: 2 * nanos for name, nanos in exact.items()}

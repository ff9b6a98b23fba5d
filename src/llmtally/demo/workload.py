"""The demo's workload: which calls the simulated clients make, decided by a seed.

Pure and deterministic: ``calls(seed, n)`` yields the same ``Call`` sequence in every
process (the load generator sends them; the demo prices the same plan to size its
budgets). Two agents with their router keys; OpenAI chat and Anthropic messages models,
about half of the calls streamed (OpenAI with ``include_usage``); cached input on about
40% of calls; ~2% failures of several kinds, acted out by the fake upstream (``x-fake``):
429, 500, 529 (Anthropic), a stream broken by an error event, a connection broken
mid-body, and a timeout (an answer slower than the router waits).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec

from ..pricing import PricingManager

__all__ = [
    "AGENTS",
    "FAILURES",
    "FORWARDED_HEADERS",
    "ROUTES",
    "Agent",
    "Call",
    "Route",
    "calls",
    "expected_spend_nanos",
]


@dataclass(frozen=True, slots=True)
class Agent:
    """A client of the router: its label (``agent_id``), router key and share of calls."""

    name: str
    key: str
    share: float


@dataclass(frozen=True, slots=True)
class Route:
    """A model as the demo calls it: API, share of calls, medians of TTFT, generation
    time (after the first token), input and output tokens."""

    model: str
    api: str  # "openai" (POST /v1/chat/completions) or "anthropic" (POST /v1/messages)
    share: float
    ttft_ms: float
    generate_ms: float
    input_tokens: int
    output_tokens: int


AGENTS: Final = (
    Agent("support-bot", "sk-demo-support-bot", 0.6),
    Agent("research-agent", "sk-demo-research-agent", 0.4),
)
ROUTES: Final = (
    Route("gpt-4o-mini", "openai", 0.30, 18.0, 35.0, 900, 220),
    Route("gpt-4o", "openai", 0.12, 40.0, 80.0, 1_400, 350),
    Route("gpt-4.1-nano", "openai", 0.10, 12.0, 20.0, 600, 120),
    Route("claude-3-5-haiku-20241022", "anthropic", 0.22, 25.0, 50.0, 1_100, 260),
    Route("claude-sonnet-4-20250514", "anthropic", 0.14, 60.0, 120.0, 2_000, 500),
    Route("acme-internal-7b", "openai", 0.02, 10.0, 15.0, 500, 100),  # no price anywhere
)
FAILURES: Final = (
    # (x-fake scenario, share of calls); applicability is decided in ``_scenario``
    ("429", 0.005),
    ("500", 0.003),
    ("529", 0.003),
    ("stream-error", 0.002),
    ("drop", 0.003),
    ("timeout", 0.004),
)
FORWARDED_HEADERS: Final = ("x-fake", "x-fake-usage", "x-fake-latency")
"""Headers the router must pass upstream for the fake to act the workload out."""

_PATHS: Final = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
_PROMPT: Final = [{"role": "user", "content": "Summarise the ticket in one sentence."}]
_CACHED_SHARE: Final = 0.4
_STREAM_SHARE: Final = 0.5


class Call(NamedTuple):
    """One request of the workload, ready to send."""

    path: str
    body: bytes
    headers: dict[str, str]
    agent: str
    model: str
    stream: bool
    scenario: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int


def _body(route: Route, stream: bool, max_tokens: int) -> bytes:
    body: dict[str, object] = {"model": route.model, "max_tokens": max_tokens, "messages": _PROMPT}
    if stream:
        body["stream"] = True
        if route.api == "openai":
            body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


def _scenario(rng: random.Random, route: Route, stream: bool) -> str:
    roll = rng.random()
    for name, share in FAILURES:
        if roll < share:
            if name == "529" and route.api != "anthropic":
                return "500"  # OpenAI has no 529: an overloaded OpenAI answers 500/503
            if name == "stream-error" and not stream:
                return "429"
            if name in ("drop", "timeout") and stream:
                return "500"
            return name
        roll -= share
    return "ok"


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


def calls(seed: int, n: int, *, timeout_ms: float) -> Iterator[Call]:
    """The first ``n`` calls of the workload for ``seed``. A ``timeout`` call asks the
    fake for an answer ``timeout_ms`` + 1 s late (the router's upstream read timeout
    must be ``timeout_ms``)."""
    rng = random.Random(seed)
    agent_weights = [a.share for a in AGENTS]
    route_weights = [r.share for r in ROUTES]
    for _ in range(n):
        agent = rng.choices(AGENTS, agent_weights)[0]
        route = rng.choices(ROUTES, route_weights)[0]
        stream = rng.random() < _STREAM_SHARE
        input_tokens = max(1, int(_lognormal(rng, route.input_tokens, 0.7)))
        output_tokens = max(1, int(_lognormal(rng, route.output_tokens, 0.8)))
        cached = int(input_tokens * rng.uniform(0.3, 0.9)) if rng.random() < _CACHED_SHARE else 0
        ttft = _lognormal(rng, route.ttft_ms, 0.4)
        total = ttft + _lognormal(rng, route.generate_ms, 0.5)
        scenario = _scenario(rng, route, stream)
        if scenario == "timeout":  # acted out by lateness alone
            total = timeout_ms + 1_000.0
        headers = {
            "authorization": f"Bearer {agent.key}",
            "content-type": "application/json",
            "x-fake-usage": f"{input_tokens},{output_tokens},{cached}",
            "x-fake-latency": f"{ttft:.1f},{total:.1f}",
        }
        if scenario not in ("ok", "timeout"):
            headers["x-fake"] = scenario
        yield Call(
            _PATHS[route.api],
            _body(route, stream, output_tokens * 2),
            headers,
            agent.name,
            route.model,
            stream,
            scenario,
            input_tokens,
            output_tokens,
            cached,
        )


def expected_spend_nanos(
    seed: int, n: int, pricing: PricingManager, *, timeout_ms: float, sample: int = 5_000
) -> dict[str, int]:
    """What the calls answered in full will cost, per agent, in nano-dollars: exact for
    ``n <= sample``, else the first ``sample`` calls' cost scaled to ``n``."""
    spend = {agent.name: 0 for agent in AGENTS}
    priced = min(n, sample)
    for call in calls(seed, priced, timeout_ms=timeout_ms):
        if call.scenario == "ok":
            nanos, _ = pricing.cost(
                call.model, None, call.input_tokens, call.output_tokens, call.cached_tokens
            )
            spend[call.agent] += nanos
    return {name: nanos * n // max(priced, 1) for name, nanos in spend.items()}

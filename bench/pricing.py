"""How fast is ``PricingManager.cost``? Run: ``.venv/bin/python bench/pricing.py``.

Measures, in one run and best of several repeats: ``cost()`` calls/s for cached models on
the integer fast path (flat, tiered below and above the tier start, several tier starts),
for a cached unknown model and for a time-of-day priced model (the genai-prices
fallback), and ``genai_prices.calc_price`` calls/s for the same flat and tiered calls.
``cost`` is called positionally, as the store calls it.
"""

from __future__ import annotations

import sys
import timeit
from decimal import ROUND_HALF_UP, Decimal

import genai_prices
from genai_prices import Usage

from llmtally.pricing import PricingManager, _SlowPrice

REPEATS = 7

Call = tuple[str, str | None, int, int, int, int]


def calls_per_second(stmt: str, names: dict[str, object], number: int) -> float:
    """Best-of-``REPEATS`` rate of ``stmt`` (a string: no lambda call in the timing)."""
    best = min(timeit.Timer(stmt, globals=names).repeat(repeat=REPEATS, number=number))
    return number / best


def genai_total(model: str, provider: str | None, i: int, o: int, c: int, w: int) -> Decimal:
    usage = Usage(input_tokens=i, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o)
    return genai_prices.calc_price(usage, model, provider_id=provider).total_price


def cost_rate(pricing: PricingManager, call: Call, number: int) -> float:
    model, provider, i, o, c, w = call
    names = {"cost": pricing.cost, "m": model, "p": provider, "i": i, "o": o, "c": c, "w": w}
    return calls_per_second("cost(m, p, i, o, c, w)", names, number)


def genai_rate(call: Call, number: int) -> float:
    return calls_per_second("genai(*call)", {"genai": genai_total, "call": call}, number)


def main() -> None:
    pricing = PricingManager()
    flat: Call = ("gpt-4o-mini", "openai", 1000, 500, 200, 0)
    flat_rw: Call = ("claude-3-5-sonnet", "anthropic", 9000, 300, 2000, 1500)
    tiered_below: Call = ("claude-sonnet-4-5", "anthropic", 9000, 300, 2000, 1500)
    tiered_above: Call = ("claude-sonnet-4-5", "anthropic", 250_000, 300, 2000, 1500)
    tiered_gemini: Call = ("gemini-2.5-pro", "google", 1000, 500, 200, 0)
    multi_tier: Call = ("qwen/qwen3.7-flash", "openrouter", 40_000, 500, 200, 0)
    unknown: Call = ("no-such-model", "openai", 1000, 500, 0, 0)
    time_of_day: Call = ("deepseek-chat", "deepseek", 1000, 500, 200, 0)

    # The fast path agrees with calc_price before we time it.
    for call in (flat, flat_rw, tiered_below, tiered_above, tiered_gemini, multi_tier):
        expected = int((genai_total(*call) * 10**9).quantize(Decimal(1), ROUND_HALF_UP))
        assert pricing.cost(*call) == (expected, "priced"), call
        assert not isinstance(pricing._cache[call[:2]], _SlowPrice), call  # the fast path
    assert pricing.cost(*unknown) == (0, "unpriced")

    fast, slow = 1_000_000, 5000
    flat_rate = cost_rate(pricing, flat, fast)
    sonnet_rate = cost_rate(pricing, tiered_below, fast)
    gemini_rate = cost_rate(pricing, tiered_gemini, fast)
    genai_flat, genai_sonnet, genai_gemini = (
        genai_rate(call, slow) for call in (flat, tiered_below, tiered_gemini)
    )
    rows = [
        ("cost() gpt-4o-mini (flat)", flat_rate),
        ("cost() claude-3-5-sonnet (flat, cache r+w)", cost_rate(pricing, flat_rw, fast)),
        ("cost() claude-sonnet-4-5 (tiered, <200k)", sonnet_rate),
        ("cost() claude-sonnet-4-5 (tiered, >200k)", cost_rate(pricing, tiered_above, fast)),
        ("cost() gemini-2.5-pro (tiered)", gemini_rate),
        ("cost() qwen3.7-flash (2 tier starts)", cost_rate(pricing, multi_tier, fast)),
        ("cost() unknown model (cached miss)", cost_rate(pricing, unknown, fast)),
        ("cost() deepseek-chat (time of day: fallback)", cost_rate(pricing, time_of_day, slow)),
        ("genai_prices.calc_price gpt-4o-mini (flat)", genai_flat),
        ("genai_prices.calc_price claude-sonnet-4-5", genai_sonnet),
        ("genai_prices.calc_price gemini-2.5-pro", genai_gemini),
        ("speed-up, flat (gpt-4o-mini)", flat_rate / genai_flat),
        ("speed-up, tiered (claude-sonnet-4-5)", sonnet_rate / genai_sonnet),
        ("speed-up, tiered (gemini-2.5-pro)", gemini_rate / genai_gemini),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"Python {sys.version.split()[0]}, genai-prices {genai_prices.__version__}")
    for name, value in rows:
        unit = "x" if name.startswith("speed-up") else " calls/s"
        print(f"{name:<{width}}  {value:>14,.0f}{unit}")


if __name__ == "__main__":
    main()

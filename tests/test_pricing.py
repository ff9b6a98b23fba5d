"""PricingManager: exact nano-dollar costs, the genai-prices fallback, overrides, the cache."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from types import SimpleNamespace

import genai_prices
import pytest
from genai_prices import Usage, data_snapshot
from genai_prices.types import (
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    StartDateConstraint,
    Tier,
    TieredPrices,
    TimeOfDateConstraint,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import llmtally.pricing as pricing_module
from llmtally._exceptions import ConfigurationError, ValidationError
from llmtally.pricing import ModelPricing, PricingManager, load_overrides_file
from llmtally.providers import Provider


def half_up_nanos(usd: Decimal) -> int:
    """USD to nano-dollars, half up: an implementation independent of the module's."""
    with localcontext() as ctx:
        ctx.prec = 100
        return int((usd * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def genai_nanos(
    model: str,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
) -> int:
    """What genai_prices.calc_price charges, rounded the same way."""
    usage = Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=output_tokens,
    )
    return half_up_nanos(genai_prices.calc_price(usage, model, provider_id=provider).total_price)


@pytest.fixture(scope="module")
def pricing() -> PricingManager:
    return PricingManager()


# --- hand-computed costs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "tokens", "nanos"),
    [
        # $0.15 in, $0.60 out per MTok = 150 and 600 nanos per token.
        pytest.param("gpt-4o-mini", None, (11, 1, 0, 0), 11 * 150 + 600, id="gpt-4o-mini"),
        # 800 uncached * 150 + 200 cached * 75 + 500 out * 600 = 120000 + 15000 + 300000.
        pytest.param(
            "gpt-4o-mini", "openai", (1000, 500, 200, 0), 435_000, id="gpt-4o-mini-cached"
        ),
        # $3 in, $15 out, $0.30 cache read, $3.75 cache write per MTok. 10000 input of which
        # 2000 cache reads and 3000 cache writes, so 5000 uncached; 100 output:
        # 5000 * 3000 + 2000 * 300 + 3000 * 3750 + 100 * 15000
        # = 15_000_000 + 600_000 + 11_250_000 + 1_500_000 = 28_350_000.
        pytest.param(
            "claude-3-5-sonnet",
            "anthropic",
            (10_000, 100, 2000, 3000),
            28_350_000,
            id="claude-3-5-sonnet-cache-read-write",
        ),
        pytest.param(
            "anthropic/claude-3-5-sonnet",
            None,
            (10_000, 100, 2000, 3000),
            28_350_000,
            id="provider-prefix",
        ),
        pytest.param("gpt-4o-mini", None, (0, 0, 0, 0), 0, id="no-tokens"),
    ],
)
def test_hand_computed(
    pricing: PricingManager,
    model: str,
    provider: str | None,
    tokens: tuple[int, int, int, int],
    nanos: int,
) -> None:
    assert pricing.cost(model, provider, *tokens) == (nanos, "priced")


@pytest.mark.parametrize(
    ("tokens", "nanos"),
    [
        # $0.0005 in, $0.0015 out per MTok = 0.5 and 1.5 nanos per token.
        pytest.param((1, 0), 1, id="half-rounds-up"),
        pytest.param((0, 1), 2, id="one-and-a-half-rounds-up"),
        pytest.param((1, 1), 2, id="rounded-once-not-per-part"),  # 0.5 + 1.5, not 1 + 2
        pytest.param((3, 0), 2, id="1.5-up"),
        pytest.param((0, 3), 5, id="4.5-up"),
    ],
)
def test_rounding_is_half_up_once(tokens: tuple[int, int], nanos: int) -> None:
    pricing = PricingManager({"tiny": ModelPricing.parse("0.0005", "0.0015")})
    assert pricing.cost("tiny", None, *tokens) == (nanos, "priced")


def test_sub_pico_prices_stay_exact() -> None:
    # 1e-20 USD per MTok, i.e. 1e-17 nanos per token: 5e16 tokens are exactly half a
    # nano-dollar (rounds up to 1); one token less is just below half (rounds to 0).
    pricing = PricingManager({"dust": ModelPricing.parse("0.00000000000000000001", 0)})
    assert pricing.cost("dust", None, 10**12, 0) == (0, "priced")
    assert pricing.cost("dust", None, 5 * 10**16, 0) == (1, "priced")
    assert pricing.cost("dust", None, 5 * 10**16 - 1, 0) == (0, "priced")
    assert pricing.cost("dust", None, 15 * 10**16, 0) == (2, "priced")


# --- the fast path agrees with genai-prices ---------------------------------------------

FLAT_MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-4.1-nano", "openai"),
    ("gpt-5", "openai"),
    ("o1", "openai"),
    ("o4-mini", "openai"),
    ("gpt-3.5-turbo", "openai"),
    ("claude-3-5-sonnet", "anthropic"),
    ("claude-3-haiku", "anthropic"),
    ("claude-3-5-haiku", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("gemini-2.0-flash", "google"),
    ("gemini-2.0-flash-lite", "google"),
    ("gemini-2.5-flash", "google"),
    ("mistral-large-latest", "mistral"),
    ("codestral-latest", "mistral"),
    ("mistral-small-latest", "mistral"),  # conditional prices, the last start date passed
]


@pytest.mark.parametrize(("model", "provider"), FLAT_MODELS)
def test_listed_models_take_the_fast_path(
    pricing: PricingManager, model: str, provider: str
) -> None:
    assert pricing.price_of(model, provider) is not None


@st.composite
def token_counts(draw: st.DrawFn) -> tuple[int, int, int, int]:
    input_tokens = draw(st.integers(0, 10**9))
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output_tokens = draw(st.integers(0, 10**8))
    return input_tokens, output_tokens, cache_read, cache_write


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(FLAT_MODELS), tokens=token_counts())
def test_fast_path_matches_calc_price(
    model: tuple[str, str], tokens: tuple[int, int, int, int]
) -> None:
    name, provider = model
    pricing = PricingManager()
    expected = genai_nanos(name, provider, *tokens)
    assert pricing.cost(name, provider, *tokens) == (expected, "priced")
    assert pricing.cost(name, None, *tokens) == (expected, "priced")


def all_bundled_models() -> Iterator[tuple[str, str]]:
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            yield model.id, provider.id


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param((1_234_567, 89_012, 234_567, 111_111), id="all-kinds"),
        pytest.param((7, 3, 1, 1), id="few"),
        pytest.param((250_000, 1000, 0, 0), id="above-200k-tier"),
    ],
)
def test_every_bundled_model_matches_calc_price(tokens: tuple[int, int, int, int]) -> None:
    # Fast (flat and tiered) and fallback paths alike, over all of genai-prices' data: this proves
    # the list of price keys the fast path may ignore. Time-of-day prices are skipped, as
    # the clock may cross a boundary between the two calls.
    pricing = PricingManager()
    checked = 0
    for model, provider in all_bundled_models():
        try:
            expected = genai_nanos(model, provider, *tokens)
        except (LookupError, ValueError):
            continue
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
        if isinstance(info.prices, list) and any(
            type(c.constraint).__name__ == "TimeOfDateConstraint" for c in info.prices
        ):
            continue
        assert pricing.cost(model, provider, *tokens) == (expected, "priced"), (model, provider)
        checked += 1
    assert checked > 1000


# --- tiered prices: the integer fast path ------------------------------------------------


@pytest.mark.parametrize(
    ("input_tokens", "nanos"),
    [
        # $1.25 in / $5 out per MTok up to 128k input tokens, then $2.50 / $10 for all tokens.
        pytest.param(100_000, 100_000 * 1250 + 1000 * 5000, id="below-tier"),
        pytest.param(128_000, 128_000 * 1250 + 1000 * 5000, id="at-tier-start"),
        pytest.param(128_001, 128_001 * 2500 + 1000 * 10_000, id="just-above-tier-start"),
        pytest.param(200_000, 200_000 * 2500 + 1000 * 10_000, id="above-tier"),
    ],
)
def test_tiered_gemini_1_5_pro(pricing: PricingManager, input_tokens: int, nanos: int) -> None:
    assert pricing.price_of("gemini-1.5-pro", "google") is None  # tiered: no flat price
    assert pricing.cost("gemini-1.5-pro", "google", input_tokens, 1000) == (nanos, "priced")
    assert nanos == genai_nanos("gemini-1.5-pro", "google", input_tokens, 1000)


@pytest.mark.parametrize(
    ("tokens", "nanos"),
    [
        # claude-sonnet-4-5 up to 200k input tokens: $3 in, $15 out, $0.30 cache read,
        # $3.75 cache write per MTok; above: $6, $22.50, $0.60 and $7.50, for all tokens.
        pytest.param((200_000, 1000, 0, 0), 200_000 * 3000 + 1000 * 15_000, id="at-200k"),
        pytest.param((200_001, 1000, 0, 0), 200_001 * 6000 + 1000 * 22_500, id="above-200k"),
        # 250k input of which 50k cache reads and 20k cache writes (180k uncached: the tier
        # goes by the total input, not by the uncached part); 2000 output:
        # 180_000 * 6000 + 50_000 * 600 + 20_000 * 7500 + 2000 * 22_500
        # = 1_080_000_000 + 30_000_000 + 150_000_000 + 45_000_000 = 1_305_000_000.
        pytest.param((250_000, 2000, 50_000, 20_000), 1_305_000_000, id="above-200k-cached"),
        # The same parts below the tier: 100k input, 50k reads, 20k writes, 30k uncached.
        # 30_000 * 3000 + 50_000 * 300 + 20_000 * 3750 + 2000 * 15_000
        # = 90_000_000 + 15_000_000 + 75_000_000 + 30_000_000 = 210_000_000.
        pytest.param((100_000, 2000, 50_000, 20_000), 210_000_000, id="below-200k-cached"),
    ],
)
def test_tiered_claude_sonnet_4_5_hand_computed(
    pricing: PricingManager, tokens: tuple[int, int, int, int], nanos: int
) -> None:
    assert pricing.cost("claude-sonnet-4-5", "anthropic", *tokens) == (nanos, "priced")
    assert pricing.cost("anthropic/claude-sonnet-4-5", None, *tokens) == (nanos, "priced")
    assert nanos == genai_nanos("claude-sonnet-4-5", "anthropic", *tokens)


def is_time_of_day_priced(model: ModelInfo) -> bool:
    return isinstance(model.prices, list) and any(
        isinstance(price.constraint, TimeOfDateConstraint) for price in model.prices
    )


def tier_starts(price: ModelPrice) -> tuple[int, ...]:
    """The tier starts of the units our token counts are priced by."""
    return tuple(
        sorted(
            {
                tier.start
                for key, value in price.__dict__.items()
                if key in pricing_module._TOKEN_KEYS and isinstance(value, TieredPrices)
                for tier in value.tiers
            }
        )
    )


@functools.cache
def bundled_tiered_models() -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """(model, provider, tier starts) of every bundled model with tiered prices in force
    that genai-prices can price by its id, time-of-day prices excepted."""
    now = datetime.now(tz=UTC)
    found = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            if is_time_of_day_priced(model):
                continue
            starts = tier_starts(model.get_prices(now))
            if not starts:
                continue
            try:
                genai_nanos(model.id, provider.id, 1, 1)
            except (LookupError, ValueError):
                continue
            found.append((model.id, provider.id, starts))
    return tuple(found)


def fast_entry(pricing: PricingManager, model: str, provider: str | None) -> object:
    """The cached resolution of ``model``; fails if ``cost`` would use genai-prices' maths."""
    entry = pricing._cache[model, provider]
    assert not isinstance(entry, pricing_module._SlowPrice | pricing_module._Unpriced), entry
    return entry


def boundary_inputs(starts: tuple[int, ...]) -> list[int]:
    counts = {0, 1, 10 * starts[-1] + 7, 10**12 + 3}
    for start in starts:
        counts.update(count for count in (start - 1, start, start + 1) if count >= 0)
    return sorted(counts)


def test_every_bundled_tiered_model_matches_calc_price_at_tier_boundaries() -> None:
    pricing = PricingManager()
    models = bundled_tiered_models()
    assert len(models) > 100
    assert any(len(starts) > 1 for _, _, starts in models)  # merged tiers: _MultiTierPrice
    for model, provider, starts in models:
        for input_tokens in boundary_inputs(starts):
            for tokens in (
                (input_tokens, 1234, 0, 0),
                (input_tokens, 777, input_tokens // 3, input_tokens // 7),
            ):
                expected = genai_nanos(model, provider, *tokens)
                got = pricing.cost(model, provider, *tokens)
                assert got == (expected, "priced"), (model, provider, tokens)
        fast_entry(pricing, model, provider)
        assert pricing.price_of(model, provider) is None


@st.composite
def tiered_model_and_tokens(draw: st.DrawFn) -> tuple[str, str, tuple[int, int, int, int]]:
    model, provider, starts = draw(st.sampled_from(bundled_tiered_models()))
    near_start = st.sampled_from(starts).flatmap(lambda s: st.integers(max(0, s - 3), s + 3))
    input_tokens = draw(
        st.one_of(near_start, st.integers(0, 2 * starts[-1]), st.integers(0, 10**12))
    )
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output_tokens = draw(st.integers(0, 10**8))
    return model, provider, (input_tokens, output_tokens, cache_read, cache_write)


@settings(max_examples=300, deadline=None)
@given(case=st.deferred(tiered_model_and_tokens))
def test_tiered_fast_path_matches_calc_price(case: tuple[str, str, tuple[int, ...]]) -> None:
    model, provider, tokens = case
    pricing = PricingManager()
    assert pricing.cost(model, provider, *tokens) == (
        genai_nanos(model, provider, *tokens),
        "priced",
    )
    fast_entry(pricing, model, provider)


# Synthetic prices: up to 12 decimals (sub-nano rates, so rounding matters), plain or
# tiered per unit, tier starts shared or not, equal starts, a tier at 0, missing units.
prices_per_mtok = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(-exponent),
    st.integers(0, 10**7),
    st.integers(0, 12),
)
TIER_STARTS = (0, 1, 1000, 128_000, 200_000)
tiered_prices = st.builds(
    lambda base, tiers: TieredPrices(base, [Tier(start, price) for start, price in tiers]),
    prices_per_mtok,
    st.lists(st.tuples(st.sampled_from(TIER_STARTS), prices_per_mtok), max_size=3),
)
unit_prices = st.one_of(st.none(), prices_per_mtok, tiered_prices)


@settings(max_examples=500, deadline=None)
@given(
    units=st.fixed_dictionaries(
        dict.fromkeys(pricing_module._TOKEN_KEYS, unit_prices)
        | {"cache_write_1h_mtok": unit_prices}  # never counted: ignored
    ),
    input_tokens=st.one_of(
        st.sampled_from(TIER_STARTS).flatmap(lambda s: st.integers(max(0, s - 2), s + 2)),
        st.integers(0, 300_000),
    ),
    parts=st.tuples(st.integers(0, 300_000), st.integers(0, 300_000), st.integers(0, 10**6)),
)
def test_synthetic_tiered_prices_match_calc_price(
    units: dict[str, Decimal | TieredPrices | None],
    input_tokens: int,
    parts: tuple[int, int, int],
) -> None:
    price = ModelPrice(**{key: value for key, value in units.items() if value is not None})
    cache_read = min(parts[0], input_tokens)
    cache_write = min(parts[1], input_tokens - cache_read)
    tokens = (input_tokens, parts[2], cache_read, cache_write)
    usage = Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=parts[2],
    )
    try:
        expected = half_up_nanos(price.calc_price(usage)["total_price"])
    except ValueError:  # e.g. a cache price without an input price: the fallback says so
        assert pricing_module._fast_from_genai(price) is None
        return
    entry = pricing_module._fast_from_genai(price)
    assert entry is not None
    pricing = PricingManager()
    pricing._cache["synthetic", None] = entry
    assert pricing.cost("synthetic", None, *tokens) == (expected, "priced")
    assert (pricing.price_of("synthetic") is None) == bool(tier_starts(price))


def test_tiered_rounding_is_half_up_once() -> None:
    # 0.0005 / 0.0015 USD per MTok (0.5 and 1.5 nanos per token) up to 10 input tokens,
    # then 0.0025 / 0.0035 (2.5 and 3.5 nanos per token).
    price = ModelPrice(
        input_mtok=TieredPrices(Decimal("0.0005"), [Tier(10, Decimal("0.0025"))]),
        output_mtok=TieredPrices(Decimal("0.0015"), [Tier(10, Decimal("0.0035"))]),
    )
    pricing = PricingManager()
    pricing._cache["tiny", None] = pricing_module._fast_from_genai(price)  # type: ignore[assignment]
    assert pricing.cost("tiny", None, 1, 1) == (2, "priced")  # 0.5 + 1.5
    assert pricing.cost("tiny", None, 10, 1) == (7, "priced")  # 5 + 1.5 = 6.5
    assert pricing.cost("tiny", None, 11, 1) == (31, "priced")  # 27.5 + 3.5
    assert pricing.cost("tiny", None, 11, 0) == (28, "priced")  # 27.5


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        pytest.param("gemini-2.5-pro", "google", id="one-tier-start"),
        pytest.param("qwen/qwen3.7-flash", "openrouter", id="two-tier-starts"),
    ],
)
@pytest.mark.parametrize(
    ("tokens", "capped"),
    [
        pytest.param((1000, 10, 1500, 700), (1000, 10, 1000, 0), id="below"),
        pytest.param((300_000, 10, 250_000, 70_000), (300_000, 10, 250_000, 50_000), id="above"),
    ],
)
def test_inconsistent_counts_on_a_tiered_model(
    pricing: PricingManager,
    model: str,
    provider: str,
    tokens: tuple[int, int, int, int],
    capped: tuple[int, int, int, int],
) -> None:
    assert pricing.cost(model, provider, *tokens) == (
        genai_nanos(model, provider, *capped),
        "priced",
    )
    fast_entry(pricing, model, provider)


# --- the fallback: prices that depend on the clock or on the request -------------------


def test_time_of_day_prices_go_through_the_fallback(pricing: PricingManager) -> None:
    # deepseek-chat: off-peak and peak prices by UTC time of day.
    assert pricing.price_of("deepseek-chat") is None
    off_peak = 1_000_000 * 135 + 1_000_000 * 550
    peak = 1_000_000 * 270 + 1_000_000 * 1100
    assert pricing.cost("deepseek-chat", None, 1_000_000, 1_000_000) in {
        (off_peak, "priced"),
        (peak, "priced"),
    }
    assert isinstance(pricing._cache["deepseek-chat", None], pricing_module._SlowPrice)


def test_future_start_date_is_not_settled() -> None:
    today = datetime.now(tz=UTC).date()
    tiered = ModelPrice(input_mtok=TieredPrices(Decimal(1), [Tier(1000, Decimal(2))]))
    later = ModelPrice(input_mtok=Decimal(3))
    model = SimpleNamespace(
        prices=[
            ConditionalPrice(prices=tiered),
            ConditionalPrice(StartDateConstraint(today + timedelta(days=2)), prices=later),
        ]
    )
    now = datetime.now(tz=UTC)
    assert pricing_module._price_from_now_on(model, now) is None  # type: ignore[arg-type]
    model.prices[-1] = ConditionalPrice(StartDateConstraint(today), prices=later)
    assert pricing_module._price_from_now_on(model, now) is later  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "price",
    [
        pytest.param(ModelPrice(input_mtok=Decimal(1), requests_kcount=Decimal(1)), id="fee"),
        pytest.param(
            ModelPrice(
                input_mtok=TieredPrices(Decimal(1), [Tier(1, Decimal(2))]),
                requests_kcount=Decimal(1),
            ),
            id="tiered-and-fee",
        ),
    ],
)
def test_per_request_fees_take_the_fallback(price: ModelPrice) -> None:
    assert pricing_module._fast_from_genai(price) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(TieredPrices(Decimal(1), [Tier(-1, Decimal(2))]), id="negative-start"),
        pytest.param(TieredPrices(Decimal(1), [Tier(1.5, Decimal(2))]), id="float-start"),  # type: ignore[arg-type]
        pytest.param(TieredPrices(Decimal(1), [Tier(True, Decimal(2))]), id="bool-start"),
        pytest.param(TieredPrices(Decimal(1), [Tier(1, Decimal(-2))]), id="negative-price"),
        pytest.param(TieredPrices(Decimal("NaN"), [Tier(1, Decimal(2))]), id="nan-base"),
        pytest.param(TieredPrices(Decimal(1), [Tier(1, 2.0)]), id="float-price"),  # type: ignore[arg-type]
    ],
)
def test_tiered_prices_genai_prices_refuses_take_the_fallback(value: TieredPrices) -> None:
    # The fallback then says "unpriced", as genai-prices raises ValueError for them.
    price = ModelPrice(input_mtok=value, output_mtok=Decimal(1))
    assert pricing_module._fast_from_genai(price) is None
    with pytest.raises(ValueError, match="Invalid price"):
        price.calc_price(Usage(input_tokens=10, output_tokens=1))


def test_settled_conditional_price_is_flat(pricing: PricingManager) -> None:
    _, info = data_snapshot.get_snapshot().find_provider_model(
        "mistral-small-latest", None, "mistral", None
    )
    assert isinstance(info.prices, list)
    latest = info.prices[-1].prices
    assert pricing.price_of("mistral-small-latest", "mistral") == ModelPricing(
        latest.input_mtok, latest.output_mtok, latest.cache_read_mtok
    )


def test_usd_to_nanos_rounds_half_up() -> None:
    to_nanos = pricing_module._usd_to_nanos
    assert to_nanos(Decimal("0.0000000005")) == 1
    assert to_nanos(Decimal("0.00000000049999999999")) == 0
    assert to_nanos(Decimal("0.0000000025")) == 3
    assert to_nanos(Decimal("1.23")) == 1_230_000_000
    assert to_nanos(Decimal(0)) == 0


# --- inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "nanos"),
    [
        # gpt-4o-mini: 150 in, 75 cached per token; no cache-write price, so input rate.
        # 100 input, 80 cache reads, 50 cache writes: writes are capped at 20, none uncached.
        pytest.param((100, 0, 80, 50), 80 * 75 + 20 * 150, id="writes-capped"),
        # 100 input, 300 cache reads: reads capped at 100.
        pytest.param((100, 0, 300, 0), 100 * 75, id="reads-capped"),
        pytest.param((0, 10, 5, 5), 10 * 600, id="no-input"),
    ],
)
def test_inconsistent_cache_counts_are_capped(
    pricing: PricingManager, tokens: tuple[int, int, int, int], nanos: int
) -> None:
    assert pricing.cost("gpt-4o-mini", "openai", *tokens) == (nanos, "priced")


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param((-1, 0, 0, 0), id="negative-input"),
        pytest.param((1, -1, 0, 0), id="negative-output"),
        pytest.param((1, 1, -1, 0), id="negative-cache-read"),
        pytest.param((1, 1, 0, -1), id="negative-cache-write"),
        pytest.param((1.5, 1, 0, 0), id="float-input"),
        pytest.param((1, "2", 0, 0), id="str-output"),
    ],
)
def test_bad_token_counts_raise(pricing: PricingManager, tokens: tuple[object, ...]) -> None:
    with pytest.raises(ValidationError):
        pricing.cost("gpt-4o-mini", None, *tokens)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        pytest.param("no-such-model", None, id="unknown"),
        pytest.param("no-such-model", "openai", id="unknown-at-known-provider"),
        pytest.param("openai/no-such-model", None, id="unknown-with-prefix"),
        pytest.param("", None, id="empty"),
    ],
)
def test_unknown_model_is_unpriced(
    pricing: PricingManager, model: str, provider: str | None
) -> None:
    assert pricing.cost(model, provider, 1000, 1000) == (0, "unpriced")
    assert pricing.price_of(model, provider) is None


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        pytest.param("gpt-4o-mini", Provider.OPENAI, id="provider-enum"),
        pytest.param("gpt-4o-mini", "unknown", id="provider-unknown"),
        pytest.param("gpt-4o-mini", "my-proxy", id="provider-not-in-genai-prices"),
        pytest.param("gpt-4o-mini", "anthropic", id="wrong-provider-retried-without"),
        pytest.param("gpt-4o-mini", "azure", id="azure-falls-back-to-openai"),
        pytest.param("openai/gpt-4o-mini", None, id="prefix"),
        pytest.param("OpenAI/GPT-4o-mini", None, id="prefix-any-case"),
        pytest.param("openai/gpt-4o-mini", "openai", id="prefix-and-provider"),
    ],
)
def test_provider_spellings(pricing: PricingManager, model: str, provider: str | None) -> None:
    assert pricing.cost(model, provider, 1000, 500, 200) == (435_000, "priced")


def test_provider_aliases_reach_genai_prices(pricing: PricingManager) -> None:
    expected = genai_nanos("gemini-2.0-flash", "google", 1000, 100)
    assert pricing.cost("gemini-2.0-flash", "vertex_ai", 1000, 100) == (expected, "priced")
    assert pricing.cost("vertex_ai/gemini-2.0-flash", None, 1000, 100) == (expected, "priced")


# --- overrides --------------------------------------------------------------------------


def test_override_wins_over_bundled_data() -> None:
    pricing = PricingManager({"GPT-4o-mini": ModelPricing.parse("1", 2, "0.5", "1.25")})
    # 1000 in: 200 cached, 100 written, 700 uncached; 10 out.
    expected = 700 * 1000 + 200 * 500 + 100 * 1250 + 10 * 2000
    for name in ("gpt-4o-mini", "GPT-4O-MINI", "openai/gpt-4o-mini"):
        assert pricing.cost(name, "openai", 1000, 10, 200, 100) == (expected, "priced")
    assert pricing.price_of("gpt-4o-mini") == ModelPricing(
        Decimal(1), Decimal(2), Decimal("0.5"), Decimal("1.25")
    )
    assert pricing.cost("gpt-4o", "openai", 1000, 0) == (2_500_000, "priced")  # not overridden


def test_override_cache_prices_default_to_input() -> None:
    pricing = PricingManager({"house-model": ModelPricing.parse("2", "4")})
    assert pricing.cost("house-model", None, 100, 10, 30, 20) == (100 * 2000 + 10 * 4000, "priced")


def test_model_pricing_converts_and_validates() -> None:
    assert ModelPricing(1, "2.50") == ModelPricing(Decimal(1), Decimal("2.50"))  # type: ignore[arg-type]
    assert ModelPricing.parse("1.5", 3).input_per_mtok == Decimal("1.5")


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((1.5, "2"), id="float"),
        pytest.param(("1", 2.0), id="float-output"),
        pytest.param(("1", "2", 0.5), id="float-cached"),
        pytest.param(("-1", "2"), id="negative"),
        pytest.param(("1", "2", None, "-0.1"), id="negative-write"),
        pytest.param(("abc", "2"), id="not-a-number"),
        pytest.param(("NaN", "2"), id="nan"),
        pytest.param(("Infinity", "2"), id="infinite"),
        pytest.param((True, "2"), id="bool"),
        pytest.param(([1], "2"), id="list"),
    ],
)
def test_bad_prices_raise(values: tuple[object, ...]) -> None:
    with pytest.raises(ConfigurationError):
        ModelPricing.parse(*values)  # type: ignore[arg-type]


def test_float_error_says_to_quote() -> None:
    with pytest.raises(ConfigurationError, match="quote"):
        ModelPricing.parse(1.5, "2")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"m": {"input_per_mtok": "1"}}, id="not-a-model-pricing"),
        pytest.param({"": ModelPricing.parse(1, 1)}, id="empty-name"),
        pytest.param(
            {"M": ModelPricing.parse(1, 1), "m": ModelPricing.parse(2, 2)}, id="case-duplicate"
        ),
    ],
)
def test_bad_override_mapping_raises(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PricingManager(overrides)  # type: ignore[arg-type]


TOML = """
[models."my-model"]
input_per_mtok = "1.50"
output_per_mtok = "2"
cached_input_per_mtok = "0.75"

[models.GPT-4o-mini]
input_per_mtok = 1
output_per_mtok = 3
cache_write_per_mtok = "1.25"
"""

JSON = {
    "models": {
        "my-model": {
            "input_per_mtok": "1.50",
            "output_per_mtok": "2",
            "cached_input_per_mtok": "0.75",
        },
        "GPT-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 3, "cache_write_per_mtok": "1.25"},
    }
}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("prices.toml", TOML, id="toml"),
        pytest.param("prices.json", json.dumps(JSON), id="json"),
        pytest.param("PRICES.TOML", TOML, id="toml-upper-case-suffix"),
    ],
)
def test_overrides_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert load_overrides_file(path) == {
        "my-model": ModelPricing.parse("1.50", "2", "0.75"),
        "gpt-4o-mini": ModelPricing.parse(1, 3, None, "1.25"),
    }
    pricing = PricingManager(overrides_file=str(path))
    # my-model: 1000 in of which 400 cached, 100 out: 600*1500 + 400*750 + 100*2000.
    assert pricing.cost("my-model", None, 1000, 100, 400) == (1_400_000, "priced")
    # gpt-4o-mini overridden: 100 in of which 40 written, 10 out: 60*1000 + 40*1250 + 10*3000.
    assert pricing.cost("gpt-4o-mini", "openai", 100, 10, 0, 40) == (140_000, "priced")


def test_mapping_overrides_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TOML, encoding="utf-8")
    pricing = PricingManager({"my-model": ModelPricing.parse(10, 10)}, overrides_file=path)
    assert pricing.cost("my-model", None, 1, 0) == (10_000, "priced")
    assert pricing.cost("gpt-4o-mini", None, 1, 0) == (1000, "priced")  # from the file


def test_empty_models_table_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("[models]\n", encoding="utf-8")
    assert load_overrides_file(path) == {}


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        pytest.param("p.toml", None, "cannot read", id="missing-file"),
        pytest.param("p.yaml", "models: {}", "toml or .json", id="bad-extension"),
        pytest.param("p.toml", "[models\n", "not valid TOML", id="bad-toml"),
        pytest.param("p.json", '{"models": ', "not valid JSON", id="bad-json"),
        pytest.param("p.toml", b"\xff\xfe", "cannot read", id="not-utf8"),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = 1.5\noutput_per_mtok = "2"\n',
            "quote",
            id="toml-float",
        ),
        pytest.param(
            "p.json",
            '{"models": {"m": {"input_per_mtok": 1.5, "output_per_mtok": "2"}}}',
            "quote",
            id="json-float",
        ),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = "1"\noutput_per_mtok = "2"\ncached = "1"\n',
            "unknown field",
            id="unknown-field",
        ),
        pytest.param(
            "p.toml", '[models.m]\ninput_per_mtok = "1"\n', "missing output_per_mtok", id="missing"
        ),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = "-1"\noutput_per_mtok = "2"\n',
            "non-negative",
            id="negative",
        ),
        pytest.param(
            "p.toml",
            "[models.m]\ninput_per_mtok = -1\noutput_per_mtok = 2\n",
            "non-negative",
            id="negative-int",
        ),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = "cheap"\noutput_per_mtok = "2"\n',
            "not a number",
            id="not-a-number",
        ),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = true\noutput_per_mtok = "2"\n',
            "expected a price",
            id="bool",
        ),
        pytest.param(
            "p.toml",
            '[models.m]\ninput_per_mtok = "1"\noutput_per_mtok = "2"\n'
            '[models.M]\ninput_per_mtok = "1"\noutput_per_mtok = "2"\n',
            "twice",
            id="case-duplicate",
        ),
        pytest.param("p.toml", 'model = "x"\n', "top-level", id="no-models-table"),
        pytest.param("p.toml", "[models]\n[other]\n", "top-level", id="extra-table"),
        pytest.param("p.json", "[]", "top-level", id="json-array"),
        pytest.param("p.json", '{"models": []}', "table of model names", id="models-not-table"),
        pytest.param("p.toml", 'models = {m = "1"}\n', "table of prices", id="model-not-table"),
    ],
)
def test_bad_overrides_file(
    tmp_path: Path, name: str, text: str | bytes | None, problem: str
) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        PricingManager(overrides_file=path)
    assert str(path) in str(info.value)
    assert problem.lower() in str(info.value).lower()


# --- the cache --------------------------------------------------------------------------


def test_resolutions_are_cached_misses_included(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []
    find_model = pricing_module._find_model

    def counting(model_ref: str, provider_id: str | None) -> object:
        lookups.append(model_ref)
        return find_model(model_ref, provider_id)

    monkeypatch.setattr(pricing_module, "_find_model", counting)
    pricing = PricingManager()
    for _ in range(3):
        pricing.cost("gpt-4o-mini", "openai", 10, 10)
        pricing.cost("no-such-model", None, 10, 10)
        pricing.price_of("no-such-model")
    assert lookups.count("gpt-4o-mini") == 1
    assert lookups.count("no-such-model") == 1
    assert pricing.cached_entries == 2


def test_cache_is_bounded() -> None:
    pricing = PricingManager(cache_size=16)
    for i in range(200):
        assert pricing.cost(f"hostile-{i}", None, 1, 1) == (0, "unpriced")
        assert pricing.cached_entries <= 16
    assert pricing.cached_entries == 16
    assert pricing.cost("gpt-4o-mini", None, 11, 1) == (2250, "priced")  # still works


def test_default_cache_size() -> None:
    assert PricingManager().cache_size == 4096


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_bad_cache_size(size: object) -> None:
    with pytest.raises(ConfigurationError):
        PricingManager(cache_size=size)  # type: ignore[arg-type]


def test_unknown_names_do_not_grow_genai_prices_caches() -> None:
    # genai-prices' own lookup caches (DataSnapshot._lookup_cache, _provider_misses) are
    # unbounded; PricingManager looks models up without them.
    snapshot = data_snapshot.get_snapshot()
    before = (len(snapshot._lookup_cache), len(snapshot._provider_misses))
    pricing = PricingManager()
    for i in range(50):
        pricing.cost(f"gpt-4o-mini-{i}-x", "openai", 1, 1)
        pricing.cost(f"unseen-{i}", None, 1, 1)
    assert (len(snapshot._lookup_cache), len(snapshot._provider_misses)) == before


def test_ignorable_price_keys_never_count_for_token_usage() -> None:
    # The fast path ignores these price keys. Each must be a unit of genai-prices' registry
    # that is neither a per-request fee nor an ancestor of the four token counts we report
    # (an ancestor would need its own count; the others get a count of 0).
    from genai_prices.units import _get_registry

    registry = _get_registry()
    reported = [registry.units[key] for key in ("input_tokens", "output_tokens")]
    reported += [registry.units[key] for key in ("cache_read_tokens", "cache_write_tokens")]
    for key in pricing_module._ZERO_COUNT_KEYS:
        unit = registry.unit_for_price_key(key)
        assert unit.usage_key != "requests"
        assert not any(unit.dimensions.items() <= r.dimensions.items() for r in reported), key

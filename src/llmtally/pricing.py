"""Exact cost of an LLM call: genai-prices' bundled price data, overridden per model.

``PricingManager.cost`` is on the recording hot path. The first call for a ``(model,
provider)`` pair resolves its price once into integers and caches the outcome (a bounded
cache, misses included); later calls for a flat or tiered model are an integer comparison
and a few integer multiplications. Only prices that depend on the clock (time of day, a
start date still to come), per-request fees and price keys we do not know go through
genai-prices' ``Decimal`` maths on every call.

Money is never a float: prices are ``Decimal`` USD per million tokens, costs are integer
nano-dollars (1 USD = 1,000,000,000). A cost is the exact rational sum of its parts,
rounded half up once to a whole nano-dollar.

Token convention (OpenAI, OTel and genai-prices): ``input_tokens`` is the total input;
``cached_input_tokens`` (cache reads) and ``cache_write_input_tokens`` are parts of it,
each priced at its own rate; the rest is priced at the input rate.

Tiered prices (genai-prices' ``TieredPrices``) are "cliff" tiers: the total input picks
the tier (the last one whose start it exceeds), and that tier's price applies to every
token of that unit, not just to those above the start.

Nothing here touches the network: genai-prices' ``UpdatePrices`` is never started. If the
embedding application installs a newer genai-prices snapshot itself, names resolved after
that use it.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, TypeAlias, TypeGuard

from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, StartDateConstraint, TieredPrices
from genai_prices.types import Provider as GenaiProvider

from llmtally._exceptions import ConfigurationError, ValidationError
from llmtally._price_overrides import ModelPricing, add_override, load_overrides_file
from llmtally.events import PricingStatus
from llmtally.providers import split_model_ref

__all__ = ["ModelPricing", "PricingManager", "load_overrides_file"]

_NANOS_PER_USD: Final = 1_000_000_000
_DEFAULT_CACHE_SIZE: Final = 4096

# genai-prices price keys our four token counts are priced by.
_TOKEN_KEYS: Final = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
# Price keys whose usage count is always 0 for a usage that reports only input, output,
# cache-read and cache-write tokens: modality/TTL/tool/reasoning refinements of those
# counts, and non-token units. They cannot change the cost, so a model that has them is
# still flat. Any key not listed (``requests_kcount``: a per-request fee; keys added by a
# later genai-prices) sends the model to the exact genai-prices fallback instead.
_ZERO_COUNT_KEYS: Final = frozenset(
    {
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        *(
            key
            for modality in ("text", "audio", "image", "video")
            for key in (
                f"input_{modality}_mtok",
                f"output_{modality}_mtok",
                f"cache_{modality}_read_mtok",
                f"cache_{modality}_write_mtok",
                f"cache_{modality}_write_5m_mtok",
                f"cache_{modality}_write_1h_mtok",
                f"input_{modality}_tool_mtok",
                f"output_{modality}_reasoning_mtok",
                f"output_{modality}_citation_mtok",
            )
        ),
        "input_tool_mtok",
        "output_reasoning_mtok",
        "output_citation_mtok",
        "input_mchars",
        "input_text_messages_kcount",
        "audio_hours",
        "input_audio_hours",
        "output_audio_hours",
        "input_gpixels",
        "input_document_kpages",
        "input_annotated_document_kpages",
        "rerank_searches_kcount",
        "web_searches_kcount",
        "social_searches_kcount",
        "storage_searches_kcount",
        "code_executions_kcount",
    }
)


# --- resolved prices --------------------------------------------------------------------

# Integer rates for (uncached input, output, cache read, cache write) tokens: USD per
# million tokens times 10**d, with d >= 3 decimals (at d == 3 a rate is nano-dollars per
# token). Every cost is round_half_up(sum(tokens * rate) / divisor), divisor = 10**(d-3).
_Rates: TypeAlias = tuple[int, int, int, int]

# The hot path's entry: ``(start, below, above, half, divisor, pricing)``. The rates are
# ``above`` if the total input exceeds ``start``, else ``below``; ``half == divisor // 2``.
# A flat price has ``above is below`` and its ``ModelPricing``; a price with one tier
# start (all units alike, or flat where not tiered) has ``pricing=None``. A plain tuple,
# as CPython unpacks it faster than a NamedTuple; no other kind of entry is a tuple.
_FastPrice: TypeAlias = tuple[int, _Rates, _Rates, int, int, ModelPricing | None]


@dataclass(frozen=True, slots=True)
class _MultiTierPrice:
    """Integer rates for a price with several tier starts (rare).

    ``rates[k]`` applies when ``k`` starts are below the total input, i.e. at index
    ``bisect_left(starts, input_tokens)``.
    """

    starts: tuple[int, ...]
    rates: tuple[_Rates, ...]
    half: int
    divisor: int


@dataclass(frozen=True, slots=True)
class _SlowPrice:
    """A price that depends on the clock or has a fee we do not model: genai-prices' maths."""

    provider: GenaiProvider
    model: ModelInfo


class _Unpriced:
    __slots__ = ()


_UNPRICED: Final = _Unpriced()
_Entry: TypeAlias = _FastPrice | _MultiTierPrice | _SlowPrice | _Unpriced


def _decimals(price: Decimal) -> int:
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: checked by to_price / _is_price
    return max(0, -exponent)


def _scale(rows: Sequence[Sequence[Decimal]]) -> tuple[list[_Rates], int]:
    """Rows of four Decimal prices as integer ``_Rates`` with one shared divisor."""
    digits = max(3, *(_decimals(price) for row in rows for price in row))
    scale = 10**digits
    scaled: list[_Rates] = []
    for row in rows:
        # Exact: the denominator of a Decimal with at most ``digits`` decimals divides scale.
        ints = [num * scale // den for num, den in (price.as_integer_ratio() for price in row)]
        scaled.append((ints[0], ints[1], ints[2], ints[3]))
    return scaled, 10 ** (digits - 3)


def _flat(pricing: ModelPricing) -> _FastPrice:
    base = pricing.input_per_mtok
    read, write = pricing.cached_input_per_mtok, pricing.cache_write_per_mtok
    row = (
        base,
        pricing.output_per_mtok,
        base if read is None else read,
        base if write is None else write,
    )
    (rates,), divisor = _scale([row])
    return (0, rates, rates, divisor // 2, divisor, pricing)


def _price_from_now_on(model: ModelInfo, now: datetime) -> ModelPrice | None:
    """The price genai-prices will use for every request from ``now`` on, if it is fixed.

    A list of conditional prices is fixed when the last one (which wins whenever active)
    has no constraint or a start date already passed: start dates only ever become
    active. Time-of-day prices and prices starting in the future are not fixed.
    """
    prices = model.prices
    if isinstance(prices, ModelPrice):
        return prices
    if not prices:
        return None
    constraint = prices[-1].constraint
    if constraint is None or (
        isinstance(constraint, StartDateConstraint) and constraint.active(now)
    ):
        return prices[-1].prices
    return None


def _is_price(value: object) -> TypeGuard[Decimal]:
    return isinstance(value, Decimal) and value.is_finite() and value >= 0


def _is_tiered_price(value: TieredPrices) -> bool:
    """genai-prices' own check of tiered prices: int starts >= 0 in order, valid prices."""
    previous = 0
    for tier in value.tiers:
        start = tier.start
        if type(start) is not int or start < previous or not _is_price(tier.price):
            return False
        previous = start
    return _is_price(value.base)


def _price_at(value: Decimal | TieredPrices, total_input_tokens: int) -> Decimal:
    """genai-prices' ``calc_unit_price`` rule: the last tier whose start is exceeded wins."""
    if isinstance(value, TieredPrices):
        for tier in reversed(value.tiers):
            if total_input_tokens > tier.start:
                return tier.price
        return value.base
    return value


def _fast_from_genai(price: ModelPrice) -> _FastPrice | _MultiTierPrice | None:
    """Integer rates for a genai-prices price of plain or tiered token prices; else ``None``.

    The tier starts of all units, merged, cut the total input into intervals in each of
    which every unit's price is constant; one row of rates per interval, so ``cost``
    picks the tier once per call for all units alike.
    """
    units: dict[str, Decimal | TieredPrices] = {}
    for key, value in price.__dict__.items():
        if value is None or key.startswith("_") or key in _ZERO_COUNT_KEYS:
            continue
        if key not in _TOKEN_KEYS:
            return None  # a per-request fee, or a key we do not know
        if not (_is_tiered_price(value) if isinstance(value, TieredPrices) else _is_price(value)):
            return None  # genai-prices refuses it; let the fallback say so
        units[key] = value
    try:  # the rules genai-prices checks on each call, e.g. a cache price needs an input one
        price.calc_price(Usage(input_tokens=3, cache_read_tokens=1, cache_write_tokens=1))
    except (LookupError, ValueError):
        return None  # genai-prices refuses it; let the fallback say so

    starts = sorted(
        {
            tier.start
            for value in units.values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )
    zero = Decimal(0)
    if not starts:  # plain prices (or tiered ones without tiers): flat
        at = {key: _price_at(value, 0) for key, value in units.items()}
        return _flat(
            ModelPricing(
                at.get("input_mtok", zero),
                at.get("output_mtok", zero),
                at.get("cache_read_mtok"),
                at.get("cache_write_mtok"),
            )
        )
    rows: list[tuple[Decimal, Decimal, Decimal, Decimal]] = []
    for total_input in (0, *(start + 1 for start in starts)):  # each interval's first count
        at = {key: _price_at(value, total_input) for key, value in units.items()}
        base = at.get("input_mtok", zero)
        rows.append(
            (
                base,
                at.get("output_mtok", zero),
                at.get("cache_read_mtok", base),  # no cache prices: the input's, same tier
                at.get("cache_write_mtok", base),
            )
        )
    rates, divisor = _scale(rows)
    if len(starts) == 1:
        return (starts[0], rates[0], rates[1], divisor // 2, divisor, None)
    return _MultiTierPrice(tuple(starts), tuple(rates), divisor // 2, divisor)


def _find_model(model_ref: str, provider_id: str | None) -> tuple[GenaiProvider, ModelInfo] | None:
    """genai-prices' provider and model lookup, without its unbounded lookup caches.

    Same rules as ``DataSnapshot.find_provider_model``: a known provider id searches that
    provider (and its fallback providers); otherwise the first provider whose model
    pattern matches is searched.
    """
    snapshot = data_snapshot.get_snapshot()
    providers = snapshot.providers
    ref = model_ref.lower()
    if provider_id is not None:
        provider = data_snapshot.find_provider_by_id(providers, provider_id)
        if provider is None:
            return None
        model = provider.find_model(ref, all_providers=providers)
        return None if model is None else (provider, model)
    for provider in providers:
        if provider.model_match is not None and provider.model_match.is_match(ref):
            model = provider.find_model(ref, all_providers=providers)
            return None if model is None else (provider, model)
    return None


def _usd_to_nanos(usd: Decimal) -> int:
    """Exact USD to nano-dollars, rounding half up (``usd`` is non-negative)."""
    numerator, denominator = usd.as_integer_ratio()
    return (2 * numerator * _NANOS_PER_USD + denominator) // (2 * denominator)


# --- the manager ------------------------------------------------------------------------


class PricingManager:
    """Prices LLM calls from genai-prices' bundled data, with per-model overrides.

    ``overrides`` maps model names to ``ModelPricing``; ``overrides_file`` is a TOML or
    JSON file of the same (see ``load_overrides_file``). Both win over the bundled data,
    and ``overrides`` wins over the file. Names match case-insensitively, as given or
    after stripping a known ``provider/`` prefix (``anthropic/claude-3-5-sonnet``).

    The constructor does the slow parts: it reads ``overrides_file`` (the only I/O) and
    loads genai-prices' bundled data (about 0.4 s, once per process), so construct it off
    the event loop. Raises ``ConfigurationError`` for a bad file or bad overrides.

    Resolutions are cached per ``(model, provider)``, unknown models included, in a FIFO
    cache of at most ``cache_size`` entries, so arbitrary model names cannot grow memory.
    Prices are those in force when a name is resolved; a long-lived manager keeps them.
    """

    __slots__ = ("_cache", "_cache_size", "_overrides")

    def __init__(
        self,
        overrides: Mapping[str, ModelPricing] | None = None,
        *,
        overrides_file: str | os.PathLike[str] | None = None,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigurationError(f"cache_size must be a positive int, got {cache_size!r}")
        merged = {} if overrides_file is None else load_overrides_file(overrides_file)
        if overrides is not None:
            given: dict[str, ModelPricing] = {}
            for name, pricing in overrides.items():
                add_override(given, name, pricing, where="overrides")
            merged.update(given)
        self._overrides: Final = merged
        self._cache_size: Final = cache_size
        self._cache: dict[tuple[str, str | None], _Entry] = {}
        data_snapshot.get_snapshot()  # load the bundled data now, not on the first cost()

    @property
    def cache_size(self) -> int:
        """The most ``(model, provider)`` resolutions kept."""
        return self._cache_size

    @property
    def cached_entries(self) -> int:
        """How many ``(model, provider)`` resolutions are cached now (``<= cache_size``)."""
        return len(self._cache)

    def cost(
        self,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
    ) -> tuple[int, PricingStatus]:
        """The exact cost of one call in nano-dollars, and whether the model was priced.

        ``input_tokens`` is the total input; ``cached_input_tokens`` (cache reads) and
        ``cache_write_input_tokens`` are parts of it. If the parts add up to more than the
        total, they are capped so that ``input_tokens`` is priced once: cache reads first
        (at most ``input_tokens``), then cache writes (at most what is left), and no
        uncached input. A tiered price's tier is chosen by ``input_tokens``.

        ``provider`` (an llmtally ``Provider`` or any genai-prices provider id or alias;
        ``None`` or ``"unknown"`` to infer it from the model) selects whose price list to
        search first; if the model is not there, all providers are searched.

        Returns ``(0, "unpriced")`` for a model with no price. Never raises for an unknown
        model; raises ``ValidationError`` for a negative or non-integer token count.
        """
        try:
            uncached = input_tokens - cached_input_tokens - cache_write_input_tokens
            # Ints only (``|`` refuses floats); all >= 0 and parts within the total.
            consistent = (
                uncached | output_tokens | cached_input_tokens | cache_write_input_tokens
            ) >= 0
        except TypeError:
            raise ValidationError("token counts must be integers") from None
        if not consistent:
            return self._cost_capped(
                model,
                provider,
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cache_write_input_tokens,
            )
        try:
            entry = self._cache[model, provider]
        except KeyError:
            entry = self._resolve(model, provider)
        if type(entry) is tuple:
            start, below, above, half, divisor, _ = entry
            price_in, price_out, price_read, price_write = above if input_tokens > start else below
            nanos = (
                uncached * price_in
                + output_tokens * price_out
                + cached_input_tokens * price_read
                + cache_write_input_tokens * price_write
            )
            if divisor == 1:  # whole nano-dollars per token: nothing to round
                return nanos, "priced"
            return (nanos + half) // divisor, "priced"
        return self._cost_other(
            entry, input_tokens, output_tokens, cached_input_tokens, cache_write_input_tokens
        )

    def price_of(self, model: str, provider: str | None = None) -> ModelPricing | None:
        """The flat price ``cost`` uses for ``model``; ``None`` if unpriced, tiered or timed."""
        entry = self._cache.get((model, provider))
        if entry is None:
            entry = self._resolve(model, provider)
        return entry[5] if type(entry) is tuple else None

    def _cost_capped(
        self,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
    ) -> tuple[int, PricingStatus]:
        """Negative counts raise; cache counts beyond the total input are capped."""
        if input_tokens < 0 or output_tokens < 0 or cache_read < 0 or cache_write < 0:
            raise ValidationError("token counts must not be negative")
        cache_read = min(cache_read, input_tokens)
        cache_write = min(cache_write, input_tokens - cache_read)
        entry = self._cache.get((model, provider))
        if entry is None:
            entry = self._resolve(model, provider)
        return self._cost_other(entry, input_tokens, output_tokens, cache_read, cache_write)

    def _cost_other(
        self,
        entry: _Entry,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
    ) -> tuple[int, PricingStatus]:
        """Every entry off the hot path; the cache counts are within ``input_tokens``."""
        if isinstance(entry, _Unpriced):
            return 0, "unpriced"
        if isinstance(entry, _SlowPrice):
            usage = Usage(
                input_tokens=input_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                output_tokens=output_tokens,
            )
            try:
                calculation = entry.model.calc_price(usage, entry.provider)
            except (LookupError, ValueError):  # data genai-prices itself cannot price
                return 0, "unpriced"
            return _usd_to_nanos(calculation.total_price), "priced"
        if isinstance(entry, _MultiTierPrice):
            rates = entry.rates[bisect_left(entry.starts, input_tokens)]
            half, divisor = entry.half, entry.divisor
        else:
            start, below, above, half, divisor, _ = entry
            rates = above if input_tokens > start else below
        price_in, price_out, price_read, price_write = rates
        nanos = (
            (input_tokens - cache_read - cache_write) * price_in
            + output_tokens * price_out
            + cache_read * price_read
            + cache_write * price_write
            + half
        ) // divisor
        return nanos, "priced"

    def _resolve(self, model: str, provider: str | None) -> _Entry:
        """Find the price of ``model`` and cache the outcome (evicting the oldest if full)."""
        entry = self._lookup(model, provider)
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Another thread may have changed the cache meanwhile; it stays bounded anyway.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del cache[next(iter(cache))]
        cache[(model, provider)] = entry
        return entry

    def _lookup(self, model: str, provider: str | None) -> _Entry:
        prefix, bare = split_model_ref(model)
        overrides = self._overrides
        if overrides:
            pricing = overrides.get(model.strip().lower()) or overrides.get(bare.strip().lower())
            if pricing is not None:
                return _flat(pricing)

        explicit = provider.strip().lower() if provider else None
        provider_ids: list[str | None] = []
        for candidate in (explicit, prefix):
            if candidate and candidate != "unknown" and candidate not in provider_ids:
                provider_ids.append(candidate)
        provider_ids.append(None)
        refs = (model, bare) if prefix is not None else (model,)
        found = next(
            (
                hit
                for provider_id in provider_ids
                for ref in refs
                if (hit := _find_model(ref, provider_id)) is not None
            ),
            None,
        )
        if found is None:
            return _UNPRICED
        genai_provider, model_info = found
        price = _price_from_now_on(model_info, datetime.now(tz=UTC))
        fast = None if price is None else _fast_from_genai(price)
        return fast if fast is not None else _SlowPrice(genai_provider, model_info)

"""Per-model price overrides: ``ModelPricing`` and the override-file parser.

Re-exported by ``llmtally.pricing``, their public home; nothing here is on the hot path.
"""

from __future__ import annotations

import json
import os
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

import msgspec

from llmtally._exceptions import ConfigurationError

__all__ = ["ModelPricing", "add_override", "load_overrides_file", "to_price"]


def to_price(value: object, where: str) -> Decimal:
    """``value`` as a finite, non-negative ``Decimal``; raises ``ConfigurationError``."""
    if isinstance(value, float):
        raise ConfigurationError(
            f"{where}: {value!r} is a float; money is never a float: "
            f'quote the number, e.g. "{value}", or give an integer'
        )
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ConfigurationError(
            f"{where}: expected a price as a string, an int or a Decimal, "
            f"got {type(value).__name__}"
        )
    try:
        price = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(f"{where}: {value!r} is not a finite, non-negative price")
    return price


class ModelPricing(msgspec.Struct, frozen=True):
    """One model's prices in USD per million tokens.

    ``cached_input_per_mtok`` prices cache reads and ``cache_write_per_mtok`` cache
    writes; ``None`` means "same as ``input_per_mtok``". The constructor also accepts
    ``int`` and numeric ``str`` values (stored as ``Decimal``); ``ModelPricing.parse`` is
    the typed way to do that. Raises ``ConfigurationError`` for a float, a negative or
    non-finite price, or anything else that is not a number.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None or name in ("input_per_mtok", "output_per_mtok"):
                msgspec.structs.force_setattr(self, name, to_price(value, name))

    @classmethod
    def parse(
        cls,
        input_per_mtok: Decimal | int | str,
        output_per_mtok: Decimal | int | str,
        cached_input_per_mtok: Decimal | int | str | None = None,
        cache_write_per_mtok: Decimal | int | str | None = None,
    ) -> ModelPricing:
        """From strings (``"1.50"``), ints or Decimals; a float raises ``ConfigurationError``."""
        return cls(
            input_per_mtok,  # type: ignore[arg-type]  # __post_init__ converts
            output_per_mtok,  # type: ignore[arg-type]
            cached_input_per_mtok,  # type: ignore[arg-type]
            cache_write_per_mtok,  # type: ignore[arg-type]
        )


ModelPricing.__module__ = "llmtally.pricing"  # its public home: reprs, docs and pickles

_FIELDS: Final = ModelPricing.__struct_fields__
_REQUIRED: Final = ("input_per_mtok", "output_per_mtok")


def load_overrides_file(path: str | os.PathLike[str]) -> dict[str, ModelPricing]:
    """Price overrides from a ``.toml`` or ``.json`` file, keyed by lower-cased model name.

    The shape, in TOML (JSON: ``{"models": {"my-model": {...}}}``)::

        [models."my-model"]
        input_per_mtok = "1.50"     # USD per million tokens: a string or an int
        output_per_mtok = "2"
        cached_input_per_mtok = "0.75"   # optional, default: the input price
        cache_write_per_mtok = "1.875"   # optional, default: the input price

    Raises ``ConfigurationError`` naming the file and the problem: missing or unreadable
    file, unknown extension, syntax error, unknown or missing field, a float (quote it), a
    negative price, two names that differ only in case.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigurationError(f"{file}: price overrides must be a .toml or .json file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{file}: cannot read price overrides: {exc}") from exc
    try:
        document: object = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigurationError(f"{file}: not valid {suffix[1:].upper()}: {exc}") from exc

    if not isinstance(document, dict) or set(document) != {"models"}:
        raise ConfigurationError(f'{file}: expected exactly one top-level table, "models"')
    models = document["models"]
    if not isinstance(models, dict):
        raise ConfigurationError(f'{file}: "models" must be a table of model names')
    overrides: dict[str, ModelPricing] = {}
    for name, fields in models.items():
        where = f"{file}: models.{json.dumps(name)}"
        if not isinstance(fields, dict):
            raise ConfigurationError(f"{where}: expected a table of prices")
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}"
            )
        missing = [field for field in _REQUIRED if field not in fields]
        if missing:
            raise ConfigurationError(f"{where}: missing {', '.join(missing)}")
        prices = {field: to_price(value, f"{where}.{field}") for field, value in fields.items()}
        add_override(overrides, name, ModelPricing(**prices), where=str(file))
    return overrides


def add_override(
    overrides: dict[str, ModelPricing], name: object, pricing: object, *, where: str
) -> None:
    """Add ``pricing`` for ``name`` (stripped, lower-cased); ``ConfigurationError`` if bad."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where}: model name {name!r} must be a non-empty string")
    if not isinstance(pricing, ModelPricing):
        raise ConfigurationError(
            f"{where}: the price of {name!r} must be a ModelPricing, got {type(pricing).__name__}"
        )
    key = name.strip().lower()
    if key in overrides:
        raise ConfigurationError(f"{where}: {name!r} is given twice (names are case-insensitive)")
    overrides[key] = pricing

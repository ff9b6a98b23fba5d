"""The collector's budgets file (``llmtally serve --budgets FILE``): TOML or JSON.

TOML (``.toml``)::

    [[budgets]]
    id = "support-daily"          # unique
    limit_usd = "25.00"           # or limit_micros = 25000000; never a float
    scope = "agent_id"            # global (default) | agent_id | provider_id | model
    scope_value = "support-bot"   # required unless scope = "global"
    period = "daily"              # daily | weekly | monthly (default) | total
    timezone = "Europe/Paris"     # where days, weeks and months begin (default UTC)
    thresholds = [50, 80, 100]    # percentages reported as reached (the default)
    kind = "soft"                 # soft (default) | hard: routers enforce, a collector reports

JSON (``.json``): ``{"budgets": [{"id": "support-daily", "limit_usd": "25.00", ...}]}``.
The fields are ``Budget``'s (``llmtally.analysis.budgets``), plus ``limit_usd`` as an
exact decimal string or integer. Unknown fields are errors (a typo must not pass
silently), and so are duplicate ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from .._exceptions import ConfigurationError, ValidationError
from ..analysis.budgets import Budget, BudgetKind, BudgetPeriod, BudgetScope, usd_to_micros

__all__ = ["MAX_BUDGETS", "dump_budgets", "load_budgets", "parse_budgets"]

MAX_BUDGETS: Final = 1_000
"""The most budgets a file may hold: each one is a query per refresh."""

_Unset = msgspec.UnsetType


class _Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Unset fields take ``Budget``'s defaults: they are not repeated here.
    id: str
    limit_usd: str | int | _Unset = msgspec.UNSET
    limit_micros: int | _Unset = msgspec.UNSET
    scope: BudgetScope | _Unset = msgspec.UNSET
    scope_value: str | _Unset | None = msgspec.UNSET
    period: BudgetPeriod | _Unset = msgspec.UNSET
    kind: BudgetKind | _Unset = msgspec.UNSET
    thresholds: list[int] | _Unset = msgspec.UNSET
    timezone: str | _Unset = msgspec.UNSET


class _File(msgspec.Struct, forbid_unknown_fields=True):
    budgets: list[_Entry]


def _budget(entry: _Entry) -> Budget:
    if (entry.limit_usd is msgspec.UNSET) == (entry.limit_micros is msgspec.UNSET):
        raise ValidationError("give exactly one of limit_usd and limit_micros")
    if isinstance(entry.limit_usd, str | int):
        limit = usd_to_micros(entry.limit_usd)
    else:
        assert isinstance(entry.limit_micros, int)
        limit = entry.limit_micros
    if entry.scope_value == "":
        raise ValidationError("scope_value must not be empty")
    fields = {
        name: getattr(entry, name)
        for name in ("scope", "scope_value", "period", "kind", "timezone")
        if getattr(entry, name) is not msgspec.UNSET
    }
    if not isinstance(entry.thresholds, _Unset):
        fields["thresholds"] = tuple(entry.thresholds)
    return Budget(id=entry.id, limit_micros=limit, **fields)


def dump_budgets(budgets: Sequence[Budget]) -> bytes:
    """``budgets`` as a JSON budgets file (``parse_budgets(dump_budgets(b), "json") == b``)."""
    return msgspec.json.format(msgspec.json.encode({"budgets": list(budgets)})) + b"\n"


def parse_budgets(data: bytes, fmt: str) -> list[Budget]:
    """The budgets in ``data``, a ``"toml"`` or ``"json"`` document (see the module doc).

    Raises ``ConfigurationError`` with a one-line reason naming the entry or the field.
    """
    try:
        if fmt == "toml":
            parsed = msgspec.toml.decode(data, type=_File)
        elif fmt == "json":
            parsed = msgspec.json.decode(data, type=_File)
        else:
            raise ConfigurationError(f"unknown budgets format {fmt!r}: toml or json")
    except msgspec.DecodeError as exc:  # ValidationError included: it names the field
        raise ConfigurationError(str(exc)) from None
    if len(parsed.budgets) > MAX_BUDGETS:
        raise ConfigurationError(f"at most {MAX_BUDGETS} budgets")
    budgets: list[Budget] = []
    seen: set[str] = set()
    for i, entry in enumerate(parsed.budgets):
        where = f"budgets[{i}] ({entry.id!r})"
        if entry.id in seen:
            raise ConfigurationError(f"{where}: duplicate id")
        seen.add(entry.id)
        try:
            budgets.append(_budget(entry))
        except ValidationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return budgets


def load_budgets(path: Path) -> list[Budget]:
    """The budgets of the file at ``path`` (``.toml`` or ``.json``), read synchronously:
    call it at startup, before the event loop. Raises ``ConfigurationError`` with one
    line naming the file and what is wrong."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("toml", "json"):
        raise ConfigurationError(f"budgets file {path}: must end in .toml or .json")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"budgets file {path}: {exc.strerror or exc}") from None
    try:
        return parse_budgets(data, suffix)
    except ConfigurationError as exc:
        raise ConfigurationError(f"budgets file {path}: {exc}") from None

"""Numbers as the dashboard shows them: dollars, counts, milliseconds. Pure."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["format_count", "format_ms", "format_usd", "format_usd_tick"]


def format_usd(micros: int | float) -> str:
    """Micro-dollars as dollars, with enough decimals to show small amounts (exact:
    decimal arithmetic, never binary floats)."""
    d = Decimal(int(micros)) / 1_000_000
    places = 2 if abs(d) >= 10 else 4 if abs(d) >= Decimal("0.01") or d == 0 else 6
    return f"${d:,.{places}f}"


def format_usd_tick(micros: int | float) -> str:
    """Micro-dollars short, for axis ticks and chart tooltips: no trailing zeros
    (``$0.0025``, ``$1.5``, ``$1,250``), and cents from $10 on (``$12.35``)."""
    d = Decimal(round(micros)) / 1_000_000
    if d == d.to_integral_value():
        return f"${d:,.0f}"
    return f"${d:,.2f}" if abs(d) >= 10 else f"${d.normalize():f}"


def format_count(n: int | float) -> str:
    """An integer with thousands separators (``1,234``)."""
    return f"{int(n):,}"


def format_ms(ms: float | None) -> str:
    """Milliseconds as ``812 ms`` or ``1.24 s``; ``–`` for no value."""
    if ms is None:
        return "–"
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"

"""Statistics as rich tables, for ``llmtally stats`` and ``llmtally demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .analysis.stats import ComputedStats, ModelStats
from .pipeline.aggregate import format_usd

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["quantity", "render", "stats_table", "wide_console"]

_COLUMNS = (
    "requests",
    "failed",
    "input tok",
    "cached",
    "output tok",
    "cost $",
    "p50 ms",
    "p95 ms",
    "p50 TTFT",
    "p95 TTFT",
)


def quantity(value: float | None) -> str:
    """A latency for a table: whole milliseconds, ``-`` when unknown."""
    return "-" if value is None else f"{value:,.0f}"


def wide_console() -> Console:
    """A console at least 130 columns wide (a pipe or a narrow terminal stays readable)."""
    from rich.console import Console

    console = Console()
    return console if console.width >= 130 else Console(width=130)


def stats_table(title: str, rows: dict[str, ModelStats]) -> Table:
    """One row per key, most expensive first; ``*`` marks a cost with unpriced calls."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("")
    for col in _COLUMNS:
        t.add_column(col, justify="right")
    for name, m in sorted(rows.items(), key=lambda kv: (-kv[1].cost_nanos, kv[0])):
        cost = format_usd(m.cost_nanos) + (" *" if m.unpriced_requests else "")
        t.add_row(
            name,
            f"{m.requests:,}",
            f"{m.failed_requests:,}",
            f"{m.input_tokens:,}",
            f"{m.cached_input_tokens:,}",
            f"{m.output_tokens:,}",
            cost,
            quantity(m.duration_ms.p50),
            quantity(m.duration_ms.p95),
            quantity(m.ttft_ms.p50),
            quantity(m.ttft_ms.p95),
        )
    return t


def render(stats: ComputedStats, db: Path | None = None) -> None:
    """Print ``stats`` as tables on the terminal."""
    console = wide_console()
    s = stats
    console.print(
        f"[bold]{s.total_requests:,}[/] requests, [bold]{s.failed_requests:,}[/] failed, "
        f"cost [bold]${format_usd(s.total_cost_nanos)}[/], tokens in {s.total_input_tokens:,} "
        f"(cached {s.total_cached_input_tokens:,}) / out {s.total_output_tokens:,}"
    )
    if s.unpriced_requests:
        console.print(
            f"[yellow]{s.unpriced_requests:,} requests used models without a price "
            f"(marked *): the total cost is incomplete[/]"
        )
    console.print(stats_table("By model", s.by_model))
    console.print(stats_table("By provider", s.by_provider))
    console.print(stats_table("By agent", s.by_agent))
    console.print(stats_table("By API key", s.by_provider_id))
    console.print(
        f"dropped events: {s.dropped_events} · unsynced: {s.unsynced_events:,} · "
        f"write errors: {s.persist_errors}" + (f" · database: {db}" if db else "")
    )

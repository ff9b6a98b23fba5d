"""The demo on the terminal: a live progress bar and table while it runs, then the summary.

The live view reads the router's store directly (``stats()``, ``budget_status()``): what
the analytics see, as they see it. On a terminal it redraws a few times a second; on a
pipe it shows nothing until the summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn
from rich.table import Table

from ..analysis.stats import ComputedStats
from ..pipeline.aggregate import format_usd
from ..tables import quantity, stats_table
from .summary import SLO_TARGET, DemoSummary
from .system import View

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["LiveView", "print_summary"]


def _usd(micros: int) -> str:
    return f"${format_usd(micros * 1000)}"


class LiveView(View):
    """Progress and per-model figures, redrawn by ``refresh()`` inside ``live()``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._store: EventStore | None = None
        self._live: Live | None = None
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "[progress.percentage]{task.percentage:>3.0f}%",
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID | None = None

    @contextmanager
    def live(self, store: EventStore, total: int) -> Iterator[None]:
        if not self.console.is_terminal:
            yield
            return
        self._store = store
        self._task = self._progress.add_task("requests", total=total)
        with Live(console=self.console, auto_refresh=False, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                self.refresh()
                self._live = None

    def refresh(self) -> None:
        if self._live is None or self._store is None or self._task is None:
            return
        stats = self._store.stats()
        self._progress.update(self._task, completed=stats.total_requests)
        self._live.update(
            Group(self._progress, self._table(stats), self._footer(stats)), refresh=True
        )

    def _table(self, s: ComputedStats) -> Table:
        t = Table(header_style="bold", title_justify="left")
        for col in ("model", "requests", "failed", "cost", "p50 ms", "p95 ms", "p50 TTFT"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for name, m in sorted(s.by_model.items()):
            t.add_row(
                name,
                f"{m.requests:,}",
                f"{m.failed_requests:,}",
                _usd(m.cost_micros) + (" *" if m.unpriced_requests else ""),
                quantity(m.duration_ms.p50),
                quantity(m.duration_ms.p95),
                quantity(m.ttft_ms.p50),
            )
        return t

    def _footer(self, s: ComputedStats) -> str:
        assert self._store is not None
        budgets = " · ".join(
            f"{b.scope_value} {b.percent_used:.0f}% of {_usd(b.limit_micros)}"
            + (f" [yellow](≥{b.thresholds_reached[-1]}%)[/]" if b.thresholds_reached else "")
            for b in self._store.budget_status()
        )
        synced = s.sync.get("accepted", 0) + s.sync.get("duplicates", 0)
        return (
            f"cost {_usd(s.total_cost_micros)} · synced {synced:,} · pending "
            f"{s.unsynced_events:,} · dropped {s.dropped_events} · budgets: {budgets}"
        )


def _errors_table(summary: DemoSummary) -> Table:
    t = Table(title="Top error patterns", title_justify="left", header_style="bold")
    for col in ("count", "error", "status", "models", "example"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for p in summary.error_patterns:
        t.add_row(
            f"{p.count:,}",
            p.error_type,
            ", ".join(str(code) for code in sorted(p.status_codes)) or "-",
            ", ".join(sorted(p.models)[:3]) + (" …" if len(p.models) > 3 else ""),
            p.sample_message[:60],
        )
    return t


def _budgets_table(summary: DemoSummary) -> Table:
    t = Table(title="Budgets (per agent, daily)", title_justify="left", header_style="bold")
    for col in ("agent", "kind", "limit", "spent", "used", "thresholds crossed"):
        t.add_column(col, justify="left" if col in ("agent", "kind") else "right")
    for b in summary.budgets:
        crossed = ", ".join(f"{pct}%" for pct in b.thresholds_reached) or "none"
        t.add_row(
            b.scope_value or "all",
            b.kind,
            _usd(b.limit_micros),
            _usd(b.spent_micros),
            f"{b.percent_used:.1f}%",
            crossed,
        )
    return t


def print_summary(console: Console, summary: DemoSummary) -> None:
    """The summary of a run: totals, per model, errors, SLO, budgets, sync, dashboard."""
    s, c, sync, slo = summary.stats, summary.clients, summary.sync, summary.slo
    failed_pct = 100 * s.failed_requests / s.total_requests if s.total_requests else 0.0
    console.print(
        f"\n[bold]{s.total_requests:,}[/] requests in {summary.elapsed_s:.1f}s "
        f"({summary.requests_per_s:,.0f}/s), [bold]{s.failed_requests:,}[/] failed "
        f"({failed_pct:.1f}%), cost [bold]{_usd(s.total_cost_micros)}[/], tokens in "
        f"{s.total_input_tokens:,} (cached {s.total_cached_input_tokens:,}) / out "
        f"{s.total_output_tokens:,}"
    )
    if c.stopped_early:
        console.print("[yellow]stopped early: the run was interrupted or reached --duration[/]")
    if s.unpriced_requests:
        console.print(
            f"[yellow]{s.unpriced_requests:,} requests used a model without a price "
            f"(marked *): the total cost is incomplete[/]"
        )
    console.print(stats_table("By model", s.by_model))
    console.print(stats_table("By agent", s.by_agent))
    console.print(_errors_table(summary))
    state = "[red]VIOLATED[/]" if slo.violated else "[green]met[/]"
    alerts = [name for name in ("fast_burn", "slow_burn", "ticket") if getattr(slo, name, False)]
    console.print(
        f"SLO {SLO_TARGET:.0%} success over 1 h: {slo.success_rate:.2%} → {state}, burn rate "
        f"{slo.burn_rate:.1f}×, error budget used {slo.error_budget_consumed:,} of "
        f"{slo.error_budget_total:,.0f}" + (f", alerts: {', '.join(alerts)}" if alerts else "")
    )
    console.print(_budgets_table(summary))
    answered = ", ".join(f"{n:,}× {code}" for code, n in sorted(c.statuses.items()))
    broken = ", ".join(f"{n:,}× {name}" for name, n in sorted(c.errors.items()))
    console.print(
        f"clients: {c.sent:,} sent, answers {answered}"
        + (f"; no answer {broken}" if broken else "")
    )
    if summary.cpu_ms_per_request:
        parts = [f"{name} {ms:.2f}" for name, ms in summary.cpu_ms_per_request.items()]
        total = sum(summary.cpu_ms_per_request.values())
        console.print(f"CPU ms per request: {', '.join(parts)} (total {total:.2f})")
    mark = "[green]✓[/]" if summary.consistent else "[red]✗[/]"
    console.print(
        f"{mark} events: {s.total_requests:,} recorded by the router, "
        f"{sync.collector_events:,} held by the collector (synced {sync.accepted:,} + "
        f"{sync.duplicates:,} duplicates), dropped {sync.ingest_dropped + sync.dropped}, "
        f"rejected {sync.rejected}, still pending {sync.unsynced}"
    )
    console.print(
        f"dashboard: [bold]{summary.dashboard_url}[/]\n"
        f"API: {summary.collector_url} (Authorization: Bearer {summary.read_token})\n"
        f"files: {summary.files} (router.db, collector.db, budgets.json, summary.json, *.log)"
    )

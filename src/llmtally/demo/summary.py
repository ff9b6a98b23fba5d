"""What a demo run did, in numbers: ``DemoSummary`` (printed, and kept as summary.json).

The numbers come from three places that must agree: the clients (``LoadReport``: what
was sent and answered), the router's store (what was recorded, priced, synced, dropped)
and the collector (how many events it holds). ``consistent`` says whether they do:
every call sent was recorded once, the collector holds exactly the recorded calls,
nothing was dropped and nothing is left unsynced.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..analysis.budgets import BudgetStatus
from ..analysis.errors import ErrorPattern
from ..analysis.slo import SloStatus
from ..analysis.stats import ComputedStats
from .load import LoadReport

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["SLO_TARGET", "DemoSummary", "SyncSummary", "summarize"]

SLO_TARGET = 0.99
TOP_ERROR_PATTERNS = 6


class SyncSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The router's events on their way to the collector."""

    collector_events: int
    accepted: int
    duplicates: int
    rejected: int
    dropped: int
    unsynced: int
    ingest_dropped: int


class DemoSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One demo run. ``elapsed_s`` runs from the router's start to the clients' end.
    ``cpu_ms_per_request``: CPU time per recorded request of each process (the clients,
    the router, the fake upstream, the collector — startup included; where measurable):
    their sum over the machine's cores bounds the run time from below.
    ``dashboard_url`` signs in with the read token (``?token=``); ``collector_url`` is
    the API's base, to use with ``Authorization: Bearer <read_token>``."""

    elapsed_s: float
    requests_per_s: float
    cpu_ms_per_request: dict[str, float]
    clients: LoadReport
    stats: ComputedStats
    sync: SyncSummary
    budgets: list[BudgetStatus]
    error_patterns: list[ErrorPattern]
    total_errors: int
    slo: SloStatus
    collector_url: str
    dashboard_url: str
    read_token: str
    files: str
    consistent: bool


def summarize(
    store: EventStore,
    clients: LoadReport,
    collector_events: int,
    *,
    elapsed: float,
    cpu_seconds: dict[str, float],
    collector_url: str,
    dashboard_url: str,
    read_token: str,
    files: Path,
) -> DemoSummary:
    """The summary of a run whose store is closed (everything recorded and synced)."""
    stats = store.stats()
    counters = stats.sync
    sync = SyncSummary(
        collector_events=collector_events,
        accepted=counters.get("accepted", 0),
        duplicates=counters.get("duplicates", 0),
        rejected=counters.get("rejected", 0),
        dropped=counters.get("dropped", 0),
        unsynced=stats.unsynced_events,
        ingest_dropped=stats.dropped_events,
    )
    errors = store.error_patterns(TOP_ERROR_PATTERNS)
    consistent = (
        clients.sent == stats.total_requests == collector_events
        and sync.dropped == sync.rejected == sync.unsynced == sync.ingest_dropped == 0
    )
    return DemoSummary(
        elapsed_s=elapsed,
        requests_per_s=stats.total_requests / elapsed if elapsed > 0 else 0.0,
        cpu_ms_per_request={
            name: 1000 * seconds / max(stats.total_requests, 1)
            for name, seconds in cpu_seconds.items()
        },
        clients=clients,
        stats=stats,
        sync=sync,
        budgets=store.budget_status(),
        error_patterns=errors.patterns,
        total_errors=errors.total_errors,
        slo=store.slo_status(SLO_TARGET),
        collector_url=collector_url,
        dashboard_url=dashboard_url,
        read_token=read_token,
        files=str(files),
        consistent=consistent,
    )

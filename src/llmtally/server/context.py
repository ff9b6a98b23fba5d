"""What every collector route needs: the storage, the auth check and the limits.

Route modules take a ``ServerContext`` and return their routes
(``def routes(ctx: ServerContext) -> list[BaseRoute]``); ``create_app`` builds one
context and collects the routes of each module, so adding an endpoint group is adding a
module and one line in ``app.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio

from ..events import AnalyticsEvent
from ..storage.base import EventStorage
from .auth import Auth
from .budgets import CollectorBudgets
from .live import LiveHub

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "ServerContext",
]

DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
DEFAULT_MAX_BATCH: Final = 1000
DEFAULT_BODY_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, eq=False)
class ServerContext:
    """Shared, immutable configuration of one collector app.

    ``body_timeout_s`` bounds the whole read of a request body (a client that trickles
    it slower gets 408), so slow clients cannot hold connections and memory forever.
    ``write_lock`` serializes writes: a storage connection runs one transaction at a
    time, and concurrent requests must not interleave their ``BEGIN``/``COMMIT``.
    ``ingest_observers`` are called with the events each ingest request stored (each
    event id once), synchronously; route modules append to it when ``create_app``
    builds the app (e.g. ``observability`` feeds its trackers). They must not raise.
    ``live`` fans newly stored events out to ``GET /analytics/live`` streams (and the
    dashboard); the server closes it when it starts shutting down. ``budgets`` are the
    collector's budgets (``/analytics/budgets``, ``/metrics``, the dashboard), ``None``
    for a storage that answers no queries.
    """

    storage: EventStorage
    auth: Auth
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    write_lock: anyio.Lock = field(default_factory=anyio.Lock)
    ingest_observers: list[Callable[[Sequence[AnalyticsEvent]], None]] = field(default_factory=list)
    live: LiveHub = field(default_factory=LiveHub)
    budgets: CollectorBudgets | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not self.body_timeout_s > 0:
            raise ValueError("body_timeout_s must be positive")

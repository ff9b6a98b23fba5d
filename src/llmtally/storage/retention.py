"""Retention: a loop that calls ``storage.expire`` every ``interval_s`` (the collector runs
it in its lifespan). Deletion happens in small chunks inside ``expire``, so ingest never
waits long; a failed pass is logged and the next one tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

import anyio

from .base import QueryStorage

__all__ = ["DEFAULT_RETENTION_INTERVAL_S", "run_retention"]

DEFAULT_RETENTION_INTERVAL_S: Final = 300.0

logger: Final = logging.getLogger("llmtally.storage.retention")


async def run_retention(
    storage: QueryStorage,
    *,
    interval_s: float = DEFAULT_RETENTION_INTERVAL_S,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> NoReturn:
    """Expire old data now and every ``interval_s`` seconds until cancelled. Never
    raises a storage error (it is logged); ``clock`` gives unix seconds."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    while True:
        try:
            result = await storage.expire(int(clock() * 1000))
        except Exception:
            logger.warning("retention pass failed; retrying in %.0f s", interval_s, exc_info=True)
        else:
            if result.events or result.rollups:
                logger.info(
                    "retention: deleted %d events and %d rollup rows", result.events, result.rollups
                )
        await sleep(interval_s)

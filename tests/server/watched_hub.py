"""``WatchedHub``: a real ``LiveHub`` that tells a test when a subscription is released."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from llmtally.server.live import LiveFilter, LiveHub, Subscription

__all__ = ["WatchedHub"]


class WatchedHub(LiveHub):
    """``LiveHub`` whose ``released()`` waits for the end of a subscription (the route
    leaves ``subscribe`` when its client goes, a moment after the client closed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._released = anyio.Event()

    @asynccontextmanager
    async def subscribe(
        self, flt: LiveFilter | None = None, *, last_event_id: str | None = None
    ) -> AsyncIterator[Subscription]:
        taken = False
        try:
            async with super().subscribe(flt, last_event_id=last_event_id) as sub:
                taken = True
                yield sub
        finally:
            if taken:  # not when ``subscribe`` refused
                self._released.set()

    async def released(self) -> None:
        """Wait until a subscription has ended — ``subscribe`` removed it — since the
        last ``released()`` returned (bound it with ``anyio.fail_after``)."""
        await self._released.wait()
        self._released = anyio.Event()

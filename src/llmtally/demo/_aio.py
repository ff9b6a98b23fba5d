"""Run a coroutine function on uvloop when it is installed, else on asyncio."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["run_async"]

T = TypeVar("T")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(fn)`` on uvloop if available."""
    uvloop = importlib.util.find_spec("uvloop") is not None
    return anyio.run(fn, backend_options={"use_uvloop": uvloop})

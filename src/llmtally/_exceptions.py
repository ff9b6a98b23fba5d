"""Every exception llmtally raises on purpose.

The tree::

    LlmTallyError                      base of everything below
    ├── ValidationError (ValueError)   an argument is invalid: a programming error at the call
    ├── StoreClosedError (RuntimeError) the store is used before ``async with`` or reused after
    ├── BudgetExceeded                 a hard budget refuses a call (raised before the call)
    └── ConfigurationError (ValueError) bad configuration: a price file, a sync URL, ...

Runtime conditions (a full buffer, a full or locked disk, a collector that is down) never
raise: they are counted and shown in ``store.stats()``.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "ConfigurationError",
    "LlmTallyError",
    "StoreClosedError",
    "ValidationError",
]


class LlmTallyError(Exception):
    """Base class of every exception raised by llmtally."""


class ValidationError(LlmTallyError, ValueError):
    """An argument passed to a recording call is invalid; nothing was recorded."""


class StoreClosedError(LlmTallyError, RuntimeError):
    """The store is not open: use it inside ``async with EventStore(...)``."""


class ConfigurationError(LlmTallyError, ValueError):
    """Configuration (a price override file, sync settings, ...) is invalid."""


class BudgetExceeded(LlmTallyError):
    """A hard budget has no room left for this call."""

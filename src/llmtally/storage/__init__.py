"""Where events are kept: one small interface (``EventStorage``), several backends.

``SqliteStorage`` (aiosqlite; the embedded default and the collector's default) and
``MemoryStorage`` (``path=None``: bounded, nothing on disk). A PostgreSQL backend for the
collector at scale implements the same interface.
"""

from __future__ import annotations

from .base import EventStorage, IngestResult
from .memory import MemoryStorage
from .sqlite import SqliteStorage

__all__ = ["EventStorage", "IngestResult", "MemoryStorage", "SqliteStorage"]

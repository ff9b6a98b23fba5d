"""Where events are kept: one small interface (``EventStorage``), several backends.

``SqliteStorage`` (aiosqlite; the embedded default and the collector's default),
``MemoryStorage`` (``path=None``: bounded, nothing on disk) and
``llmtally.storage.postgres.PostgresStorage`` (asyncpg, the ``postgres`` extra: many
collectors sharing one database; imported from its module so that asyncpg stays
optional). Backends that answer queries implement ``QueryStorage`` too; every one of
these does. Rollups (``rollups.py``) are written in the same transaction as the events.
"""

from __future__ import annotations

from .base import EventStorage, IngestResult, QueryStorage
from .memory import MemoryStorage
from .sqlite import SqliteStorage

__all__ = ["EventStorage", "IngestResult", "MemoryStorage", "QueryStorage", "SqliteStorage"]

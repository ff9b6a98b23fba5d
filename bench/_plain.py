"""What the benchmarks' plain-sqlite3 peers share."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def plain_sqlite3() -> Iterator[None]:
    """Plain means plain: run the peer without the ``None`` adapter that importing
    llmtally's SQLite writer registers on Python 3.11 (``storage/sqlite_write.py``)."""
    none_adapter = sqlite3.adapters.pop((type(None), sqlite3.PrepareProtocol), None)
    try:
        yield
    finally:
        if none_adapter is not None:
            sqlite3.register_adapter(type(None), none_adapter)

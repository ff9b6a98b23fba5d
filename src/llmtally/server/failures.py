"""Which storage errors are transient: a busy or locked database is worth a retry.

The collector answers those with 503 and ``Retry-After``, so a syncer keeps the events
pending and retries; every other storage error is a 500. A busy database is never
reported as bad input (4xx), which a syncer would drop. SQLite's writer process
(``writer="process"``) reports the child's error as a ``WriterError`` carrying the
exception's type name (``kind``) and message: a locked database there is transient too.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..storage.writer_process import WriterError

__all__ = ["is_transient"]

_SQLITE_MARKERS: Final = ("locked", "busy")

# PostgreSQL SQLSTATEs (asyncpg exceptions carry ``sqlstate``): serialization failure,
# deadlock, lock not available, too many connections, cannot connect now (starting up),
# admin/crash shutdown, query cancelled by statement_timeout.
_PG_TRANSIENT: Final = frozenset(
    {"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03", "57014"}
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by a storage backend) means "busy, try again shortly"."""
    if isinstance(exc, sqlite3.OperationalError) or (
        isinstance(exc, WriterError) and exc.kind == "OperationalError"
    ):
        message = str(exc).lower()
        return any(marker in message for marker in _SQLITE_MARKERS)
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate in _PG_TRANSIENT

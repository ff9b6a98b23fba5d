"""Reading a SQLite file the way another process would (plain ``sqlite3``, own connection)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def count_events(path: Path) -> int:
    """Rows in the ``events`` table of the database at ``path``."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        db.close()

"""Query tests run on SQLite and PostgreSQL alike (``storage`` fixture)."""

from __future__ import annotations

from ..storage.backends import storage

__all__ = ["storage"]

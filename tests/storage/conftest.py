"""Storage tests run on SQLite and PostgreSQL alike (``storage`` fixture)."""

from __future__ import annotations

from typing import Any

from . import pg
from .backends import storage

__all__ = ["storage"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it loudly when the PostgreSQL backend went untested."""
    if pg.skipped:
        terminalreporter.write_sep("!", "PostgreSQL tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(pg.skipped[0], red=True, bold=True)

"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite path in a folder that does not exist yet (the store creates it)."""
    return tmp_path / "data" / "analytics.db"

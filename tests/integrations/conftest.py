"""Shared helpers. The store and the fake upstream own task groups, which must be entered
and left in one task: tests open them with ``async with`` (not async-generator fixtures,
whose setup and teardown run in different tasks)."""

from __future__ import annotations

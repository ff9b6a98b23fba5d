"""PostgreSQL for tests: a fresh schema per test on the server at 127.0.0.1, dropped after.

``LLMTALLY_TEST_POSTGRES_URL`` overrides the server (default: database ``test`` as user
``postgres``). When the server cannot be reached, PostgreSQL tests are skipped with a
loud reason — unless ``LLMTALLY_REQUIRE_POSTGRES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

PG_URL = os.environ.get("LLMTALLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("LLMTALLY_REQUIRE_POSTGRES") == "1"

skipped: list[str] = []  # reasons, for the terminal summary


def _unreachable(exc: BaseException) -> None:
    reason = (
        f"POSTGRESQL UNREACHABLE at {PG_URL.split('@')[-1]} ({type(exc).__name__}: {exc}): "
        "PostgreSQL backend NOT TESTED. Start it, or set LLMTALLY_REQUIRE_POSTGRES=1 to fail."
    )
    if REQUIRED:
        pytest.fail(f"LLMTALLY_REQUIRE_POSTGRES=1 and {reason}", pytrace=False)
    skipped.append(reason)
    pytest.skip(reason)


async def connect() -> Any:
    """An admin connection, or skip/fail the test when the server is unreachable."""
    try:
        return await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unreachable(exc)
        raise  # unreachable: skip/fail raised


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A new, empty schema; dropped with everything in it on exit."""
    conn = await connect()
    name = f"llmtally_test_{secrets.token_hex(6)}"
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


def schema_url(schema: str) -> str:
    """``PG_URL`` with ``search_path`` set to ``schema`` (asyncpg passes unknown URL query
    parameters on as server settings)."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}search_path={schema}"


async def create_schema() -> str:
    """Create a fresh schema and return its name (for sync fixtures: ``asyncio.run``)."""
    conn = await connect()
    try:
        name = f"llmtally_test_{secrets.token_hex(6)}"
        await conn.execute(f'CREATE SCHEMA "{name}"')
        return name
    finally:
        await conn.close()


async def drop_schema(name: str) -> None:
    """Drop a schema made by ``create_schema`` and everything in it."""
    conn = await connect()
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()

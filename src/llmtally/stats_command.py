"""``llmtally stats``: the statistics of a store's database, as tables or JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
import msgspec

from .store import EventStore

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``llmtally stats``."""
    parser.add_argument(
        "--db", type=Path, default=Path("analytics.db"), help="the store's SQLite file"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


async def _main(db: Path, as_json: bool) -> int:
    async with EventStore(db) as store:
        stats = store.stats()
    if as_json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(stats)).decode() + "\n")
    else:
        from .tables import render

        render(stats, db=db)
    return 0


def run(args: argparse.Namespace) -> int:
    """Print the stats; 1 with one clear line when the file is missing."""
    db: Path = args.db
    if not db.is_file():
        print(f"llmtally: error: stats: no database at {db}", file=sys.stderr)
        return 1
    return anyio.run(_main, db, args.json)

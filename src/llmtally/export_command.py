"""``llmtally export``: events as CSV, JSON or JSON Lines, from a collector or a file.

From a collector (``--url``, read token from ``--token`` or ``LLMTALLY_TOKEN``) it streams
``GET /analytics/export``; from a SQLite file (``--db``: a store's or a collector's) it
runs the same export (``llmtally.query.export``) locally. Either way the bytes are
copied to ``--output`` (default stdout) chunk by chunk: memory stays bounded whatever the
range. A file is written as ``FILE.partial`` and renamed once complete. CSV cells that a
spreadsheet would run as formulas are neutralised (a leading ``'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import anyio

__all__ = ["add_arguments", "parse_time", "run"]

FORMATS = ("csv", "json", "jsonl")
DEFAULT_RANGE_S = 86_400
_MAX_SECONDS = 100_000_000_000

_DESCRIPTION = """\
Export events as CSV, JSON (one array) or JSON Lines, streamed with bounded memory.

Source: a collector (--url, read token from --token or $LLMTALLY_TOKEN) or a SQLite file
(--db: a router's store or a collector's database). Times: unix seconds or ISO-8601
(2025-01-31, 2025-01-31T12:00, 2025-01-31T12:00:00+02:00; without an offset: UTC).
The range is start <= t < end; default: the 24 hours before --end (default: now).
"""


class _ExportError(Exception):
    """A one-line failure message; ``exit_code`` 1 (failure) or 2 (usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_time(text: str) -> int:
    """Unix seconds from ``text``: an integer, or an ISO-8601 date/time (UTC unless it
    has an offset). Raises ``argparse.ArgumentTypeError``."""
    value = text.strip()
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not unix seconds or an ISO-8601 time: {text!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
    if not 0 <= seconds <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"out of range (1970 to year 5138): {text!r}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``llmtally export``."""
    parser.description = _DESCRIPTION
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url", help="read from the collector at this base URL, e.g. http://127.0.0.1:8088"
    )
    source.add_argument(
        "--db", type=Path, help="read from this SQLite file (a store's or a collector's)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="read token for --url (default: $LLMTALLY_TOKEN; never shown)",
    )
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format")
    parser.add_argument(
        "--start", type=parse_time, default=None, help="range start (default: end - 24 h)"
    )
    parser.add_argument("--end", type=parse_time, default=None, help="range end (default: now)")
    parser.add_argument("--model", default=None, help="only this model (default: all)")
    parser.add_argument("--provider", default=None, help="only this provider (default: all)")
    parser.add_argument("--agent", default=None, help="only this agent_id (default: all)")
    parser.add_argument(
        "--output", "-o", type=Path, default=None, help="file to write (default: stdout)"
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal (default: only on one)",
    )


def _range(args: argparse.Namespace) -> tuple[int, int]:
    end = args.end if args.end is not None else int(time.time()) + 1
    start = args.start if args.start is not None else max(0, end - DEFAULT_RANGE_S)
    if end < start:
        raise _ExportError("--end must not be before --start", exit_code=2)
    return start, end


async def _from_collector(
    args: argparse.Namespace, start: int, end: int, write: Callable[[bytes], Any]
) -> None:
    import httpx2

    token = args.token or os.environ.get("LLMTALLY_TOKEN")
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise _ExportError(f"--url must be an http(s) URL, got {args.url!r}", exit_code=2)
    params: dict[str, str | int] = {"format": args.format, "start": start, "end": end}
    for name, value in (("model", args.model), ("provider", args.provider)):
        if value:
            params[name] = value
    if args.agent:
        params["agent_id"] = args.agent
    headers = {"authorization": f"Bearer {token}"} if token else {}
    timeout = httpx2.Timeout(30.0, read=300.0)
    try:
        async with (
            httpx2.AsyncClient(timeout=timeout) as client,
            client.stream(
                "GET", f"{url}/analytics/export", params=params, headers=headers
            ) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise _ExportError(_refusal(response.status_code, response.text, bool(token)))
            async for chunk in response.aiter_bytes():
                await write(chunk)
    except httpx2.HTTPError as exc:
        raise _ExportError(f"cannot export from {url}: {type(exc).__name__}: {exc}") from None


def _refusal(status: int, body: str, has_token: bool) -> str:
    if status == 401:
        hint = "the token was refused" if has_token else "no token: use --token or LLMTALLY_TOKEN"
        return f"the collector answered 401 ({hint})"
    if status == 403:
        return "the collector answered 403: this token may not read events"
    detail = body.strip().splitlines()[0][:200] if body.strip() else "no detail"
    return f"the collector answered {status}: {detail}"


async def _from_file(
    args: argparse.Namespace, start: int, end: int, write: Callable[[bytes], Any]
) -> None:
    from .query import export
    from .storage.sqlite import SqliteStorage

    db: Path = args.db
    if not await anyio.Path(db).is_file():
        raise _ExportError(f"no database at {db}")
    storage = SqliteStorage(db)
    try:
        await storage.open()
    except Exception as exc:
        raise _ExportError(f"cannot open database {db}: {exc}") from None
    try:
        chunks: AsyncIterator[bytes] = export(
            storage,
            start * 1000,
            end * 1000,
            args.format,
            model=args.model,
            provider=args.provider,
            agent_id=args.agent,
        )
        async for chunk in chunks:
            await write(chunk)
    finally:
        await storage.close()


class _Sink:
    """Where the bytes go (stdout or ``FILE.partial``), with an optional progress bar."""

    def __init__(self, target: BinaryIO, show_progress: bool) -> None:
        self._file = anyio.wrap_file(target)
        self.bytes = 0
        self.rows = 0
        self._progress: Any = None
        if show_progress:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                "exporting [bold]{task.fields[rows]:,}[/] rows, {task.fields[mb]:.1f} MB",
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task("export", total=None, rows=0, mb=0.0)

    def __enter__(self) -> _Sink:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    async def write(self, chunk: bytes) -> None:
        await self._file.write(chunk)
        self.bytes += len(chunk)
        self.rows += chunk.count(b"\n")
        if self._progress is not None:
            self._progress.update(self._task, rows=self.rows, mb=self.bytes / 1e6)


async def _export(args: argparse.Namespace, target: BinaryIO, show_progress: bool) -> None:
    start, end = _range(args)
    with _Sink(target, show_progress) as sink:
        if args.url is not None:
            await _from_collector(args, start, end, sink.write)
        else:
            await _from_file(args, start, end, sink.write)
        await anyio.wrap_file(target).flush()


def run(args: argparse.Namespace) -> int:
    """Export; returns 0, or prints one line and returns 1 (failure) or 2 (usage)."""
    show_progress = args.progress or sys.stderr.isatty()
    output: Path | None = args.output
    partial = None if output is None else output.with_name(output.name + ".partial")
    try:
        if partial is None:
            anyio.run(_export, args, sys.stdout.buffer, show_progress)
        else:
            try:
                with partial.open("wb") as target:
                    anyio.run(_export, args, target, show_progress)
                partial.replace(output)  # type: ignore[arg-type]
            finally:
                partial.unlink(missing_ok=True)
    except _ExportError as exc:
        print(f"llmtally: error: export: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (``| head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"llmtally: error: export: {exc}", file=sys.stderr)
        return 1
    return 0

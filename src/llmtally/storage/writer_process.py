"""The SQLite writer in a child process (``SqliteStorage(writer="process")``).

Why: CPython's sqlite3 module holds the GIL while it binds a statement's parameters and
takes it back after every statement step, so a writer *thread* competes with the
router's event loop for one interpreter lock; on two cores the two serialise and a
busy store writes at about half the rate SQLite itself can. In a child process the
insert runs beside the event loop, not between its steps: the parent only builds the
rows, encodes them (msgpack) and waits, without blocking, for the reply; the child rolls
them up (``rollups.rollup_rows``), which balances the two processes' work.

Protocol over the child's stdin/stdout: frames of a 4-byte little-endian length and a
msgpack body. Requests (a tagged union): ``WriteRequest`` (rows and the checkpoint: an
embedded store's batch, rolled up and written by ``sqlite_write.write_rows``) or ``IngestRequest``
(rows only: the collector's ingest, ``sqlite_write.ingest_rows``, which deduplicates and
rolls up in the child); reply: ``WriteReply`` (``error`` is ``None`` when the
transaction committed; ``inserted``: the indices of the rows an ingest stored). One
request at a time. The child runs the same transactions as the thread writer, so a batch
commits whole or not at all; ends at end of input (the parent closed it or died); and
exits when its reply cannot be delivered.

Failures are the caller's to retry: a write the child refused raises ``WriterError``
with SQLite's message (disk full, database locked …) and the exception's type name in
``kind``; a child that died or did not answer within ``timeout`` is killed,
``WriterError`` is raised, and the next write starts a new child. Retrying is safe: rows
already stored are skipped. An ingest whose request could not even be sent (the child
died since the last one) is sent again, once, to a new child: it cannot have been
written, and the collector's client is owed an answer.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import llmtally

__all__ = ["IngestRequest", "Request", "WriteReply", "WriteRequest", "WriterError", "WriterProcess"]

logger: Final = logging.getLogger("llmtally.storage")

HEADER: Final = struct.Struct("<I")
MAX_FRAME: Final = 1 << 30
"""The largest frame either side accepts (a corrupt length must not allocate gigabytes)."""


class WriteRequest(msgspec.Struct, array_like=True, gc=False, tag="write"):
    """One batch: ``rows`` in ``rows.COLUMNS`` order and the encoded stats checkpoint to
    save with them (or ``None``). The child rolls the rows up itself."""

    rows: list[tuple[Any, ...]]
    checkpoint: bytes | None = None


class IngestRequest(msgspec.Struct, array_like=True, gc=False, tag="ingest"):
    """The collector's batch: ``rows`` (synced) in ``rows.COLUMNS`` order."""

    rows: list[tuple[Any, ...]]


Request = WriteRequest | IngestRequest


class WriteReply(msgspec.Struct, array_like=True):
    """``error``: ``None`` when the batch committed, else ``"<exception type>: message"``;
    ``inserted``: for an ingest, the indices of the rows stored (ascending)."""

    error: str | None = None
    inserted: list[int] = []


class WriterError(Exception):
    """The writer process could not write a batch (retried by the persister; the
    collector answers 503 when ``kind`` and the message say the database was busy).
    ``kind``: the type name of the exception the child reported (``"OperationalError"``
    …), ``None`` when the child itself failed (died, hung, garbled)."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


_encode_request: Final = msgspec.msgpack.Encoder().encode
_decode_reply: Final = msgspec.msgpack.Decoder(WriteReply).decode


def _frame(request: Request) -> bytes:
    body = _encode_request(request)
    return HEADER.pack(len(body)) + body


# ``-P``: no working directory on ``sys.path`` (a stray ``sqlite3.py`` there must not be
# imported). The folder this ``llmtally`` came from is *appended*: importable even from a
# source checkout the parent put on its path at run time, and never ahead of the stdlib.
# The packages on the way to ``writer_child`` are registered bare (their ``__init__``
# would import the whole library: pricing data, aiosqlite, starlette …): the child loads
# only the modules it runs, and starts in ~0.1 s instead of ~0.3 s.
_ROOT: Final = str(Path(llmtally.__file__).resolve().parent.parent)
_BOOT: Final = (
    "import sys, types; root = sys.argv.pop(1)\n"
    "for name in ('llmtally', 'llmtally.analysis', 'llmtally.storage'):\n"
    "    package = sys.modules[name] = types.ModuleType(name)\n"
    "    package.__path__ = [root + '/' + name.replace('.', '/')]\n"
    "    package.__file__ = package.__path__[0] + '/__init__.py'\n"
    "sys.path.append(root)\n"
    "from llmtally.storage.writer_child import main; sys.exit(main(sys.argv[1:]))"
)


class WriterProcess:
    """A child process that writes batches into the SQLite file at ``path``.

    ``timeout``: the longest a write may take (SQLite's busy wait included) before the
    child is deemed hung and killed. ``close_timeout``: how long ``aclose`` waits.

    Started on first use (or by ``start()``); ``aclose()`` ends it. Not for concurrent
    use: the caller (``SqliteStorage``) serialises writes under its lock.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5_000,
        timeout: float = 60.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.starts = 0  # children started so far (a restart after a crash counts)
        self._process: Process | None = None
        self._stdout: BufferedByteReceiveStream | None = None

    @property
    def pid(self) -> int | None:
        """The running child's pid (``None`` when none runs)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the child if none is running."""
        if self._process is not None:
            return
        command = [
            sys.executable,
            "-P",
            "-c",
            _BOOT,
            _ROOT,
            os.fspath(self.path),
            self.synchronous,
            str(int(self.busy_timeout_ms)),
        ]
        process = await anyio.open_process(command, stderr=None)
        assert process.stdout is not None
        self._process = process
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.starts += 1

    @staticmethod
    def encode_write(rows: list[tuple[Any, ...]], checkpoint: bytes | None) -> bytes:
        """The frame of a ``WriteRequest`` (pure: built ahead, sent by ``write``)."""
        return _frame(WriteRequest(rows, checkpoint))

    async def write(self, frame: bytes) -> None:
        """Write one batch encoded by ``encode_write`` (see ``sqlite_write.write_rows``).
        Raises ``WriterError``; the same frame may be written again (a retry)."""
        await self._request(frame, resend=False)

    async def ingest(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Store the rows whose id is new, rolled up; returns their indices (see
        ``sqlite_write.ingest_rows``). Raises ``WriterError``."""
        return (await self._request(_frame(IngestRequest(rows)), resend=True)).inserted

    async def _request(self, frame: bytes, *, resend: bool) -> WriteReply:
        try:
            with anyio.fail_after(self.timeout):
                while True:
                    await self.start()
                    process, stdout = self._process, self._stdout
                    assert process is not None and process.stdin is not None
                    assert stdout is not None
                    try:
                        await process.stdin.send(frame)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        if not resend:
                            raise
                        # Gone before it read the whole frame: nothing was written.
                        resend = False
                        await self._kill()
                        continue
                    (length,) = HEADER.unpack(await stdout.receive_exactly(HEADER.size))
                    if length > MAX_FRAME:
                        raise WriterError(f"the writer process sent a frame of {length} bytes")
                    reply = _decode_reply(await stdout.receive_exactly(length))
                    break
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            msgspec.DecodeError,
            TimeoutError,
            WriterError,
        ) as exc:
            await self._kill()
            raise WriterError(f"the writer process failed ({type(exc).__name__}: {exc})") from exc
        if reply.error is not None:
            kind, _, _ = reply.error.partition(":")
            raise WriterError(reply.error, kind)
        return reply

    async def _kill(self) -> None:
        process, self._process, self._stdout = self._process, None, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()

    async def aclose(self) -> None:
        """End the child: close its input (it finishes the batch in hand and exits),
        wait up to ``close_timeout`` seconds, then kill it."""
        process = self._process
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()
            with anyio.move_on_after(self.close_timeout):
                await process.wait()
            if process.returncode is None:
                logger.warning("llmtally: the SQLite writer process did not exit; killed it")
            await self._kill()

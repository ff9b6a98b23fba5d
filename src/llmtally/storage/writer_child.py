"""The writer process's program: ``main([PATH, SYNCHRONOUS, BUSY_MS])``.

Reads request frames on stdin, writes each on its own connection (``WriteRequest``: its
rows rolled up here with ``rollups.rollup_rows`` and written with ``sqlite_write.write_rows``;
``IngestRequest`` with ``sqlite_write.ingest_rows``), answers
each with a ``WriteReply`` frame on stdout (see
``writer_process`` for the protocol). Ends at end of input; exits when a reply cannot be
delivered (the parent is gone). Synchronous on purpose: it has one job and one thread.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sqlite3
import sys
from typing import BinaryIO

import msgspec

from .rollups import rollup_rows
from .sqlite_write import ingest_rows, write_rows
from .writer_process import HEADER, MAX_FRAME, IngestRequest, Request, WriteReply

__all__ = ["main", "serve"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def serve(conn: sqlite3.Connection, requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer write requests until end of input (or a frame cut short)."""
    decode = msgspec.msgpack.Decoder(Request).decode
    encode = msgspec.msgpack.Encoder().encode
    while (header := _read_exactly(requests, HEADER.size)) is not None:
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME or (body := _read_exactly(requests, length)) is None:
            return
        try:
            req = decode(body)
            if isinstance(req, IngestRequest):
                reply = WriteReply(inserted=ingest_rows(conn, req.rows))
            else:
                write_rows(conn, req.rows, rollup_rows(req.rows), req.checkpoint)
                reply = WriteReply()
        except Exception as exc:  # reported to the parent, which retries or gives up
            reply = WriteReply(f"{type(exc).__name__}: {exc}")
        out = encode(reply)
        replies.write(HEADER.pack(len(out)) + out)
        replies.flush()


def main(argv: list[str]) -> int:
    path, synchronous, busy_ms = argv
    # Ctrl-C reaches the router's whole process group: the router drains through this
    # process on its way out, so the writer must outlive the interrupt (it ends when its
    # input closes, as the router exits or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A batch allocates ~30,000 short-lived objects and none form cycles: without this the
    # collector would walk the (frozen) imported modules many times per batch.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if synchronous not in _SYNCHRONOUS:
        raise SystemExit(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        with contextlib.suppress(BrokenPipeError):  # the parent is gone: no one to answer
            serve(conn, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

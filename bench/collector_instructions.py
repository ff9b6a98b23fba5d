"""The collector's request path, in instructions counted by valgrind.

``bench/collector_ingest.py`` measures events/s over HTTP, which swings with the load of
this machine's two shared cores; instruction counts do not. Each part is run in a child
process under ``valgrind --tool=cachegrind --cache-sim=no`` (``PYTHONHASHSEED=0``); a
child that only builds the bodies and warms up (two requests through the whole app) is
subtracted, so start-up cancels out. Children end with ``os._exit`` (teardown is no part
of any run). Parts, per event, over ``--events`` in batches of ``--batch``:

- ``parse``: ``ingest.parse_batch`` of each request body (UTF-8 check, JSON decode, ids);
- ``from_wire``: the same plus the ``AnalyticsEvent`` of each wire event;
- ``observe``: ``CollectorView.observe`` plus ``LiveHub.publish`` (no subscriber) of each
  batch of events, built beforehand, then a read (the last fold);
- ``app``: the whole app in-process over ASGI (no sockets, no HTTP parsing), with the
  SQLite writer process: only the event loop's process is counted (valgrind does not
  follow the child), i.e. what the collector's main process spends per event;
- ``serve``: a real ``llmtally serve --writer process`` under valgrind, posted
  ``--events`` over loopback by one client (not counted), minus a serve that is posted
  nothing: the main process with uvicorn's HTTP (h11, or httptools when importable;
  compare by running this twice with and without httptools on ``PYTHONPATH``).

    PYTHONPATH=src .venv/bin/python bench/collector_instructions.py [--events 20000]
        [--parts parse,from_wire,observe,app]

Takes a few minutes (valgrind runs Python ~50x slower).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import uvloop
from _valgrind import CACHEGRIND, child_instructions, instructions_in
from collector_ingest import TOKEN, chunks, free_port, make_wire

from llmtally.events import WireBatch, from_wire
from llmtally.server.app import create_app
from llmtally.server.auth import Auth
from llmtally.server.ingest import INGEST_PATH, parse_batch
from llmtally.server.live import LiveHub
from llmtally.server.observability import CollectorView
from llmtally.storage.sqlite import SqliteStorage

PARTS = ("parse", "from_wire", "observe", "app", "serve")
Message = MutableMapping[str, Any]


def _bodies(n: int, batch: int) -> list[bytes]:
    encode = msgspec.json.Encoder().encode
    return [encode(WireBatch(events=b)) for b in chunks(make_wire(n), batch)]


async def _post(app: Any, body: bytes) -> int:
    """One ingest request through ``app`` over ASGI; returns the status."""
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": INGEST_PATH,
        "raw_path": INGEST_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8088),
    }
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _with_app(run: Callable[[Any], Awaitable[None]], workdir: Path) -> None:
    storage = SqliteStorage(str(workdir / "c.db"), writer="process")
    await storage.open()
    try:
        app = create_app(
            storage,
            auth=Auth.from_env({"LLMTALLY_INGEST_TOKENS": TOKEN}),
            retention_interval_s=None,
            detect_interval_s=None,
        )
        await run(app)
    finally:
        await storage.close()


async def _child(part: str, n: int, batch: int) -> None:
    warm = _bodies(2 * batch, batch)
    bodies = _bodies(n, batch)
    with tempfile.TemporaryDirectory(prefix="llmtally-instr-") as tmp:

        async def run(app: Any) -> None:
            for body in warm:
                assert await _post(app, body) == 200
            if part == "app":
                for body in bodies:
                    assert await _post(app, body) == 200

        await _with_app(run, Path(tmp))
        if part == "parse":
            for body in bodies:
                parse_batch(body, batch)
        elif part == "from_wire":
            for body in bodies:
                list(map(from_wire, parse_batch(body, batch).events))
        elif part == "observe":
            batches = [list(map(from_wire, parse_batch(b, batch).events)) for b in bodies]
            view, hub = CollectorView(), LiveHub()
            for events in batches:
                view.observe(events)
                hub.publish(events)
            view.stats()


def _serve_instructions(n: int, batch: int) -> int:
    """Instructions of a ``llmtally serve`` process (not its writer child) over its life,
    posted ``n`` events in batches of ``batch`` (none for ``n == 0``)."""
    bodies = _bodies(n, batch) if n else []
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmtally-instr-") as tmp:
        log = Path(tmp) / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTALLY_")}
        env |= {"LLMTALLY_INGEST_TOKENS": TOKEN, "PYTHONHASHSEED": "0"}
        cmd = [
            *CACHEGRIND, sys.executable, "-m", "llmtally.cli", "serve", "--db", f"{tmp}/c.db",
            "--port", str(port), "--writer", "process", "--log-level", "warning",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=600.0) as client:
                deadline = time.monotonic() + 600
                while True:  # readiness poll of a subprocess under valgrind, bounded
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"collector did not start:\n{log.read_text()}")
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx2.TransportError:
                        time.sleep(0.5)
                for body in bodies:
                    r = client.post(INGEST_PATH, content=body, headers=headers)
                    assert r.status_code == 200, r.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(600)
        return instructions_in(log.read_text())


def _instructions(part: str, n: int, batch: int) -> int:
    return child_instructions(__file__, part, str(n), str(batch))


def main(n: int, batch: int, parts: list[str]) -> None:
    print(f"python {sys.version.split()[0]}, {n:,} events, batches of {batch}")
    print("instructions per event (valgrind), minus setup")
    # The children run two at a time (counts do not depend on load).
    wanted = {"setup", *parts} | ({"from_wire"} if "observe" in parts else set())
    if "serve" in parts:
        wanted |= {"serve-idle"}

    def count(part: str) -> int:
        if part.startswith("serve"):
            return _serve_instructions(0 if part == "serve-idle" else n, batch)
        return _instructions(part, n, batch)

    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(wanted, pool.map(count, wanted), strict=True))
    bases = {"observe": "from_wire", "serve": "serve-idle"}
    for part in parts:
        # ``observe``'s setup also decodes and converts every body.
        base = counts[bases.get(part, "setup")]
        print(f"{part:<10} {(counts[part] - base) / n:>10,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        part, count, size = sys.argv[2:5]
        uvloop.run(_child(part, int(count), int(size)))
        sys.stdout.flush()
        os._exit(0)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--parts", default=",".join(PARTS))
    args = ap.parse_args()
    main(args.events, args.batch, args.parts.split(","))

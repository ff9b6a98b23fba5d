"""Helpers for collector tests: run ``llmtally serve`` as a real subprocess, build events."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import msgspec

from llmtally._ids import new_event_id
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, to_wire

INGEST_TOKEN = "ingest-token-7f3a"
READ_TOKEN = "read-token-91bc"
ADMIN_TOKEN = "admin-token-c0de"
TOKEN_ENV = {
    "LLMTALLY_INGEST_TOKENS": f"other-ingest, {INGEST_TOKEN}",
    "LLMTALLY_READ_TOKENS": READ_TOKEN,
    "LLMTALLY_ADMIN_TOKENS": ADMIN_TOKEN,
}
EVENTS_PATH = "/api/v1/analytics/events"
STARTUP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tokens: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any LLMTALLY_* token, plus ``tokens``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTALLY_")}
    env.update(tokens)
    return env


def serve_command(db: Path | str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llmtally.cli",
        "serve",
        "--db",
        str(db),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@dataclass
class Collector:
    """A running ``llmtally serve`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    db: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (killed after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"collector ignored SIGTERM; log:\n{self.log_text()}") from None


def start_collector(
    workdir: Path,
    *extra: str,
    tokens: Mapping[str, str] = TOKEN_ENV,
    db: Path | None = None,
    port: int | None = None,
) -> Collector:
    """Start ``llmtally serve`` on ``port`` (default: a free loopback port); returns once
    /health answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db = db or workdir / "collector.db"
    log = workdir / f"collector-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_command(db, port, *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=base_env(tokens),
        )
    collector = Collector(proc, f"http://127.0.0.1:{port}", port, db, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx2.Client(base_url=collector.url, timeout=1.0) as client:
        while True:  # polling a subprocess for readiness: bounded
            if proc.poll() is not None:
                raise AssertionError(
                    f"collector exited with {proc.returncode}; log:\n{collector.log_text()}"
                )
            try:
                if client.get("/health").status_code == 200:
                    return collector
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                collector.terminate()
                raise AssertionError(f"collector did not start; log:\n{collector.log_text()}")
            time.sleep(0.05)


# --- events -----------------------------------------------------------------------------


def wire_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """One valid Protocol 012 event as a JSON-ready dict (every 7th one failed)."""
    common: dict[str, Any] = {
        "model": "gpt-4o-mini" if i % 2 else "claude-3-5-sonnet",
        "provider": "openai" if i % 2 else "anthropic",
        "provider_id": f"key-{i % 3}",
        "input_tokens": 100 + i,
        "output_tokens": 20 + i % 50,
        "cached_input_tokens": i % 10,
        "cost_nanos": 1_234_567 + i,
        "duration_ms": 100.0 + i % 900,
        "ttft_ms": 20.0 + i % 80,
    }
    payload: LlmRequestCompleted | LlmRequestFailed
    if i % 7 == 6:
        payload = LlmRequestFailed(
            error_code="rate_limited", error_message="429", status_code=429, **common
        )
    else:
        payload = LlmRequestCompleted(**common)
    event = AnalyticsEvent(
        event_id=new_event_id(),
        timestamp_ms=1_700_000_000_000 + i,
        payload=payload,
        agent_id=f"agent-{i % 5}",
    )
    data: dict[str, Any] = msgspec.to_builtins(to_wire(event))
    data.update(overrides)
    return data


def wire_batch(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [wire_event(start + i) for i in range(n)]


def body(events: Sequence[Any]) -> bytes:
    return msgspec.json.encode({"events": list(events)})


def stored_id_counts(db: Path, event_ids: Sequence[str]) -> dict[str, int]:
    """``event_id -> number of rows`` for ``event_ids``, read through a read-only
    connection (the server may be running: WAL lets us read beside it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(event_ids))
        rows = conn.execute(
            f"SELECT event_id, count(*) FROM events WHERE event_id IN ({marks}) GROUP BY event_id",
            list(event_ids),
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)

"""Helpers for collector tests: run ``llmtally serve`` as a real subprocess, build events."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from llmtally._ids import new_event_id
from llmtally.events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed, to_wire

from ..pipes import PipeReader

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
    """A running ``llmtally serve`` process; ``output`` reads its stdout and stderr (also
    copied to ``log``)."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    db: Path
    log: Path
    output: PipeReader

    def log_text(self) -> str:
        return self.output.text()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (killed after ``timeout``) and the end of
        its output (so ``log_text()`` holds the last lines)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"collector ignored SIGTERM; log:\n{self.log_text()}") from None
        self.output.wait_closed(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown at all. Returns once the process is gone."""
        self.proc.kill()
        self.proc.wait()
        self.output.wait_closed(15.0)


READY_LINE = "Uvicorn running on"
"""What uvicorn logs (level info, the default) once the collector's lifespan has started
(the database is open) and its socket listens."""


def start_collector(
    workdir: Path,
    *extra: str,
    tokens: Mapping[str, str] = TOKEN_ENV,
    db: Path | None = None,
    port: int | None = None,
) -> Collector:
    """Start ``llmtally serve`` on ``port`` (default: a free loopback port); returns once
    it says it serves (``READY_LINE``: keep ``--log-level`` at info or lower)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db = db or workdir / "collector.db"
    log = workdir / f"collector-{port}.log"
    proc = subprocess.Popen(
        serve_command(db, port, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=base_env(tokens),
    )
    assert proc.stdout is not None
    output = PipeReader(proc.stdout, name=f"llmtally serve on port {port}", tee=log)
    collector = Collector(proc, f"http://127.0.0.1:{port}", port, db, log, output)
    try:
        output.wait_for(READY_LINE, STARTUP_TIMEOUT_S)
    except AssertionError:
        if proc.poll() is None:
            collector.kill()
        raise AssertionError(
            f"collector did not start (exit code {proc.returncode}); log:\n{collector.log_text()}"
        ) from None
    return collector


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

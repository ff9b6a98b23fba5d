"""``llmtally serve`` as a process: start-up refusals, insecure mode, SIGTERM."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx2
import pytest

from llmtally.cli import build_parser, main

from .collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    base_env,
    body,
    free_port,
    serve_command,
    start_collector,
    stored_id_counts,
    wire_batch,
    wire_event,
)

JSON = {"Content-Type": "application/json"}


def run_serve(
    db: Path | str, *extra: str, tokens: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(db, free_port(), *extra),
        env=base_env(tokens),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def test_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    result = run_serve(tmp_path / "c.db", tokens={"LLMTALLY_READ_TOKENS": " , "})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no API tokens configured" in lines[0]
    assert "--insecure-no-auth" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c.db").exists()


def test_unreachable_postgres_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    url = "postgresql://u:s3cret@127.0.0.1:1/db"
    result = run_serve(url, tokens={"LLMTALLY_INGEST_TOKENS": "t"})
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "postgresql://u:***@127.0.0.1:1/db" in result.stderr  # the password never shows
    assert "s3cret" not in result.stderr


def test_unusable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    result = run_serve(not_a_db, tokens={"LLMTALLY_INGEST_TOKENS": "t"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot open database" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["serve", "--port", "0"], id="port-zero"),
        pytest.param(["serve", "--max-body-bytes", "lots"], id="not-a-number"),
        pytest.param(["serve", "--anomaly-sensitivity", "0"], id="sensitivity-zero"),
        pytest.param(["serve", "--anomaly-sensitivity", "nan"], id="sensitivity-nan"),
        pytest.param(["serve", "--detect-interval", "-1"], id="negative-interval"),
        pytest.param(["bogus"], id="unknown-command"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_help_lists_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 8088)" in out
    assert "LLMTALLY_INGEST_TOKENS" in out
    assert "--detect-interval" in out
    assert "--anomaly-sensitivity" in out


def test_detector_flags_and_their_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.detect_interval, args.anomaly_sensitivity) == (60, 5.0)
    args = build_parser().parse_args(
        ["serve", "--detect-interval", "0", "--anomaly-sensitivity", "6.5"]
    )
    assert (args.detect_interval, args.anomaly_sensitivity) == (0, 6.5)


def test_writer_flag_and_its_default() -> None:
    assert build_parser().parse_args(["serve"]).writer == "thread"
    assert build_parser().parse_args(["serve", "--writer", "process"]).writer == "process"


@pytest.mark.asyncio
@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_each_writer_dedupes_and_answers_503_when_locked(tmp_path: Path, writer: str) -> None:
    collector = start_collector(tmp_path, "--writer", writer, "--busy-timeout-ms", "100")
    try:
        events = wire_batch(6)
        async with httpx2.AsyncClient(
            base_url=collector.url,
            timeout=10.0,
            headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        ) as client:
            r = await client.post(EVENTS_PATH, content=body([*events[:4], events[0]]), headers=JSON)
            assert r.json() == {"accepted": 4, "duplicates": 1, "rejected": []}
            conn = sqlite3.connect(collector.db, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")
                busy = await client.post(EVENTS_PATH, content=body(events), headers=JSON)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1"
            r = await client.post(EVENTS_PATH, content=body(events), headers=JSON)
            assert r.json() == {"accepted": 2, "duplicates": 4, "rejected": []}
    finally:
        assert collector.terminate() == 0, collector.log_text()
    ids = [e["event_id"] for e in events]
    assert stored_id_counts(collector.db, ids) == dict.fromkeys(ids, 1)


@pytest.mark.asyncio
async def test_insecure_no_auth_opens_every_endpoint_and_warns(tmp_path: Path) -> None:
    # The detector flags too: a pass every second must not disturb serving or SIGTERM.
    collector = start_collector(
        tmp_path,
        "--insecure-no-auth",
        "--detect-interval",
        "1",
        "--anomaly-sensitivity",
        "6",
        tokens={},
    )
    try:
        async with httpx2.AsyncClient(base_url=collector.url, timeout=10.0) as client:
            r = await client.post(EVENTS_PATH, content=body(wire_batch(2)), headers=JSON)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2
    finally:
        assert collector.terminate() == 0
    assert "INSECURE" in collector.log_text()


@pytest.mark.asyncio
async def test_sigterm_exits_0_with_a_sound_database_and_no_prompt(tmp_path: Path) -> None:
    secret = "PROMPT-7d1e-do-not-store-me"
    collector = start_collector(tmp_path)
    try:
        events = [wire_event(i, prompt=secret, messages=[{"content": secret}]) for i in range(20)]
        async with httpx2.AsyncClient(
            base_url=collector.url,
            timeout=10.0,
            headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        ) as client:
            r = await client.post(EVENTS_PATH, content=body(events), headers=JSON)
        assert r.json() == {"accepted": 20, "duplicates": 0, "rejected": []}
    finally:
        code = collector.terminate()
    assert code == 0, collector.log_text()
    assert "storage closed" in collector.log_text()

    check_closed_database(collector.db, [e["event_id"] for e in events], secret)


def check_closed_database(db: Path, ids: list[str], secret: str) -> None:
    """Each id stored once, the file sound, and ``secret`` in none of its files."""
    assert stored_id_counts(db, ids) == dict.fromkeys(ids, 1)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert db in files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path

"""``llmtally export`` against a real SQLite file and a real collector process."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from llmtally import EventStore
from llmtally.cli import main
from tests.server.collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    READ_TOKEN,
    Collector,
    base_env,
    free_port,
    start_collector,
    wire_batch,
    wire_event,
)

T0_MS = 1_700_000_000_000
FORMULA = '=HYPERLINK("http://evil.example","click")'


def _llmtally(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtally", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else base_env({}),
    )


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def _make_store_db(path: Path) -> None:
    clock = iter(range(T0_MS, T0_MS + 1_000))
    async with EventStore(path, clock=lambda: next(clock)) as store:
        for i in range(30):
            await store.record_llm_completed(
                "gpt-4o-mini" if i % 3 else "claude-3-5-haiku-20241022",
                100 + i,
                10,
                agent_id="alice" if i % 2 else "bob",
            )
        await store.record_llm_failed(
            "gpt-4o-mini", error_code="bad_request", error_message=FORMULA, agent_id="@evil"
        )


@pytest.fixture
async def store_db(tmp_path: Path) -> Path:
    db = tmp_path / "router.db"
    await _make_store_db(db)
    return db


# --- from a SQLite file -------------------------------------------------------------------


def test_csv_from_a_file_is_complete_and_formula_safe(tmp_path: Path, store_db: Path) -> None:
    out = _llmtally("export", "--db", str(store_db), "--start", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = _csv_rows(out.stdout)
    requests = [r for r in rows if r["event_type"].startswith("llm_")]
    assert len(requests) == 31
    (failed,) = [r for r in rows if r["success"] == "false"]
    assert failed["error_message"] == "'" + FORMULA  # a spreadsheet shows it as text
    assert failed["agent_id"] == "'@evil"


def test_filters_formats_and_iso_times_from_a_file(tmp_path: Path, store_db: Path) -> None:
    base = ["export", "--db", str(store_db), "--start", "2023-11-14T22:13:20Z"]
    jsonl = _llmtally(*base, "--format", "jsonl", "--model", "gpt-4o-mini", cwd=tmp_path)
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(records) == 21 and {r["model"] for r in records} == {"gpt-4o-mini"}
    assert records[0]["error_message"] is None  # JSON stays exact
    array = _llmtally(*base, "--format", "json", "--agent", "alice", "-o", "a.json", cwd=tmp_path)
    assert array.returncode == 0 and array.stdout == "", array.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert len(data) == 15 and {r["agent_id"] for r in data} == {"alice"}
    assert not (tmp_path / "a.json.partial").exists()
    # the range is half-open: end at the 10th event's second excludes it and later ones
    early = _llmtally(*base, "--end", str(T0_MS // 1000), "--format", "jsonl", cwd=tmp_path)
    assert early.returncode == 0 and early.stdout == ""


def test_progress_goes_to_stderr_and_leaves_stdout_exact(tmp_path: Path, store_db: Path) -> None:
    plain = _llmtally("export", "--db", str(store_db), "--start", "0", cwd=tmp_path)
    shown = _llmtally("export", "--db", str(store_db), "--start", "0", "--progress", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == plain.stdout
    assert "exporting" in shown.stderr and "rows" in shown.stderr


# --- from a collector ---------------------------------------------------------------------


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    running = start_collector(tmp_path / "collector")
    try:
        events = [
            *wire_batch(20),
            wire_event(20, error_message=FORMULA, agent_id="=cmd|' /C calc'!A0"),
        ]
        answer = httpx2.post(
            running.url + EVENTS_PATH,
            json={"events": events},
            headers={"authorization": f"Bearer {INGEST_TOKEN}"},
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 21, answer.text
        yield running
    finally:
        assert running.terminate() == 0


def test_csv_from_a_collector_is_formula_safe(tmp_path: Path, collector: Collector) -> None:
    env = base_env({"LLMTALLY_TOKEN": READ_TOKEN})
    args = ["export", "--url", collector.url, "--start", "1699999999", "--end", "1700000100"]
    out = _llmtally(*args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    rows = _csv_rows(out.stdout)
    assert len(rows) == 21
    evil = [r for r in rows if r["error_message"].endswith(FORMULA)]
    assert len(evil) == 1
    assert evil[0]["error_message"] == "'" + FORMULA
    assert evil[0]["agent_id"].startswith("'=")
    only = _llmtally(
        *args, "--format", "jsonl", "--model", "gpt-4o-mini", "--token", READ_TOKEN, cwd=tmp_path
    )
    assert only.returncode == 0, only.stderr
    models = {json.loads(line)["model"] for line in only.stdout.splitlines()}
    assert models == {"gpt-4o-mini"}


def test_a_refused_token_is_one_line(tmp_path: Path, collector: Collector) -> None:
    out = _llmtally("export", "--url", collector.url, "--token", "wrong", cwd=tmp_path)
    assert out.returncode == 1
    assert (
        out.stderr
        == "llmtally: error: export: the collector answered 401 (the token was refused)\n"
    )
    assert "wrong" not in out.stderr
    none = _llmtally("export", "--url", collector.url, cwd=tmp_path)
    assert none.returncode == 1 and "no token" in none.stderr


# --- errors: one line, exit 2 for usage and 1 for failure, never a traceback --------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--db", "missing.db"], 1, "no database at missing.db", id="missing-db"),
        pytest.param(["--db", "not-sqlite.db"], 1, "cannot open database", id="not-sqlite"),
        pytest.param(
            ["--url", "http://127.0.0.1:{port}"], 1, "cannot export from", id="unreachable"
        ),
        pytest.param(["--url", "ftp://x"], 2, "--url must be an http(s) URL", id="bad-url"),
        pytest.param(["--db", "x.db", "--format", "xml"], 2, "invalid choice", id="bad-format"),
        pytest.param(
            ["--db", "x.db", "--url", "http://x"], 2, "not allowed with", id="two-sources"
        ),
        pytest.param([], 2, "one of the arguments --url --db is required", id="no-source"),
        pytest.param(
            ["--db", "x.db", "--start", "yesterday"], 2, "not unix seconds", id="bad-time"
        ),
        pytest.param(
            ["--db", "not-sqlite.db", "--start", "200", "--end", "100"],
            2,
            "--end must not be before --start",
            id="end-before-start",
        ),
    ],
)
def test_export_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTALLY_TOKEN", raising=False)
    (tmp_path / "not-sqlite.db").write_text("this is not a database\n" * 100)
    args = [a.replace("{port}", str(free_port())) for a in args]
    assert main(["export", *args]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("llmtally: error: export: ")


@pytest.mark.parametrize("command", ["serve", "demo", "stats", "export"])
def test_help_explains_every_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    options = out.split("options:")[1].split("\n  -")[1:]
    assert len(options) >= 2
    for option in options:  # "-name METAVAR   help..." (help may wrap to the next line)
        words = option.split()[1:]
        assert any(w.islower() for w in words), f"{command}: an option without help: {option}"

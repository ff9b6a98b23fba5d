"""The command line: stats, export and errors (serve: tests/server; demo: tests/demo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmtally import EventStore
from llmtally.cli import main


def _llmtally(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtally.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_stats_reads_a_store_database(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "d" / "analytics.db") as store:
        await store.record_llm_completed("gpt-4o-mini", 1_000, 100, agent_id="a")
        await store.record_llm_completed("acme-internal-7b", 10, 1, agent_id="b")
        await store.record_llm_failed("claude-3-5-haiku-20241022", error_code="overloaded")
    stats = _llmtally("stats", "--db", "d/analytics.db", "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert (data["total_requests"], data["failed_requests"]) == (3, 1)
    assert data["unpriced_requests"] == 1
    assert sum(m["requests"] for m in data["by_model"].values()) == 3
    tables = _llmtally("stats", "--db", "d/analytics.db", cwd=tmp_path)
    assert tables.returncode == 0, tables.stderr
    assert "3 requests" in tables.stdout and "By model" in tables.stdout


def test_stats_on_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = _llmtally("stats", "--db", "missing.db", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "llmtally: error: stats: no database at missing.db"
    assert not (tmp_path / "missing.db").exists()


def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    result = _llmtally("demo", "--requests", "lots", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert _llmtally("--help", cwd=tmp_path).returncode == 0


def test_demo_usage_and_folder_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--requests", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["demo", "--duration", "-3"]) == 2
    assert "between 0 and 86400" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["demo", "--requests", "5", "--dir", "a-file"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmtally: error: demo: cannot use --dir a-file") and err.count("\n") == 1

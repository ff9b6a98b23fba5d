"""The command line: demo and stats (serve has its own tests in tests/server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _llmtally(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtally.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_records_a_workload_and_stats_reads_it_back(tmp_path: Path) -> None:
    demo = _llmtally("demo", "--requests", "400", "--dir", "d", "--fresh", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "400 requests" in demo.stdout
    assert "By model" in demo.stdout
    assert "dropped events: 0" in demo.stdout
    stats = _llmtally("stats", "--db", "d/analytics.db", "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["total_requests"] == 400
    assert data["failed_requests"] > 0
    assert data["unpriced_requests"] > 0  # the demo's in-house model has no price
    assert sum(m["requests"] for m in data["by_model"].values()) == 400


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

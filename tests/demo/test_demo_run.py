"""``llmtally demo`` as a user runs it: real processes on loopback, then the numbers.

Each run carries a marker in its environment; afterwards no process on the machine may
still carry it (no orphaned child, whatever ended the demo).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest

from ..pipes import PipeReader

pytestmark = pytest.mark.slow


def _demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmtally", "demo", *args]


def _env(marker: str) -> dict[str, str]:
    return {**os.environ, "LLMTALLY_DEMO_TEST_MARKER": marker, "COLUMNS": "160"}


def _processes_with(marker: str) -> list[int]:
    found = []
    needle = f"LLMTALLY_DEMO_TEST_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
    return found


def _wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """The processes still carrying ``marker`` once those found now have ended (at most
    ``timeout`` s): a pidfd of each becomes readable when it exits, child of ours or not."""
    fds = []
    for pid in _processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    try:
        exits = select.poll()
        for fd in fds:
            exits.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        running = len(fds)
        while running and (left := deadline - time.monotonic()) > 0:
            for fd, _ in exits.poll(left * 1000):
                exits.unregister(fd)
                running -= 1
    finally:
        for fd in fds:
            os.close(fd)
    return _processes_with(marker)  # an ended process's environ reads empty


def _summary(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return data


def test_a_short_run_is_consistent_end_to_end(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    folder = tmp_path / "demo"
    run = subprocess.run(
        _demo_command("--requests", "300", "--concurrency", "16", "--dir", str(folder)),
        env=_env(marker),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    s = _summary(folder)
    stats, sync, clients = s["stats"], s["sync"], s["clients"]

    # every call sent was answered, recorded once, and is held once by the collector
    assert clients["sent"] == 300 and not clients["errors"]
    assert sum(clients["statuses"].values()) == 300
    assert stats["total_requests"] == 300 == sync["collector_events"]
    assert sync["accepted"] == 300
    assert sync["dropped"] == sync["rejected"] == sync["unsynced"] == sync["ingest_dropped"] == 0
    assert s["consistent"] is True
    conn = sqlite3.connect(folder / "collector.db")
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchone()
    finally:
        conn.close()
    assert rows == distinct == 300

    # the workload's shape shows in the numbers
    assert {"openai", "anthropic"} <= set(stats["by_provider"])
    assert set(stats["by_agent"]) == {"support-bot", "research-agent"}
    assert len(stats["by_model"]) >= 5
    assert stats["total_cached_input_tokens"] > 0
    assert 0 < stats["failed_requests"] == s["total_errors"]
    assert len({p["error_type"] for p in s["error_patterns"]}) >= 3
    failed_answers = sum(n for code, n in clients["statuses"].items() if code != "200")
    assert failed_answers <= stats["failed_requests"]  # broken streams answer 200
    assert stats["unpriced_requests"] > 0  # the in-house model has no price
    budgets = {b["scope_value"]: b for b in s["budgets"]}
    assert budgets["support-bot"]["thresholds_reached"] == [50, 80]
    assert budgets["research-agent"]["thresholds_reached"] == []
    assert s["slo"]["requests"] == 300

    # the terminal summary says the same
    out = run.stdout
    assert "300 requests" in out and "By model" in out and "Top error patterns" in out
    assert "held by the collector" in out and s["read_token"] in out
    assert s["dashboard_url"] == f"{s['collector_url']}/?token={s['read_token']}"
    assert f"dashboard: {s['dashboard_url']}" in out
    given = json.loads((folder / "budgets.json").read_text())["budgets"]
    assert [(b["id"], b["scope_value"]) for b in given] == [
        (b["budget_id"], b["scope_value"]) for b in s["budgets"]
    ]
    assert not _wait_gone(marker)


def test_keep_serving_serves_the_collector_until_ctrl_c(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    folder = tmp_path / "demo"
    proc = subprocess.Popen(
        _demo_command("--requests", "60", "--keep-serving", "--dir", str(folder)),
        env=_env(marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = PipeReader(proc.stdout, name="llmtally demo's stdout")
    stderr = PipeReader(proc.stderr, name="llmtally demo's stderr")
    try:
        # Printed after the summary (and summary.json) is written, the collector up.
        stdout.wait_for("Ctrl-C to stop", 60)
        s = _summary(folder)
        read = {"authorization": f"Bearer {s['read_token']}"}
        stats = httpx2.get(s["collector_url"] + "/analytics/stats", headers=read)
        assert stats.status_code == 200 and stats.json()["total_events"] == 60
        assert httpx2.get(s["collector_url"] + "/analytics/stats").status_code == 401
        _collector_budgets_agree(s, read)
        _dashboard_link_signs_in(s)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = stdout.wait_closed(30), stderr.wait_closed(30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "Ctrl-C to stop" in out
    assert not _wait_gone(marker)


def _collector_budgets_agree(s: dict[str, Any], read: dict[str, str]) -> None:
    """The collector, given the router's budgets, finds the spend the router's store has."""
    router = {b["budget_id"]: b for b in s["budgets"]}
    assert len(router) == 2 and all(b["spent_nanos"] > 0 for b in router.values())
    keys = ("spent_nanos", "spent_micros", "limit_micros", "thresholds_reached", "period_start_ms")
    # The summary is made once the collector holds every event, and nobody asked for its
    # budgets before (it caches answers a few seconds): this first answer is computed now.
    answer = httpx2.get(s["collector_url"] + "/analytics/budgets", headers=read)
    assert answer.status_code == 200
    collector = {b["budget_id"]: b for b in answer.json()["budgets"]}
    assert collector.keys() == router.keys()
    for budget_id, b in router.items():
        assert {k: collector[budget_id][k] for k in keys} == {k: b[k] for k in keys}


def _dashboard_link_signs_in(s: dict[str, Any]) -> None:
    """The printed link trades its token for a session cookie; the page shows the budgets."""
    with httpx2.Client() as browser:
        signed_in = browser.get(s["dashboard_url"])
        assert signed_in.status_code == 303
        assert "token=" not in signed_in.headers["location"]
        page = browser.get(s["collector_url"] + "/")
    assert page.status_code == 200
    for b in s["budgets"]:
        row = re.search(rf'<tr data-budget="{re.escape(b["budget_id"])}"[^>]*>', page.text)
        assert row is not None
        assert f'data-spent-micros="{b["spent_micros"]}"' in row[0]


def test_ctrl_c_during_the_run_stops_early_and_cleanly(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    folder = tmp_path / "demo"
    # On a terminal the demo shows its progress (``requests ━━━ 63/100000``), read from
    # the pty's master: Ctrl-C once requests have been recorded.
    master, terminal = os.openpty()
    try:
        proc = subprocess.Popen(
            _demo_command("--requests", "100000", "--dir", str(folder)),
            env={**_env(marker), "TERM": "xterm-256color"},
            stdout=terminal,
            stderr=subprocess.PIPE,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(terminal)
    assert proc.stderr is not None
    stdout = PipeReader(master, name="llmtally demo's terminal")
    stderr = PipeReader(proc.stderr, name="llmtally demo's stderr")
    try:
        stdout.wait_for(re.compile(r"(?<!\d)[1-9]\d*/100000"), 60)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = stdout.wait_closed(30), stderr.wait_closed(30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    s = _summary(folder)
    assert s["clients"]["stopped_early"] is True
    assert 0 < s["clients"]["sent"] < 100_000
    assert s["consistent"] is True  # what was sent was recorded and synced
    assert "stopped early" in out
    assert not _wait_gone(marker)

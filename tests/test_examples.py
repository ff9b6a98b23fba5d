"""Every example in examples/ and every Python block of the README runs."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.pipes import PipeReader
from tests.server.collector import READY_LINE, free_port, start_collector

ROOT = Path(__file__).resolve().parent.parent
_SERVED_APP = re.compile(r"^app = Starlette\(", re.M)  # a module-level app: served by uvicorn
README_BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    if not _SERVED_APP.search(block)  # an ASGI app: served by uvicorn below
]
README_APPS = [
    block
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    if _SERVED_APP.search(block)
]


def test_quickstart_example_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "a.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    total, cost, ttft = out.split(" ", 2)
    assert total == "2"
    assert cost == "2"  # 11 x $0.15/MTok + 1 x $0.60/MTok = 2,250 nano-dollars -> 2 micro-dollars
    assert "Quantiles(" in ttft


@pytest.mark.parametrize(
    "block", README_BLOCKS, ids=[f"block-{i}" for i in range(len(README_BLOCKS))]
)
def test_readme_python_blocks_run(tmp_path: Path, block: str) -> None:
    env = dict(os.environ)
    collector = None
    upstream = None
    if "SyncConfig" in block:  # the sync example talks to a real collector
        collector = start_collector(
            tmp_path / "collector", tokens={"LLMTALLY_INGEST_TOKENS": "router-secret"}
        )
        env["LLMTALLY_COLLECTOR_URL"] = collector.url
    if "AsyncOpenAI" in block:  # the SDK example talks to the demo's fake OpenAI API
        upstream = subprocess.Popen(
            [sys.executable, "-m", "llmtally.demo.child", "upstream"],
            stdin=subprocess.PIPE,  # its lifeline: closing it stops the child
            stdout=subprocess.PIPE,
            text=True,
        )
        assert upstream.stdout is not None
        env["OPENAI_BASE_URL"] = upstream.stdout.readline().strip() + "/v1"
        env["OPENAI_API_KEY"] = "sk-test"
    try:
        out = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        if collector is not None:
            assert collector.terminate() == 0
        if upstream is not None:
            upstream.communicate(timeout=30)  # closes stdin: the child stops
    if collector is not None:
        assert "accepted=1" in out, out
    if upstream is not None:
        tokens, requests, by_model = out.split(" ", 2)
        assert int(tokens) > 0
        assert requests == "2", out  # the plain call and the stream: one event each
        assert "gpt-4o-mini" in by_model


@pytest.mark.parametrize("block", README_APPS, ids=[f"app-{i}" for i in range(len(README_APPS))])
def test_readme_router_app_serves_and_records(tmp_path: Path, block: str) -> None:
    """The README's router example under a real uvicorn: one request, one event on disk."""
    (tmp_path / "router.py").write_text(block)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "router:app",
            "--port",
            str(port),
            "--log-level",
            "info",  # for its readiness line
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = PipeReader(proc.stdout, name="the README's router under uvicorn")
    try:
        output.wait_for(READY_LINE, 30)  # logged once the lifespan ran and it listens
        answer = httpx2.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": []},
            headers={"x-agent-id": "agent-7"},
            timeout=5.0,
        )
        assert answer.status_code == 200
        event_id = answer.json()["id"]
        assert event_id
    finally:
        proc.send_signal(signal.SIGTERM)  # the lifespan drains the store on shutdown
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = output.wait_closed(30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), out
    with sqlite3.connect(tmp_path / "router-analytics.db") as db:
        rows = db.execute("SELECT event_id, model, agent_id FROM events").fetchall()
    assert rows == [(event_id, "gpt-4o-mini", "agent-7")]


def test_otel_example_exports_through_the_global_providers(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "otel_export.py"), str(tmp_path / "a.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines()[0] == "exported=3 dropped=0"
    for name in (
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "llmtally.cost",
        "chat gpt-4o-mini",  # spans, printed at exit by the BatchSpanProcessor
        "chat claude-sonnet-4-5",
    ):
        assert f'"name": "{name}"' in out, name
    assert '"error.type": "rate_limited"' in out

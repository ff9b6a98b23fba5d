"""``llmtally tail`` as a process against a real ``llmtally serve``: output (requests and
anomalies), filters, reconnection after a collector restart, Ctrl-C, and one-line
errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import msgspec
import pytest

from llmtally.analysis.anomaly import Finding
from llmtally.cli import main
from llmtally.events import AnalyticsEvent, decode_wire_event, from_wire
from llmtally.query.anomalies import live_anomaly, record_of_anomaly
from llmtally.server.app import create_app
from llmtally.server.auth import Auth, Scope
from llmtally.server.detector import anomaly_event
from llmtally.server.live import LiveHub
from llmtally.storage.sqlite import SqliteStorage
from llmtally.tail_command import SseEvent, format_anomaly_line, iter_sse

from .integrations.serving import serve
from .server.collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    READ_TOKEN,
    STARTUP_TIMEOUT_S,
    TOKEN_ENV,
    Collector,
    base_env,
    free_port,
    serve_command,
    start_collector,
    wire_event,
)

DEADLINE_S = 20.0


def test_iter_sse_follows_the_event_stream_format() -> None:
    lines = [
        ": keepalive",
        "",
        "id: 1",
        "event: event",
        'data: {"a":1}',
        "",
        "data: two",
        "data: lines",
        "",
        "id: 2",  # no data: not dispatched
        "",
        "event: other\r\n",
        "data:no-space",
        "",
    ]
    assert list(iter_sse(lines)) == [
        SseEvent("1", "event", '{"a":1}'),
        SseEvent("1", "message", "two\nlines"),
        SseEvent("2", "other", "no-space"),
    ]


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    server = start_collector(tmp_path_factory.mktemp("tail"))
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.log_text()


@pytest.fixture
def idle(collector: Collector) -> Collector:
    """The shared collector once the previous test's tail has unsubscribed."""
    wait_for_subscribers(collector.url, 0)
    return collector


def tail(*args: str, token: str | None = READ_TOKEN) -> subprocess.Popen[str]:
    """``llmtally tail`` as a process. Tests wait for it to subscribe, then post events."""
    env = base_env({"LLMTALLY_TOKEN": token} if token else {})
    return subprocess.Popen(
        [sys.executable, "-m", "llmtally.cli", "tail", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def subscribers(url: str) -> int:
    text = httpx2.get(
        url + "/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=5
    ).text
    line = next(x for x in text.splitlines() if x.startswith("llmtally_live_subscribers "))
    return int(float(line.split()[1]))


def wait_for_subscribers(url: str, n: int, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while subscribers(url) != n:  # polling an observable condition, bounded
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"live subscribers did not reach {n}"
        time.sleep(0.05)


def wait_for_subscriber(url: str, proc: subprocess.Popen[str]) -> None:
    wait_for_subscribers(url, 1, proc)


def post(url: str, events: list[dict[str, Any]]) -> None:
    r = httpx2.post(
        url + EVENTS_PATH,
        json={"events": events},
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        timeout=10,
    )
    assert r.json()["accepted"] == len(events)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"tail did not exit; stderr:\n{err}") from None
    return proc.returncode, out, err


def now_event(i: int, **overrides: Any) -> dict[str, Any]:
    return wire_event(i, timestamp_ms=int(time.time() * 1000), **overrides)


def test_json_lines_with_a_filter(idle: Collector) -> None:
    collector = idle
    proc = tail("--url", collector.url, "--json", "--provider", "openai", "--max-events", "3")
    wait_for_subscriber(collector.url, proc)
    events = [now_event(i) for i in range(6)]  # odd ones are openai
    post(collector.url, events)
    code, out, err = finish(proc)
    assert code == 0, err
    lines = out.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [
        events[i]["event_id"] for i in (1, 3, 5)
    ]
    assert json.loads(lines[0]) == {k: v for k, v in events[1].items() if v is not None}
    assert "Traceback" not in err


def test_rich_lines(idle: Collector) -> None:
    collector = idle
    proc = tail("--url", collector.url, "--max-events", "2")
    wait_for_subscriber(collector.url, proc)
    post(collector.url, [now_event(1, agent_id="agent-x"), now_event(6)])  # 6 fails: 429
    code, out, err = finish(proc)
    assert code == 0, err
    ok, failed = out.splitlines()
    for text in ("ok", "gpt-4o-mini", "openai", "agent-x", "101 ms", "$0.001235"):
        assert text in ok
    assert "failed 429 rate_limited" in failed
    assert "claude-3-5-sonnet" in failed
    assert "\x1b[" not in out  # not a terminal: no colour codes


def spike(value: str = "gpt-4o-mini") -> AnalyticsEvent:
    """A request-rate spike of ``value`` (a model), as the detector stores it."""
    minute = 1_800_000_000_000  # 2027-01-15 08:00 UTC
    return anomaly_event("model", value, minute, Finding("request_rate", "spike", 180, 30.5, 9.25))


def test_anomaly_lines() -> None:
    record = live_anomaly(spike())
    assert record is not None
    cells = format_anomaly_line(record)
    assert [text for text, _ in cells] == [
        "08:00:00.000",
        "anomaly ",
        "▲ spike of request rate",
        "model=gpt-4o-mini",
        "180/min (baseline 30.5/min)",
        "z +9.2",
    ]
    drop = msgspec.structs.replace(
        record, kind="drop", metric="cost_rate", observed=2_000, baseline=90_500, window_minutes=5
    )
    assert [text for text, _ in format_anomaly_line(drop)][2:5] == [
        "▼ drop of cost rate",
        "model=gpt-4o-mini",
        "$0.000002/min over 5 min (baseline $0.000091/min)",
    ]


async def test_tail_prints_anomalies_as_they_are_published(tmp_path: Path) -> None:
    """``tail`` (the process) against a real collector app whose hub publishes an
    anomaly (as the detector does) and a request: one readable line each, and with
    ``--json`` the anomaly's JSON unchanged."""
    hub = LiveHub()
    app = create_app(
        SqliteStorage(tmp_path / "t.db"),
        auth=Auth({READ_TOKEN: Scope.READ}),
        own_storage=True,
        live=hub,
        detect_interval_s=None,
    )
    request = from_wire(decode_wire_event(json.dumps(now_event(6))))  # failed: 429
    async with serve(app, lifespan="on") as url:
        for args in ([], ["--json"]):
            proc = tail("--url", url, "--max-events", "2", *args)
            with anyio.fail_after(DEADLINE_S):
                while hub.subscriber_count == 0:
                    assert proc.poll() is None, proc.communicate()
                    await anyio.sleep(0.02)
            hub.publish([spike(), request])
            code, out, err = await anyio.to_thread.run_sync(finish, proc)
            assert code == 0, err
            first, second = out.splitlines()
            if args:
                assert json.loads(first) == {
                    "event_type": "anomaly_detected",
                    **msgspec.to_builtins(record_of_anomaly(spike())),
                }
                assert json.loads(second)["event_id"] == request.event_id
            else:
                assert first == (
                    "08:00:00.000  anomaly   ▲ spike of request rate  model=gpt-4o-mini  "
                    "180/min (baseline 30.5/min)  z +9.2"
                )
                assert "failed 429 rate_limited" in second
            with anyio.fail_after(DEADLINE_S):
                while hub.subscriber_count:  # noqa: ASYNC110 - a counter, no event
                    await anyio.sleep(0.02)
        hub.close()


def test_reconnects_after_a_collector_restart(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "restart.db"

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            serve_command(db, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=base_env(TOKEN_ENV),
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:  # bounded readiness poll of a subprocess
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return proc
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "collector did not start"
            time.sleep(0.05)

    url = f"http://127.0.0.1:{port}"
    server = start()
    follower = tail("--url", url, "--json", "--max-events", "2", "--max-backoff", "1")
    try:
        wait_for_subscriber(url, follower)
        first = now_event(1)
        post(url, [first])
        server.send_signal(signal.SIGTERM)  # the stream ends; tail reconnects
        assert server.wait(15) == 0
        server = start()
        wait_for_subscriber(url, follower)
        second = now_event(2)
        post(url, [second])
        code, out, err = finish(follower)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(15)
    assert code == 0, err
    assert [json.loads(x)["event_id"] for x in out.splitlines()] == [
        first["event_id"],
        second["event_id"],
    ]
    assert "reconnecting in" in err


def test_ctrl_c_exits_0(idle: Collector) -> None:
    collector = idle
    proc = tail("--url", collector.url)
    wait_for_subscriber(collector.url, proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "token",
    [pytest.param("wrong-token", id="wrong-token"), pytest.param(None, id="no-token")],
)
def test_a_refused_token_is_one_line(collector: Collector, token: str | None) -> None:
    proc = tail("--url", collector.url, token=token)
    got, out, err = finish(proc)
    code, message = 1, "refused the token (401)"
    assert got == code
    assert message in err
    assert "Traceback" not in err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--url", "ftp://x"], "--url must be an http", id="bad-url"),
        pytest.param(["--max-events", "0"], "must be at least 1", id="bad-max-events"),
        pytest.param(["--idle-timeout", "inf"], "must be a positive number", id="bad-timeout"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tail", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_nothing_listening_is_one_line() -> None:
    proc = tail("--url", f"http://127.0.0.1:{free_port()}")
    code, _, err = finish(proc)
    assert code == 1
    assert "cannot connect to" in err
    assert len(err.strip().splitlines()) == 1, err

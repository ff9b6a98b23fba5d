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
from dataclasses import dataclass
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
from llmtally.storage.sqlite import SqliteStorage
from llmtally.tail_command import SseEvent, format_anomaly_line, iter_sse

from .integrations.serving import serve
from .pipes import PipeReader
from .server.collector import (
    EVENTS_PATH,
    INGEST_TOKEN,
    READ_TOKEN,
    Collector,
    base_env,
    free_port,
    start_collector,
    wire_event,
)
from .server.watched_hub import WatchedHub

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


@dataclass
class Tail:
    """A running ``llmtally tail`` and its output, read as it comes."""

    proc: subprocess.Popen[bytes]
    stdout: PipeReader
    stderr: PipeReader

    def following(self) -> None:
        """Wait until it says it follows the stream: it got the response's headers, and
        the collector subscribes it before sending them (so no event posted from now on
        is missed). Once per connection: after a reconnection, wait again."""
        self.stderr.wait_for(FOLLOWING, DEADLINE_S)


FOLLOWING = "llmtally tail: following "


def _sigint_as_at_a_terminal() -> None:
    """Ctrl-C's default action, as a terminal's foreground job has it: a test run started
    in the background of a shell without job control inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tail(*args: str, token: str | None = READ_TOKEN) -> Tail:
    """``llmtally tail`` as a process. Tests wait for it to subscribe, then post events."""
    env = base_env({"LLMTALLY_TOKEN": token} if token else {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmtally.cli", "tail", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_sigint_as_at_a_terminal,
    )
    assert proc.stdout is not None and proc.stderr is not None
    return Tail(
        proc,
        PipeReader(proc.stdout, name="llmtally tail's stdout"),
        PipeReader(proc.stderr, name="llmtally tail's stderr"),
    )


def post(url: str, events: list[dict[str, Any]]) -> None:
    r = httpx2.post(
        url + EVENTS_PATH,
        json={"events": events},
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        timeout=10,
    )
    assert r.json()["accepted"] == len(events)


def finish(t: Tail) -> tuple[int, str, str]:
    try:
        code = t.proc.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        t.proc.kill()
        t.proc.wait()
        raise AssertionError(f"tail did not exit; stderr:\n{t.stderr.text()}") from None
    return code, t.stdout.wait_closed(DEADLINE_S), t.stderr.wait_closed(DEADLINE_S)


def now_event(i: int, **overrides: Any) -> dict[str, Any]:
    return wire_event(i, timestamp_ms=int(time.time() * 1000), **overrides)


def test_json_lines_with_a_filter(collector: Collector) -> None:
    proc = tail("--url", collector.url, "--json", "--provider", "openai", "--max-events", "3")
    proc.following()
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


def test_rich_lines(collector: Collector) -> None:
    proc = tail("--url", collector.url, "--max-events", "2")
    proc.following()
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
    hub = WatchedHub()
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
            await anyio.to_thread.run_sync(proc.following)
            assert hub.subscriber_count == 1
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
                await hub.released()  # the tail left: its subscription is released
            assert hub.subscriber_count == 0
        hub.close()


def test_reconnects_after_a_collector_restart(tmp_path: Path) -> None:
    server = start_collector(tmp_path)
    url = server.url
    follower = tail("--url", url, "--json", "--max-events", "2", "--max-backoff", "1")
    try:
        follower.following()
        first = now_event(1)
        post(url, [first])
        assert server.terminate() == 0, server.log_text()  # the stream ends; tail reconnects
        server = start_collector(tmp_path, db=server.db, port=server.port)
        follower.following()
        second = now_event(2)
        post(url, [second])
        code, out, err = finish(follower)
    finally:
        assert server.terminate() == 0, server.log_text()
    assert code == 0, err
    assert [json.loads(x)["event_id"] for x in out.splitlines()] == [
        first["event_id"],
        second["event_id"],
    ]
    assert "reconnecting in" in err


def test_ctrl_c_exits_0(collector: Collector) -> None:
    proc = tail("--url", collector.url)
    proc.following()
    proc.proc.send_signal(signal.SIGINT)
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

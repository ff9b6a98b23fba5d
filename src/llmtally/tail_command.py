"""``llmtally tail``: follow a collector's live events (``GET /analytics/live``).

Prints each event the collector newly stores, and each anomaly its detector finds, as
one line (rich) or, with ``--json``, as the stream's JSON unchanged (one object per line;
an anomaly's has ``"event_type": "anomaly_detected"``). Reconnects after a dropped connection
with exponential backoff (0.5 s doubling to ``--max-backoff``, ±50% jitter), sending
``Last-Event-ID`` so the collector can replay what was missed if it still has it. A
connection silent for ``--idle-timeout`` (no event, no keepalive) counts as dropped.

Exit codes: 0 after ``--max-events`` events or Ctrl-C; 1 when the collector cannot be
reached at the start, refuses the token, or is not a collector; 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TextIO
from urllib.parse import urlsplit

import httpx2
import msgspec

from . import _argtypes as _types
from ._anomaly_text import METRIC_LABELS, anomaly_value
from .events import WireEvent, decode_wire_event
from .query.anomalies import LiveAnomaly

__all__ = [
    "DEFAULT_URL",
    "LIVE_PATH",
    "SseEvent",
    "TailError",
    "add_arguments",
    "format_anomaly_line",
    "format_line",
    "iter_sse",
    "run",
]

DEFAULT_URL: Final = "http://127.0.0.1:8088"
LIVE_PATH: Final = "/analytics/live"
TOKEN_ENV: Final = "LLMTALLY_TOKEN"
INITIAL_BACKOFF_S: Final = 0.5
EVENT_TYPES: Final = ("llm_request_completed", "llm_request_failed", "anomaly_detected")
_FRAMES: Final = frozenset({"event", "anomaly"})
_decode_anomaly: Final = msgspec.json.Decoder(LiveAnomaly).decode
_RETRYABLE: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


class TailError(Exception):
    """A failure that ends ``tail`` with exit code 1 (the message is the one line shown)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event."""

    id: str | None
    event: str
    data: str


def iter_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-sent events from a stream's lines (the WHATWG event-stream format):
    ``field: value`` lines, ``:`` comments ignored, a blank line dispatches, multiple
    ``data`` lines are joined with newlines. An event without data is not dispatched."""
    event_id: str | None = None
    event = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event_id, event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            event_id = value


def _usd(micros: int) -> str:
    return f"${Decimal(micros) / 1_000_000:.6f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def format_line(e: WireEvent) -> list[tuple[str, str]]:
    """An event as ``(text, rich style)`` cells: time (UTC), status, model, provider,
    agent, latency, TTFT, tokens in→out and cost."""
    failed = e.event_type == "llm_request_failed"
    stamp = time.strftime("%H:%M:%S", time.gmtime(e.timestamp_ms / 1000))
    millis = f"{e.timestamp_ms % 1000:03d}"
    status = f"failed {e.status_code or ''} {e.error_code or ''}".strip() if failed else "ok"
    return [
        (f"{stamp}.{millis}", "dim"),
        (f"{status:<8}", "bold red" if failed else "green"),
        (f"{e.model:<24}", "cyan"),
        (f"{e.provider:<10}", ""),
        (f"{e.agent_id or '-':<12}", "magenta"),
        (f"{_ms(e.duration_ms):>9}", ""),
        (f"ttft {_ms(e.ttft_ms):>8}", "dim"),
        (f"{e.input_tokens:>7,}→{e.output_tokens:<6,}", ""),
        (_usd(e.cost_micros), "yellow"),
    ]


def format_anomaly_line(a: LiveAnomaly) -> list[tuple[str, str]]:
    """An anomaly as ``(text, rich style)`` cells: its minute (UTC), ``anomaly``, the
    direction and metric, the series, observed against baseline, and the z-score."""
    stamp = time.strftime("%H:%M:%S", time.gmtime(a.minute_ms / 1000))
    spike = a.kind == "spike"
    window = f" over {a.window_minutes} min" if a.window_minutes > 1 else ""
    return [
        (f"{stamp}.000", "dim"),
        (f"{'anomaly':<8}", "bold yellow"),
        (
            f"{'▲' if spike else '▼'} {a.kind} of {METRIC_LABELS.get(a.metric, a.metric)}",
            "bold red" if spike else "bold magenta",
        ),
        (f"{a.dim}={a.value}", "cyan"),
        (
            f"{anomaly_value(a.metric, a.observed)}{window} "
            f"(baseline {anomaly_value(a.metric, a.baseline)})",
            "",
        ),
        (f"z {a.score:+.1f}", "dim"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``llmtally tail``."""
    parser.add_argument("--url", default=DEFAULT_URL, help="the collector's base URL")
    # Options without a default value are suppressed (absent unless given), so that the
    # help shows what "not given" means instead of "(default: None)".
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"a read (or admin) token (default: the {TOKEN_ENV} environment variable)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print each event's JSON on one line, as received"
    )
    parser.add_argument(
        "--model", default=argparse.SUPPRESS, help="only events of this model (default: all)"
    )
    parser.add_argument(
        "--provider", default=argparse.SUPPRESS, help="only events of this provider (default: all)"
    )
    parser.add_argument(
        "--agent-id", default=argparse.SUPPRESS, help="only events of this agent (default: all)"
    )
    parser.add_argument(
        "--event-type",
        default=argparse.SUPPRESS,
        choices=EVENT_TYPES,
        help="only events of this type (default: all: requests and anomalies)",
    )
    parser.add_argument(
        "--max-events",
        type=_types.positive_int,
        default=argparse.SUPPRESS,
        help="exit after this many events (default: follow until Ctrl-C)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_types.positive_float,
        default=45.0,
        help="seconds without any data (the server sends a keepalive every 15 s) before "
        "reconnecting",
    )
    parser.add_argument(
        "--max-backoff",
        type=_types.positive_float,
        default=30.0,
        help="longest wait in seconds between reconnection attempts",
    )


def _refusal(r: httpx2.Response, url: str) -> TailError:
    if r.status_code in (401, 403):
        return TailError(
            f"{url} refused the token ({r.status_code}): pass a read token with --token "
            f"or {TOKEN_ENV}"
        )
    if r.status_code == 404:
        return TailError(f"no live event stream at {url}{LIVE_PATH} (is it an llmtally collector?)")
    try:
        detail = str(msgspec.json.decode(r.read()).get("error", ""))
    except (msgspec.DecodeError, AttributeError):
        detail = ""
    return TailError(f"{url} answered {r.status_code}" + (f": {detail}" if detail else ""))


@dataclass
class _Follower:
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    max_events: int | None
    idle_timeout: float
    max_backoff: float
    emit: Callable[[str, str], None]
    note: Callable[[str], None]
    sleep: Callable[[float], None] = time.sleep
    last_event_id: str | None = None
    printed: int = 0

    def run(self) -> int:
        timeout = httpx2.Timeout(10.0, read=self.idle_timeout)
        delay = INITIAL_BACKOFF_S
        connected = False
        with httpx2.Client(timeout=timeout) as client:
            while True:
                try:
                    if self._stream(client):
                        return 0
                    connected = True
                    delay = INITIAL_BACKOFF_S
                    why = "the collector ended the stream"
                except _Retry as exc:
                    connected = connected or exc.connected
                    if exc.connected:
                        delay = INITIAL_BACKOFF_S
                    why = exc.reason
                except httpx2.TransportError as exc:
                    if not connected:
                        raise TailError(f"cannot connect to {self.url}: {exc}") from None
                    why = f"connection lost ({type(exc).__name__})"
                wait = delay * random.uniform(0.5, 1.5)
                self.note(f"{why}; reconnecting in {wait:.1f} s")
                self.sleep(wait)
                delay = min(delay * 2, self.max_backoff)

    def _stream(self, client: httpx2.Client) -> bool:
        """Follow one connection; ``True`` once ``max_events`` were printed."""
        headers = dict(self.headers)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        with client.stream("GET", self.url + LIVE_PATH, params=self.params, headers=headers) as r:
            if r.status_code in _RETRYABLE:
                raise _Retry(f"the collector answered {r.status_code}", connected=False)
            if r.status_code != 200:
                raise _refusal(r, self.url)
            self.note(f"following {self.url}{LIVE_PATH} (Ctrl-C to stop)")
            try:
                for sse in iter_sse(r.iter_lines()):
                    if sse.event not in _FRAMES:
                        continue
                    self.last_event_id = sse.id or self.last_event_id
                    self.emit(sse.event, sse.data)
                    self.printed += 1
                    if self.max_events is not None and self.printed >= self.max_events:
                        return True
            except httpx2.TransportError as exc:
                raise _Retry(f"connection lost ({type(exc).__name__})", connected=True) from None
        return False


class _Retry(Exception):
    def __init__(self, reason: str, *, connected: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connected = connected


def _printer(as_json: bool, out: TextIO) -> Callable[[str, str], None]:
    """What prints a frame (``event`` name, ``data``): its data as is, or a rich line."""
    if as_json:

        def emit_json(name: str, data: str) -> None:
            out.write(data + "\n")
            out.flush()

        return emit_json
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=True)

    def emit_rich(name: str, data: str) -> None:
        try:
            if name == "anomaly":
                cells = format_anomaly_line(_decode_anomaly(data))
            else:
                cells = format_line(decode_wire_event(data))
        except msgspec.DecodeError:
            console.print(Text(data))
            return
        line = Text()
        for i, (text, style) in enumerate(cells):
            line.append(("  " if i else "") + text, style=style or None)
        console.print(line)

    return emit_rich


def run(args: argparse.Namespace) -> int:
    """Follow until ``--max-events`` or Ctrl-C; see the module docstring for exit codes."""
    url = str(args.url).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        print(
            f"llmtally tail: error: --url must be an http(s) URL, got {args.url!r}", file=sys.stderr
        )
        return 2
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV)
    filters = {
        name: getattr(args, name, None) for name in ("model", "provider", "agent_id", "event_type")
    }
    follower = _Follower(
        url=url,
        headers={"Authorization": f"Bearer {token}"} if token else {},
        params={k: v for k, v in filters.items() if v},
        max_events=getattr(args, "max_events", None),
        idle_timeout=args.idle_timeout,
        max_backoff=args.max_backoff,
        emit=_printer(args.json, sys.stdout),
        note=lambda message: print(f"llmtally tail: {message}", file=sys.stderr, flush=True),
    )
    try:
        return follower.run()
    except TailError as exc:
        print(f"llmtally: error: tail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into `head`: stop quietly, and keep Python's exit quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

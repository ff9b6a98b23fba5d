"""Whole pages: the dashboard (header, range picker, panels, latest events, script) and
the sign-in page. Pure: data and URLs in, escaped HTML out.

Inline ``<style>`` and ``<script>`` carry the response's CSP nonce; nothing is loaded
from anywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from ...query import EventRecord
from .assets import SCRIPT, STYLE
from .data import RANGES, DashboardData
from .panels import format_count, format_ms, format_usd, render_panels

__all__ = ["render_login", "render_page"]


def _head(title: str, nonce: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title>"
        f'<style nonce="{escape(nonce)}">{STYLE}</style></head>'
    )


def _event_row(e: EventRecord) -> str:
    failed = e.success is False
    status = f"{e.status_code or ''} {e.error_code or ''}".strip() if failed else ""
    cells = (
        (time.strftime("%H:%M:%S", time.gmtime(e.timestamp_ms / 1000)), ""),
        ("failed" if failed else "ok", "status"),
        (e.model or "", ""),
        (e.provider or "", ""),
        (e.agent_id or "", ""),
        (status, ""),
        (format_ms(e.duration_ms), "n"),
        (format_ms(e.ttft_ms), "n"),
        (f"{format_count(e.input_tokens)} / {format_count(e.output_tokens)}", "n"),
        (format_usd(e.cost_micros), "n"),
    )
    tds = "".join(
        f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>"
        for text, cls in cells
    )
    return f'<tr class="{"failed" if failed else "ok"}" data-event-id="{escape(e.event_id)}">{tds}</tr>'


def _latest(events: Sequence[EventRecord]) -> str:
    rows = "".join(_event_row(e) for e in events) or (
        '<tr id="latest-empty"><td colspan="10" class="empty">No events yet.</td></tr>'
    )
    return (
        '<section class="card wide" id="card-latest"><h2>Latest events (UTC)</h2>'
        '<table class="list"><thead><tr><th>Time</th><th>Status</th><th>Model</th>'
        "<th>Provider</th><th>Agent</th><th>Error</th><th>Latency</th><th>TTFT</th>"
        "<th>Tokens in / out</th><th>Cost</th></tr></thead>"
        f'<tbody id="latest-body">{rows}</tbody></table></section>'
    )


def _query(range_name: str, extra: dict[str, str]) -> str:
    return "?" + urlencode({"range": range_name, **extra})


def render_page(
    data: DashboardData,
    *,
    nonce: str,
    live_url: str,
    panels_url: str,
    extra_params: dict[str, str] | None = None,
) -> str:
    """The dashboard over ``data``. ``panels_url`` answers the panels fragment of the same
    range; ``extra_params`` (e.g. an SLO ``target``) are kept by the range links."""
    extra = extra_params or {}
    spec = data.range
    links = "".join(
        f'<a href="{escape(_query(name, extra))}"'
        f"{' class=' + chr(34) + 'active' + chr(34) if name == spec.name else ''}>{name}</a>"
        for name in RANGES
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.end_ms / 1000))
    return (
        _head("llmtally dashboard", nonce)
        + "<body><header><h1>llmtally</h1>"
        + f'<span class="sub">collector dashboard · last {escape(spec.name)} to {generated}</span>'
        + f'<nav class="ranges" aria-label="time range">{links}</nav>'
        + '<span id="live-status" class="">connecting…</span></header>'
        + f'<main id="dashboard" data-range="{escape(spec.name)}" '
        + f'data-start="{data.start_ms // 1000}" data-end="{data.end_ms // 1000}" '
        + f'data-window="{escape(spec.window)}" data-live-url="{escape(live_url)}" '
        + f'data-panels-url="{escape(panels_url)}" data-refresh-ms="{spec.refresh_ms}">'
        + f'<div id="panels">{render_panels(data)}</div>'
        + _latest(data.latest)
        + "</main>"
        + f'<script nonce="{escape(nonce)}">{SCRIPT}</script></body></html>'
    )


def render_login(*, nonce: str, error: str | None = None) -> str:
    """The sign-in page: a read token, sent once as ``?token=`` and exchanged for a
    session cookie."""
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        _head("llmtally: sign in", nonce)
        + '<body><form class="login" method="get">'
        + "<h1>llmtally</h1><p>This collector needs a read token.</p>"
        + message
        + '<label for="token">Read token</label>'
        + '<input id="token" name="token" type="password" autocomplete="off" required autofocus>'
        + '<button type="submit">Open the dashboard</button></form></body></html>'
    )

"""The dashboard's stylesheet and script, served inline under a per-response CSP nonce.

The script is small on purpose: it follows ``/analytics/live`` with ``EventSource``,
adds each request event to the tiles and to the "latest events" table (text only: every
value goes through ``textContent``, never ``innerHTML``), and refetches the
server-rendered panels (``data-panels-url``) a few seconds after events or anomalies
arrived (at most once per ``data-refresh-ms``), and every minute so the range moves on. It never draws a chart
itself: the panels it swaps in are the server's HTML (escaped there).
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCRIPT", "STYLE"]

STYLE: Final = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff;
        --blue:#3b82f6; --red:#ef4444; --green:#10b981; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:16px; padding:12px 20px; background:#111827;
         color:#f9fafb; }
header h1 { font-size:16px; margin:0; font-weight:600; }
header .sub { color:#9ca3af; font-size:12px; }
nav.ranges { display:flex; gap:4px; margin-left:auto; }
nav.ranges a { color:#d1d5db; text-decoration:none; padding:4px 10px; border-radius:6px;
               border:1px solid #374151; }
nav.ranges a.active { background:var(--blue); border-color:var(--blue); color:#fff; }
#live-status { font-size:12px; padding:3px 8px; border-radius:10px; background:#374151; }
#live-status.live { background:#065f46; }
#live-status.down { background:#7f1d1d; }
main { padding:16px 20px; max-width:1400px; margin:0 auto; }
.tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(128px, 1fr)); gap:10px;
         margin-bottom:14px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.tile .label { color:var(--muted); font-size:12px; }
.tile .num { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(560px, 1fr)); gap:14px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px;
        min-width:0; }
.card.wide { grid-column:1 / -1; }
.card h2 { font-size:13px; margin:0 0 8px; color:#374151; font-weight:600; }
svg.chart { width:100%; height:auto; display:block; }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { fill:var(--muted); font-size:11px; }
svg .value { fill:#374151; font-size:11px; }
svg .empty, p.empty { fill:var(--muted); color:var(--muted); }
svg .line { stroke-width:2; }
svg .marker { stroke:#9ca3af; stroke-dasharray:4 3; }
svg .anomaly line { stroke-width:1.5; stroke-dasharray:3 3; }
svg .anomaly path { stroke:#fff; stroke-width:1; }
svg .anomaly.spike line { stroke:#dc2626; }
svg .anomaly.spike path { fill:#dc2626; }
svg .anomaly.drop line { stroke:#7c3aed; }
svg .anomaly.drop path { fill:#7c3aed; }
tr.anomaly.spike td.kind { color:#dc2626; font-weight:600; }
tr.anomaly.drop td.kind { color:#7c3aed; font-weight:600; }
.legend { display:flex; flex-wrap:wrap; gap:12px; margin-top:6px; color:#374151; font-size:12px; }
.legend .key { display:inline-flex; align-items:center; gap:5px; }
.badges { display:flex; gap:8px; margin-bottom:6px; }
.badge { font-size:12px; padding:2px 8px; border-radius:10px; }
.badge.ok { background:#d1fae5; color:#065f46; }
.badge.alert { background:#fee2e2; color:#991b1b; }
.note { color:var(--muted); font-size:12px; margin:6px 0 0; }
table.list { width:100%; border-collapse:collapse; font-size:12px; }
table.list th { text-align:left; color:var(--muted); font-weight:500;
                border-bottom:1px solid var(--line); padding:4px 6px; }
table.list td { border-bottom:1px solid #f3f4f6; padding:4px 6px; vertical-align:top;
                font-variant-numeric:tabular-nums; }
table.list td.msg { font-family:ui-monospace, monospace; word-break:break-word; }
table.list td.n { white-space:nowrap; }
tr.failed td.status { color:var(--red); font-weight:600; }
tr.ok td.status { color:var(--green); }
tr.new { animation: flash 2s ease-out; }
@keyframes flash { from { background:#fef9c3; } to { background:transparent; } }
form.login { max-width:360px; margin:80px auto; background:var(--card); padding:24px;
             border:1px solid var(--line); border-radius:8px; }
form.login input { width:100%; padding:8px; margin:8px 0 12px; font:inherit; }
form.login button { padding:8px 16px; font:inherit; }
p.error { color:var(--red); }
"""

SCRIPT: Final = """
(() => {
  "use strict";
  const root = document.getElementById("dashboard");
  const status = document.getElementById("live-status");
  const latest = document.getElementById("latest-body");
  const MAX_ROWS = 50;
  let dirty = false;

  function usd(micros) {
    const d = micros / 1e6, a = Math.abs(d);
    const places = a >= 10 ? 2 : (a >= 0.01 || d === 0) ? 4 : 6;
    return "$" + d.toLocaleString("en-US",
      {minimumFractionDigits: places, maximumFractionDigits: places});
  }
  function ms(v) {
    if (v === null || v === undefined) return "\\u2013";
    return v < 1000 ? Math.round(v).toLocaleString("en-US") + " ms"
                    : (v / 1000).toFixed(2) + " s";
  }
  function bump(id, delta) {
    const el = document.getElementById(id);
    if (!el || el.dataset.value === undefined) return;
    const v = Number(el.dataset.value) + delta;
    el.dataset.value = String(v);
    el.textContent = el.dataset.kind === "usd" ? usd(v) : v.toLocaleString("en-US");
  }
  function errorRate() {
    const el = document.getElementById("t-error-rate");
    const req = document.getElementById("t-requests");
    const fail = document.getElementById("t-failed");
    if (!el || !req || !fail) return;
    const n = Number(req.dataset.value), f = Number(fail.dataset.value);
    el.textContent = (n ? (100 * f / n) : 0).toFixed(2) + "%";
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function addRow(ev) {
    const failed = ev.event_type === "llm_request_failed";
    const tr = document.createElement("tr");
    tr.className = (failed ? "failed" : "ok") + " new";
    tr.dataset.eventId = ev.event_id;
    cell(tr, new Date(ev.timestamp_ms).toISOString().slice(11, 19));
    cell(tr, failed ? "failed" : "ok", "status");
    cell(tr, ev.model);
    cell(tr, ev.provider);
    cell(tr, ev.agent_id || "");
    cell(tr, failed ? ((ev.status_code || "") + " " + (ev.error_code || "")).trim() : "");
    cell(tr, ms(ev.duration_ms), "n");
    cell(tr, ms(ev.ttft_ms), "n");
    cell(tr, ev.input_tokens.toLocaleString("en-US") + " / " +
             ev.output_tokens.toLocaleString("en-US"), "n");
    cell(tr, usd(ev.cost_micros), "n");
    const empty = document.getElementById("latest-empty");
    if (empty) empty.remove();
    latest.insertBefore(tr, latest.firstChild);
    while (latest.rows.length > MAX_ROWS) latest.deleteRow(-1);
  }
  function onEvent(message) {
    const ev = JSON.parse(message.data);
    bump("t-requests", 1);
    if (ev.event_type === "llm_request_failed") bump("t-failed", 1);
    bump("t-cost", ev.cost_micros);
    bump("t-input", ev.input_tokens);
    bump("t-output", ev.output_tokens);
    errorRate();
    addRow(ev);
    root.dataset.liveEvents = String(Number(root.dataset.liveEvents || "0") + 1);
    dirty = true;
  }
  function setStatus(text, cls) {
    status.textContent = text;
    status.className = cls;
  }
  let inflight = false;
  async function refresh() {
    if (inflight) return;
    inflight = true;
    dirty = false;
    try {
      const r = await fetch(root.dataset.panelsUrl,
        {credentials: "same-origin", headers: {"Accept": "text/html"}});
      if (r.status === 401) { setStatus("session expired: reload", "down"); return; }
      if (!r.ok) return;
      document.getElementById("panels").innerHTML = await r.text();
      root.dataset.refreshes = String(Number(root.dataset.refreshes || "0") + 1);
    } catch (e) {
      dirty = true;
    } finally {
      inflight = false;
    }
  }
  const source = new EventSource(root.dataset.liveUrl);
  source.addEventListener("event", onEvent);
  // A detected anomaly: the panels (its table and chart markers) are redrawn by the server.
  source.addEventListener("anomaly", () => {
    root.dataset.liveAnomalies = String(Number(root.dataset.liveAnomalies || "0") + 1);
    dirty = true;
  });
  source.onopen = () => setStatus("live", "live");
  source.onerror = () => setStatus("reconnecting\\u2026", "down");
  // Refresh soon after events arrived (at most once per tick), and every minute anyway
  // so that the range moves on.
  const tick = Number(root.dataset.refreshMs || "3000");
  let idle = 0;
  setInterval(() => {
    idle += tick;
    if (dirty || idle >= 60000) { idle = 0; refresh(); }
  }, tick);
})();
"""

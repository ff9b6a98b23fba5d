"""Charts as inline SVG strings: pure functions from numbers to markup.

No script and no external resource: the browser only draws. Every text and attribute
value that comes from data is escaped (``html.escape``). Each data mark carries
``data-series``, ``data-start`` (bucket start, unix seconds) and ``data-value`` (the
exact number it was drawn from), so tests and scripts can read a chart back. A point
without a value (``None``) draws nothing: a column chart leaves the bucket empty, a line
chart breaks the line there (a gap, not a line across it). ``TimeMarker``s mark moments
on a time chart (the dashboard's anomalies). Styling is presentation attributes and
classes (the page's stylesheet), never ``style=""``, so a strict Content-Security-Policy
holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = [
    "PALETTE",
    "Bar",
    "Series",
    "TimeMarker",
    "column_chart",
    "format_time",
    "hbar_chart",
    "line_chart",
    "nice_max",
    "num",
]

PALETTE: Final = (
    "#3b82f6",
    "#f59e0b",
    "#10b981",
    "#8b5cf6",
    "#ec4899",
    "#14b8a6",
    "#f97316",
    "#64748b",
)
WIDTH: Final = 640
HEIGHT: Final = 200
_LEFT: Final = 60
_RIGHT: Final = 12
_TOP: Final = 12
_BOTTOM: Final = 26
_PLOT_W: Final = WIDTH - _LEFT - _RIGHT
_PLOT_H: Final = HEIGHT - _TOP - _BOTTOM

Formatter = Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Series:
    """One named series: ``(bucket start ms, value)`` points, in time order; ``None``
    where the bucket has no value."""

    key: str
    label: str
    color: str
    points: Sequence[tuple[int, float | None]]


@dataclass(frozen=True, slots=True)
class TimeMarker:
    """A moment marked on a time chart: a dashed vertical line with a small triangle,
    at the top pointing up (``up``) or at the bottom pointing down, in a ``<g>`` of
    class ``css_class`` with ``title`` as its tooltip and ``data`` as ``data-*``
    attributes (names without the prefix). Markers outside the chart's range are not
    drawn."""

    t_ms: int
    title: str
    css_class: str
    up: bool
    data: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class Bar:
    """One horizontal bar."""

    key: str
    label: str
    value: float
    color: str


def num(x: float) -> str:
    """An SVG coordinate: one decimal, no ``-0.0``."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def _value(v: float) -> str:
    # Exact: ints as ints, floats in Python's shortest round-trip form (as JSON has them).
    return str(v) if isinstance(v, int) else repr(float(v))


def nice_max(v: float, *, integer: bool = False) -> float:
    """An axis maximum at least ``v`` whose quarters are round: 4 × (1, 2, 2.5 or 5 ×
    a power of ten); with ``integer`` the quarters are whole numbers. 1 (or 4) for v ≤ 0."""
    if not v > 0 or not math.isfinite(v):
        return 4.0 if integer else 1.0
    quarter = v / 4
    exp = math.floor(math.log10(quarter))
    step = 10.0 ** (exp + 1)
    for m in (1, 2, 2.5, 5):
        candidate = m * 10.0**exp
        if candidate >= quarter * (1 - 1e-12):
            step = candidate
            break
    if integer:
        step = max(1.0, math.ceil(step))
    return 4 * step


def format_time(t_ms: int, span_ms: int) -> str:
    """``HH:MM`` (UTC) for spans up to a day, ``MM-DD HH:MM`` beyond."""
    fmt = "%H:%M" if span_ms <= 86_400_000 else "%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(t_ms / 1000))


def _frame(
    chart_id: str, title: str, y_max: float, fmt: Formatter, start_ms: int, end_ms: int
) -> list[str]:
    """The ``<svg>`` opening, grid lines, y labels and x labels."""
    out = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        y = _TOP + _PLOT_H * i / 4
        label = fmt(y_max * (4 - i) / 4)
        out.append(
            f'<line class="grid" x1="{_LEFT}" y1="{num(y)}" x2="{WIDTH - _RIGHT}" y2="{num(y)}"/>'
        )
        out.append(
            f'<text class="axis" x="{_LEFT - 6}" y="{num(y + 4)}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    span = max(1, end_ms - start_ms)
    for i in range(5):
        t = start_ms + span * i // 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(
            f'<text class="axis" x="{num(_LEFT + _PLOT_W * i / 4)}" y="{HEIGHT - 8}" '
            f'text-anchor="{anchor}">{escape(format_time(t, span))}</text>'
        )
    return out


def _x(t_ms: int, start_ms: int, end_ms: int) -> float:
    return _LEFT + _PLOT_W * (t_ms - start_ms) / max(1, end_ms - start_ms)


def _y(v: float, y_max: float) -> float:
    return _TOP + _PLOT_H * (1 - min(v, y_max) / y_max)


def _empty(out: list[str]) -> None:
    out.append(
        f'<text class="empty" x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
        "no data in this range</text>"
    )


def _mark_title(s: Series, t_ms: int, span_ms: int, v: float, fmt: Formatter) -> str:
    return (
        f"<title>{escape(s.label)} {escape(format_time(t_ms, span_ms))}: {escape(fmt(v))}</title>"
    )


def column_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    fmt: Formatter,
    stacked: bool = False,
    integer: bool = False,
    markers: Sequence[TimeMarker] = (),
) -> str:
    """Columns per time bucket. ``stacked``: series are stacked bottom-up; otherwise they
    are drawn over one another in order (e.g. failures over requests). ``integer``: the
    values are counts, so axis ticks are whole numbers. Every point with a value gets a
    mark (a zero one is flat, and has no tooltip: there is nothing to point at)."""
    totals: dict[int, float] = {}
    for s in series:
        for t, v in s.points:
            if v is not None:
                totals[t] = totals.get(t, 0) + v if stacked else max(totals.get(t, 0), v)
    y_max = nice_max(max(totals.values(), default=0), integer=integer)
    out = _frame(chart_id, title, y_max, fmt, start_ms, end_ms)
    if not totals:
        _empty(out)
    width = max(1.0, _PLOT_W * bucket_ms / max(1, end_ms - start_ms) - 1)
    base: dict[int, float] = {}
    for s in series:
        for t, v in s.points:
            if v is None:
                continue
            bottom = base.get(t, 0.0) if stacked else 0.0
            x = max(_LEFT, _x(t, start_ms, end_ms))
            y_top, y_bottom = _y(bottom + v, y_max), _y(bottom, y_max)
            tip = _mark_title(s, t, end_ms - start_ms, v, fmt) if v else ""
            out.append(
                f'<rect class="mark" data-series="{escape(s.key)}" data-start="{t // 1000}" '
                f'data-value="{_value(v)}" x="{num(x)}" y="{num(y_top)}" width="{num(width)}" '
                f'height="{num(max(0.0, y_bottom - y_top))}" fill="{escape(s.color)}">'
                f"{tip}</rect>"
            )
            if stacked:
                base[t] = bottom + v
    _markers(out, markers, start_ms, end_ms)
    out.append("</svg>")
    return "".join(out)


def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    fmt: Formatter,
    markers: Sequence[TimeMarker] = (),
) -> str:
    """One line per series through its points (at bucket centres), each point a dot. A
    point without a value breaks the line: runs of points are drawn apart."""
    y_max = nice_max(max((v for s in series for _, v in s.points if v is not None), default=0))
    out = _frame(chart_id, title, y_max, fmt, start_ms, end_ms)
    if not any(v is not None for s in series for _, v in s.points):
        _empty(out)
    for s in series:
        coords: list[tuple[float, float, int, float]] = []
        run: list[str] = []
        for t, v in [*s.points, (0, None)]:  # a final gap ends the last run
            if v is None:
                if len(run) > 1:
                    out.append(
                        f'<polyline class="line" points="{" ".join(run)}" fill="none" '
                        f'stroke="{escape(s.color)}"/>'
                    )
                run = []
                continue
            x = min(_x(t + bucket_ms // 2, start_ms, end_ms), WIDTH - _RIGHT)
            y = _y(v, y_max)
            coords.append((x, y, t, v))
            run.append(f"{num(x)},{num(y)}")
        for x, y, t, v in coords:
            out.append(
                f'<circle class="mark" data-series="{escape(s.key)}" data-start="{t // 1000}" '
                f'data-value="{_value(v)}" cx="{num(x)}" cy="{num(y)}" r="2.5" '
                f'fill="{escape(s.color)}">{_mark_title(s, t, end_ms - start_ms, v, fmt)}</circle>'
            )
    _markers(out, markers, start_ms, end_ms)
    out.append("</svg>")
    return "".join(out)


def _markers(out: list[str], markers: Sequence[TimeMarker], start_ms: int, end_ms: int) -> None:
    """Draw ``markers`` (those inside ``[start_ms, end_ms)``) over the plot."""
    top, bottom = _TOP, _TOP + _PLOT_H
    for m in markers:
        if not start_ms <= m.t_ms < end_ms:
            continue
        x = _x(m.t_ms, start_ms, end_ms)
        if m.up:
            tip = f"M{num(x - 5)},{num(top + 9)} L{num(x + 5)},{num(top + 9)} L{num(x)},{top} Z"
        else:
            tip = f"M{num(x - 5)},{num(bottom - 9)} L{num(x + 5)},{num(bottom - 9)} L{num(x)},{bottom} Z"
        attrs = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in m.data)
        out.append(
            f'<g class="{escape(m.css_class)}"{attrs}><title>{escape(m.title)}</title>'
            f'<line x1="{num(x)}" y1="{top}" x2="{num(x)}" y2="{bottom}"/>'
            f'<path d="{tip}"/></g>'
        )


def hbar_chart(
    chart_id: str,
    title: str,
    bars: Sequence[Bar],
    *,
    fmt: Formatter,
    markers: Sequence[tuple[float, str]] = (),
) -> str:
    """Horizontal bars, one row each, with vertical marker lines (e.g. thresholds)."""
    row = 26
    height = _TOP + row * len(bars) + 18
    x_max = nice_max(max([b.value for b in bars] + [m for m, _ in markers], default=0))
    out = [
        f'<svg class="chart hbars" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]

    left = 110
    plot_w = WIDTH - left - 70

    def x_of(v: float) -> float:
        return left + plot_w * min(v, x_max) / x_max

    for i, b in enumerate(bars):
        y = _TOP + row * i
        out.append(
            f'<text class="axis" x="{left - 6}" y="{num(y + 15)}" text-anchor="end">'
            f"{escape(b.label)}</text>"
        )
        out.append(
            f'<rect class="mark" data-series="{escape(b.key)}" data-value="{_value(b.value)}" '
            f'x="{left}" y="{num(y + 3)}" width="{num(x_of(b.value) - left)}" height="16" '
            f'fill="{escape(b.color)}"><title>{escape(b.label)}: {escape(fmt(b.value))}</title>'
            "</rect>"
        )
        out.append(
            f'<text class="value" x="{num(x_of(b.value) + 4)}" '
            f'y="{num(y + 15)}">{escape(fmt(b.value))}</text>'
        )
    bottom = _TOP + row * len(bars)
    last_label_x = -math.inf
    for value, label in sorted(markers):
        x = x_of(value)
        out.append(f'<line class="marker" x1="{num(x)}" y1="{_TOP}" x2="{num(x)}" y2="{bottom}"/>')
        if x - last_label_x >= 24:  # labels of close markers would overlap: keep the first
            out.append(
                f'<text class="axis" x="{num(x)}" y="{bottom + 12}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
            last_label_x = x
    out.append("</svg>")
    return "".join(out)

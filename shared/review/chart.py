"""The series chart of the review page as inline SVG (pure: numbers in, markup out, no JS).

Daily cost as a line, the expected level and its band on the days the engine scored the episode,
flagged days as red dots. When the spike dwarfs the band (max cost > LOG_RATIO x the band's top)
the y axis is logarithmic, or the band would be a flat line at the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 30, 16, 36
LOG_RATIO = 10.0


@dataclass(frozen=True)
class ChartInput:
    days: Sequence[date]
    costs: Sequence[float]
    expected: float
    lower: float
    upper: float
    flagged: frozenset[date]
    band_from: date | None = None  # the band is drawn from this day to the last one
    currency: str = "USD"


def uses_log_scale(c: ChartInput) -> bool:
    top = max(c.costs, default=0.0)
    return c.upper > 0 and top > LOG_RATIO * c.upper and min((v for v in c.costs if v > 0), default=0) > 0


def _money(value: float, currency: str) -> str:
    symbol = "$" if currency == "USD" else f"{currency} "
    if abs(value) >= 1000:
        return f"{symbol}{value / 1000:,.1f}k"
    return f"{symbol}{value:,.0f}" if abs(value) >= 10 else f"{symbol}{value:,.2f}"


def render_svg(c: ChartInput) -> str:
    """An <svg> element (role=img, with a <title>) for the page; an explanatory box when there is no data."""
    if not c.days:
        return (
            f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} 60" width="100%"><title>No daily cost found</title>'
            '<text x="10" y="35">No daily cost for this series in the warehouse window.</text></svg>'
        )
    log_scale = uses_log_scale(c)
    values = [*c.costs, c.expected, c.lower, c.upper]
    if log_scale:
        floor = min(v for v in values if v > 0)
        lo, hi = math.log10(floor) - 0.1, math.log10(max(values)) + 0.1
    else:
        lo, hi = min(0.0, min(values)), max(values) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(c.days)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        if log_scale:
            v = math.log10(max(v, 10**lo))
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'data-scale="{"log" if log_scale else "linear"}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>Daily cost of the series, {'log' if log_scale else 'linear'} scale</title>",
    ]
    # y ticks
    ticks = _log_ticks(lo, hi) if log_scale else _linear_ticks(lo, hi)
    for t in ticks:
        ty = y(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{_money(t, c.currency)}</text>'
        )
    # band and expected on the scored days
    start = next((i for i, d in enumerate(c.days) if c.band_from and d >= c.band_from), 0)
    x0, x1 = x(start) - (8 if n > 1 else 20), x(n - 1) + (8 if n > 1 else 20)
    parts.append(
        f'<rect class="band" x="{x0:.1f}" y="{y(c.upper):.1f}" width="{x1 - x0:.1f}" '
        f'height="{max(y(c.lower) - y(c.upper), 1):.1f}"><title>expected band {_money(c.lower, c.currency)}'
        f"..{_money(c.upper, c.currency)}</title></rect>"
    )
    parts.append(
        f'<line class="expected" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(c.expected):.1f}" y2="{y(c.expected):.1f}">'
        f"<title>expected {_money(c.expected, c.currency)}/day</title></line>"
    )
    label_y = min(max(y(c.upper) - 6, TOP + 10), HEIGHT - BOTTOM - 4)
    parts.append(
        f'<text class="tick band-label" x="{x0 - 6:.1f}" y="{label_y:.1f}" text-anchor="end">normal '
        f"{_money(c.lower, c.currency)}..{_money(c.upper, c.currency)}</text>"
    )
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(c.costs))
    parts.append(f'<polyline class="cost" points="{points}"/>')
    for i, (d, v) in enumerate(zip(c.days, c.costs, strict=True)):
        if d in c.flagged:
            parts.append(
                f'<circle class="flagged" cx="{x(i):.1f}" cy="{y(v):.1f}" r="5">'
                f"<title>{d.isoformat()}: {_money(v, c.currency)} (flagged)</title></circle>"
            )
    # x labels: first, last and about 6 between
    step = max(1, n // 6)
    for i in sorted({*range(0, n, step), n - 1}):
        if i < n - 1 and n - 1 - i < step / 2:
            continue
        parts.append(
            f'<text class="tick" x="{x(i):.1f}" y="{HEIGHT - 12}" text-anchor="middle">'
            f"{escape(c.days[i].strftime('%b %d'))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _linear_ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    raw = span / 4 if span > 0 else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(0, 8) if first + k * step <= hi]


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0**k for k in range(math.ceil(lo), math.floor(hi) + 1)]

"""Small server-side SVG charts for the overview: stacked bars per day and horizontal bars.
No script, no inline style (the console's Content-Security-Policy allows neither): colours
are classes of console.css; every value is also in a <title> for screen readers and hover."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
_LEFT, _BOTTOM, _TOP = 40, 28, 10


def _nice_max(value: int) -> int:
    """A round axis maximum at or above `value`."""
    if value <= 5:
        return 5
    step = 10 ** (len(str(value)) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        top = int(step * factor)
        if top >= value:
            return top
    return value


def stacked_days(title: str, days: Sequence[dt.date],
                 series: Sequence[tuple[str, str, Sequence[int]]]) -> Markup:
    """One bar per day, stacked from `series` (label, css class, a count per day)."""
    totals = [sum(s[2][i] for s in series) for i in range(len(days))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - _LEFT - 10, HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 24}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - 10}" '
                     f'y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{_LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{top * fraction:g}</text>')
    for i, day in enumerate(days):
        x = _LEFT + i * slot + (slot - bar) / 2
        base = float(_TOP + plot_h)
        for label, css, counts in series:
            n = counts[i]
            if not n:
                continue
            h = plot_h * n / top
            base -= h
            parts.append(f'<rect class="{css}" x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}"><title>{day.isoformat()}: {escape(label)} {n}'
                         "</title></rect>")
        if i % max(1, len(days) // 6) == 0:
            parts.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{HEIGHT - 10}" '
                         f'text-anchor="middle">{day:%d-%m}</text>')
    legend_x = _LEFT
    for label, css, counts in series:
        parts.append(f'<rect class="{css}" x="{legend_x}" y="{HEIGHT + 8}" width="12" '
                     'height="12"/>')
        text = f"{label} ({sum(counts)})"
        parts.append(f'<text class="legend" x="{legend_x + 16}" y="{HEIGHT + 18}">'
                     f"{escape(text)}</text>")
        legend_x += 24 + 8 * len(text)
    parts.append("</svg>")
    # Every text and attribute value above is escaped or a number we formatted.
    return Markup("".join(parts))  # noqa: S704


def bars(title: str, items: Sequence[tuple[str, int]], *, percent_of: int | None = None
         ) -> Markup:
    """Horizontal bars, one per item (label, count); with `percent_of`, each also shows its
    share of that total."""
    row_h = 22
    height = max(len(items), 1) * row_h + 8
    label_w = 260
    top = max((n for _label, n in items), default=1) or 1
    plot_w = WIDTH - label_w - 90
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, n) in enumerate(items):
        y = 4 + i * row_h
        w = plot_w * n / top
        shown = f"{n}" if percent_of is None else f"{n} ({100 * n / max(percent_of, 1):.1f} %)"
        parts.append(f'<text class="legend" x="{label_w - 6}" y="{y + 15}" '
                     f'text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect class="bar-deny" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
                     f'height="{row_h - 6}"><title>{escape(label)}: {shown}</title></rect>')
        parts.append(f'<text class="legend" x="{label_w + w + 6:.1f}" y="{y + 15}">'
                     f"{escape(shown)}</text>")
    parts.append("</svg>")
    # Every text and attribute value above is escaped or a number we formatted.
    return Markup("".join(parts))  # noqa: S704

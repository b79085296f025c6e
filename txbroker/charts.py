"""Small SVG charts drawn on the server, for the admin dashboard: no JavaScript, no CDN,
readable offline and in a screenshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = {
    "HALF": "#d4a017",
    "COMMITTED": "#2e7d32",
    "ROLLED_BACK": "#757575",
    "DISCARDED": "#c62828",
    "committed": "#1565c0",
    "consumed": "#2e7d32",
    "failed": "#c62828",
    "lag": "#ef6c00",
    "age": "#6a1b9a",
    "dead": "#c62828",
}
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12"'


@dataclass
class Bar:
    label: str
    value: float
    color: str = "#417690"
    text: Optional[str] = None  # shown instead of the number
    href: Optional[str] = None


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = step * magnitude
        if top >= value:
            return top
    return value


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 460, empty: str = "nothing yet") -> SafeString:
    """Horizontal bars, one per item, with its label on the left and its value on the right."""
    row, value_w, top = 26, 70, 28
    # Room for the longest label (about 7 px a character at 12 px), within reason: a longer
    # one is cut, and shows whole on hover.
    longest = max((len(b.label) for b in bars), default=0)
    label_w = min(max(150, 7 * longest + 12), width // 2)
    fits = max(8, (label_w - 12) // 7)
    height = top + max(len(bars), 1) * row + 8
    plot_w = width - label_w - value_w
    peak = _nice_max(max((b.value for b in bars), default=0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="txb-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="#333">{escape(title)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="0" y="{top + 16}" fill="#888">{escape(empty)}</text>')
    for i, bar in enumerate(bars):
        y = top + i * row
        length = 0 if peak == 0 else plot_w * bar.value / peak
        label = escape(bar.label if len(bar.label) <= fits else bar.label[: fits - 1] + "…")
        text = escape(bar.text if bar.text is not None else f"{bar.value:,.0f}")
        rect = (
            f'<rect x="{label_w}" y="{y + 4}" width="{max(length, 1 if bar.value else 0):.1f}" '
            f'height="{row - 8}" rx="2" fill="{bar.color}"><title>{escape(bar.label)}: {text}</title></rect>'
        )
        label_el = (
            f'<text x="{label_w - 6}" y="{y + row / 2 + 4}" text-anchor="end" fill="#333">'
            f"<title>{escape(bar.label)}</title>{label}</text>"
        )
        if bar.href:
            label_el = f'<a href="{escape(bar.href)}">{label_el}</a>'
        parts += [
            label_el,
            f'<rect x="{label_w}" y="{y + 4}" width="{plot_w}" height="{row - 8}" fill="#f2f2f2"/>',
            rect,
            f'<text x="{label_w + plot_w + 6}" y="{y + row / 2 + 4}" fill="#333">{text}</text>',
        ]
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def line_chart(
    x_labels: Sequence[str],
    series: dict[str, Sequence[int]],
    *,
    title: str,
    width: int = 940,
    height: int = 260,
) -> SafeString:
    """One polyline per series over shared x labels (minutes), with a legend and a y axis."""
    left, right, top, bottom = 44, 12, 40, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(x_labels), 2)
    peak = _nice_max(max((v for values in series.values() for v in values), default=0))

    def x(i: int) -> float:
        return left + plot_w * i / (n - 1)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="txb-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="#333">{escape(title)}</text>',
    ]
    for k in range(5):  # grid and y axis
        v = peak * k / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#666">{v:g}</text>'
        )
    step = max(1, len(x_labels) // 6)
    for i in range(0, len(x_labels), step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" fill="#666">{escape(x_labels[i])}</text>'
        )
    legend_x = width - right
    for name, values in reversed(list(series.items())):
        color = PALETTE.get(name, "#417690")
        total = sum(values)
        legend = f"{name} ({total:,})"
        legend_x -= 28 + 7.5 * len(legend)
        parts.append(
            f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="17" fill="#333">{escape(legend)}</text>'
        )
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

"""Charts as server-side SVG: small hand-written bar charts, no plotting library, no script.

Each chart is an accessible image: role="img", a <title> naming it and a <desc> listing every
value, so a screen reader gets the numbers; labels are escaped like any page text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 48, 40, 16
COLOURS = ("#1d4e89", "#b3541e", "#2e7d32")


def bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    empty: str,
) -> str:
    """Grouped bars: one group per label, one bar per series (name, values aligned with labels)."""
    t = escape(title)
    if not labels:
        return (
            f'<svg class="chart" role="img" aria-labelledby="{chart_id}-t" viewBox="0 0 {WIDTH} 40"'
            f' xmlns="http://www.w3.org/2000/svg"><title id="{chart_id}-t">{t}</title>'
            f'<text x="8" y="24">{escape(empty)}</text></svg>'
        )
    top = max((v for _, values in series for v in values), default=0) or 1
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    group_w = plot_w / len(labels)
    bar_w = max(1.0, group_w * 0.8 / max(1, len(series)))
    desc = "; ".join(
        f"{label}: " + ", ".join(f"{name} {_num(values[i])}" for name, values in series)
        for i, label in enumerate(labels)
    )
    out = [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{t}</title><desc id="{chart_id}-d">{escape(desc)}</desc>',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - 8}" y2="{PAD_TOP + plot_h}"'
        ' stroke="#555"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 10}" text-anchor="end" font-size="12">'
        f"{_num(top)}</text>",
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + plot_h}" text-anchor="end" font-size="12">'
        "0</text>",
    ]
    every = max(1, len(labels) // 12)  # at most a dozen axis labels
    for i, label in enumerate(labels):
        x0 = PAD_LEFT + i * group_w + group_w * 0.1
        for j, (_, values) in enumerate(series):
            h = plot_h * values[i] / top
            out.append(
                f'<rect x="{x0 + j * bar_w:.1f}" y="{PAD_TOP + plot_h - h:.1f}"'
                f' width="{bar_w:.1f}" height="{h:.1f}" fill="{COLOURS[j % len(COLOURS)]}"/>'
            )
        if i % every == 0:
            out.append(
                f'<text x="{x0 + group_w * 0.4:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}"'
                f' text-anchor="middle" font-size="12">{escape(label)}</text>'
            )
    for j, (name, _) in enumerate(series):
        x = PAD_LEFT + j * 160
        out.append(
            f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10"'
            f' fill="{COLOURS[j % len(COLOURS)]}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="12">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"

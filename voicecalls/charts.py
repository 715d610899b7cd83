"""Server-side SVG charts for the admin dashboard: no JavaScript, no external assets."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

BAR_COLOR = "#417690"  # the admin's own header blue


def bar_chart(
    points: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 640,
    height: int = 180,
    label_every: int = 1,
    unit: str = "",
) -> SafeString:
    """A vertical bar chart; each bar has a <title> tooltip with its exact value."""
    top, bottom, left = 16, 28, 8
    plot_height = height - top - bottom
    peak = max((value for _, value in points), default=0) or 1
    slot = (width - left * 2) / max(len(points), 1)
    bar_width = max(slot * 0.8, 1)

    def bar(index: int, label: str, value: float) -> tuple:
        bar_height = plot_height * value / peak
        x = left + index * slot
        y = top + plot_height - bar_height
        show_label = index % label_every == 0
        return (
            f"{x:.1f}",
            f"{y:.1f}",
            f"{bar_width:.1f}",
            f"{bar_height:.1f}",
            BAR_COLOR,
            f"{label}: {value:g}{unit}",
            f"{x + bar_width / 2:.1f}",
            height - 10,
            label if show_label else "",
        )

    bars = format_html_join(
        "",
        '<g><rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>'
        '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text></g>',
        (bar(i, label, value) for i, (label, value) in enumerate(points)),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" class="vc-chart" '
        'viewBox="0 0 {} {}" width="100%" style="max-width:{}px"><title>{}</title>'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/>{}</svg>',
        width,
        height,
        width,
        title,
        top + plot_height,
        width,
        top + plot_height,
        bars,
    )


def horizontal_bars(
    points: Sequence[tuple[str, float]], *, title: str, width: int = 320, unit: str = ""
) -> SafeString:
    """Labelled horizontal bars, for categories (status mix, end reasons)."""
    row, label_width = 22, 120
    height = row * max(len(points), 1) + 4
    peak = max((value for _, value in points), default=0) or 1
    bar_space = width - label_width - 60

    rows = format_html_join(
        "",
        '<g><text x="0" y="{}" font-size="11">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="14" fill="{}"><title>{}</title></rect>'
        '<text x="{}" y="{}" font-size="11">{}</text></g>',
        (
            (
                i * row + 14,
                label,
                label_width,
                i * row + 3,
                f"{bar_space * value / peak:.1f}",
                BAR_COLOR,
                f"{label}: {value:g}{unit}",
                f"{label_width + bar_space * value / peak + 4:.1f}",
                i * row + 14,
                f"{value:g}{unit}",
            )
            for i, (label, value) in enumerate(points)
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" class="vc-chart" '
        'viewBox="0 0 {} {}" width="100%" style="max-width:{}px"><title>{}</title>{}</svg>',
        width,
        height,
        width,
        title,
        rows,
    )

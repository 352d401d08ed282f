"""Horizontal stacked bars drawn on the server: the geometry of an SVG chart, no JavaScript.

`stacked_bars` turns rows of counts (one bar per row, one segment per series) into boxes,
ticks and a legend in SVG user units; the console's template writes them out as ``<rect>``
and ``<text>`` elements (autoescaped like any page), each segment with a ``<title>`` that a
browser shows on hover. Only presentation attributes are used, no ``style``: the console's
Content-Security-Policy allows no inline styles.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "BAR_HEIGHT",
    "FONT_SIZE",
    "LABEL_WIDTH",
    "PLOT_WIDTH",
    "ROW_HEIGHT",
    "Bar",
    "Chart",
    "Legend",
    "Segment",
    "Tick",
    "nice_step",
    "scale_of",
    "stacked_bars",
    "text_width",
]

# Sizes in SVG user units (pixels), for a chart beside its table on a 1366 px screen.
LABEL_WIDTH = 200  # the row labels, left of the bars (a longer one is cut, whole in its title)
PLOT_WIDTH = 440  # the longest bar
TOTAL_WIDTH = 70  # the row's total, right of its bar
ROW_HEIGHT = 24
BAR_HEIGHT = 16
LEGEND_ROW = 18
AXIS_HEIGHT = 22
FONT_SIZE = 12


@dataclass(frozen=True)
class Segment:
    """One series' part of a bar."""

    x: float
    width: float
    colour: str
    title: str


@dataclass(frozen=True)
class Bar:
    """One row: its label, where it stands, its segments and its total."""

    label: str
    title: str
    y: float
    text_y: float
    segments: tuple[Segment, ...]
    total: int
    total_x: float


@dataclass(frozen=True)
class Tick:
    x: float
    value: int


@dataclass(frozen=True)
class Legend:
    x: float
    y: float
    label: str
    colour: str


@dataclass(frozen=True)
class Chart:
    """Everything the template draws, in SVG user units."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    legend: tuple[Legend, ...]
    plot_x: int
    plot_top: int
    plot_bottom: int
    bar_height: int
    font_size: int
    description: str


def nice_step(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def scale_of(largest: int) -> tuple[int, int]:
    """The scale of bars whose longest is ``largest``: its end and its gridlines' step, the
    step a nice number (about a quarter of the end) and the end a whole number of steps."""
    step = nice_step(largest / 4)
    return max(step, -(-largest // step) * step), step


def text_width(text: str) -> int:
    """About how wide ``text`` is drawn at `FONT_SIZE`: a full square for each wide (Japanese)
    character, a little over half of one for any other."""
    return sum(
        FONT_SIZE if unicodedata.east_asian_width(c) in "WF" else FONT_SIZE * 3 // 5 for c in text
    )


def _cut(text: str, room: int) -> str:
    """``text``, cut with an ellipsis to fit ``room``."""
    if text_width(text) <= room:
        return text
    while text and text_width(text + "…") > room:
        text = text[:-1]
    return text + "…"


def stacked_bars(
    rows: Sequence[tuple[str, Mapping[str, int]]],
    series: Sequence[tuple[str, str, str]],
    description: str,
) -> Chart:
    """A chart of ``rows`` (label, counts by series key), one bar each, stacked in the order
    of ``series`` (key, label, colour); bars scaled to the largest total, rounded up to a
    whole number of gridline steps (`scale_of`)."""
    totals = [sum(counts.get(key, 0) for key, _, _ in series) for _, counts in rows]
    scale_max, step = scale_of(max(totals, default=0))
    plot_x = LABEL_WIDTH
    chart_width = LABEL_WIDTH + PLOT_WIDTH + TOTAL_WIDTH
    legend = []
    x, y = float(plot_x), 8.0
    for _, name, colour in series:
        room = 16 + text_width(name) + 14
        if x + room > chart_width and x > plot_x:  # the next line of the legend
            x, y = float(plot_x), y + LEGEND_ROW
        legend.append(Legend(x, y, name, colour))
        x += room
    plot_top = int(y) + LEGEND_ROW + 4
    bars = []
    for index, ((label, counts), total) in enumerate(zip(rows, totals, strict=True)):
        y = plot_top + index * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2
        x = float(plot_x)
        segments = []
        for key, name, colour in series:
            count = counts.get(key, 0)
            if count <= 0:
                continue
            length = PLOT_WIDTH * count / scale_max
            segments.append(Segment(x, length, colour, f"{label}: {name} {count:,}"))
            x += length
        bars.append(
            Bar(
                label=_cut(label, LABEL_WIDTH - 12),
                title=label,
                y=y,
                text_y=y + BAR_HEIGHT - 3,
                segments=tuple(segments),
                total=total,
                total_x=x + 6,
            )
        )
    plot_bottom = plot_top + max(len(rows), 1) * ROW_HEIGHT
    ticks = tuple(
        Tick(plot_x + PLOT_WIDTH * value / scale_max, value)
        for value in range(0, scale_max + 1, step)
    )
    return Chart(
        width=chart_width,
        height=plot_bottom + AXIS_HEIGHT,
        bars=tuple(bars),
        ticks=ticks,
        legend=tuple(legend),
        plot_x=plot_x,
        plot_top=plot_top,
        plot_bottom=plot_bottom,
        bar_height=BAR_HEIGHT,
        font_size=FONT_SIZE,
        description=description,
    )

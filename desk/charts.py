"""The report's charts, drawn on the server by matplotlib as PNG images.

PNG, served from the same origin: the web's content security policy allows same-origin images
only and no inline styles, which matplotlib's SVG relies on, so inline SVG would lose its colours.
Each chart shows exactly what the report's tables show: a suppressed count (1 or 2) is drawn as a
hatched bar of a fixed, small height labelled "<3", a cell hidden by secondary suppression as such
a bar labelled "*"; no bar's height gives a hidden count away.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

from desk.reports import DECISIONS, HIDDEN, Cell, Report

CHARTS = {
    "cases_per_month": "Cases opened per month",
    "actions_per_channel": "Actions proposed and sent, per channel",
    "first_dispatch": "Time from intake to first dispatch",
    "outcomes": "Cases closed, by outcome",
}
# matplotlib's pyplot state is not thread-safe; the web draws in worker threads.
_LOCK = threading.Lock()
COLOURS = ("#1f5f99", "#c25b12")


def _label(key: str) -> str:
    return key.replace("_", " ")


def _bars(ax: object, x: Sequence[float], cells: Sequence[Cell], width: float, colour: str,
          marker: float, label: str | None = None) -> None:
    heights = [marker if c.hidden else c.count for c in cells]
    bars = ax.bar(x, heights, width, color=[  # type: ignore[attr-defined]
        "#d9d9d9" if c.hidden else colour for c in cells], edgecolor=[
        "#555555" if c.hidden else colour for c in cells], hatch=None, label=label)
    for bar, c in zip(bars, cells, strict=True):
        if c.hidden:
            bar.set_hatch("///")
        ax.annotate(c.text if c.count or c.hidden else "0",  # type: ignore[attr-defined]
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")


def chart_png(report: Report, name: str) -> bytes:
    """One chart of the report as PNG bytes; KeyError for an unknown name."""
    title = CHARTS[name]
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.2, 3.4), dpi=100)
    ax = fig.subplots()
    series: list[tuple[str, list[Cell]]]
    if name == "cases_per_month":
        series = [("opened", report.tables["opened"].cells)]
        keys = [c.key for c in series[0][1]]
    elif name == "outcomes":
        series = [("closed", report.tables["outcomes"].cells)]
        keys = [c.key for c in series[0][1]]
    elif name == "first_dispatch":
        series = [("cases", report.tables["first_dispatch"].cells)]
        keys = [c.key for c in series[0][1]]
    else:
        keys = list(report.actions)
        series = [(d, [report.actions[ch][d] for ch in keys]) for d in ("proposed", "sent")]
        assert all(d in DECISIONS for d, _ in series)
    shown_max = max([c.count for _, cells in series for c in cells if not c.hidden] + [0])
    marker = max(shown_max * 0.04, 0.5)  # the fixed height of a hidden bar
    width = 0.8 / len(series)
    for i, (label, cells) in enumerate(series):
        x = [k + (i - (len(series) - 1) / 2) * width for k in range(len(keys))]
        _bars(ax, x, cells, width, COLOURS[i % len(COLOURS)], marker,
              label if len(series) > 1 else None)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([_label(k) for k in keys], rotation=30 if len(keys) > 4 else 0,
                       ha="right" if len(keys) > 4 else "center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max(shown_max, 3) * 1.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False)
    if any(c.hidden for _, cells in series for c in cells):
        fig.text(0.01, 0.01, f"hatched: fewer than 3 (<3) or hidden ({HIDDEN}) to protect people",
                 fontsize=7, color="#333333")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    buf = io.BytesIO()
    with _LOCK:
        fig.savefig(buf, format="png")
    return buf.getvalue()
